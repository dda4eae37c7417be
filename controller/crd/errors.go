package crd

import (
	"fmt"
	"strings"
)

// Ref names one object of one of the four kinds.
type Ref struct {
	Kind      string
	Namespace string
	Name      string
}

// String is "IPAddressPool default/pool-a".
func (r Ref) String() string {
	if r.Namespace == "" {
		return r.Kind + " " + r.Name
	}

	return r.Kind + " " + r.Namespace + "/" + r.Name
}

// FieldError is one problem with one field.
type FieldError struct {
	// Field is the full path: "spec.addresses[1]", "spec.bfd.minTx".
	Field string
	// Message says what is wrong and shows the bad value.
	Message string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

// InvalidError is everything wrong with one object.
type InvalidError struct {
	Ref    Ref
	Fields []*FieldError
}

// Error is "IPAddressPool default/pool-a: spec.addresses[1]: ...; spec.x: ...".
func (e *InvalidError) Error() string { return e.Ref.String() + ": " + e.FieldsMessage() }

// FieldsMessage is Error without the object's name, for the object's own
// status condition.
func (e *InvalidError) FieldsMessage() string {
	msgs := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		msgs[i] = f.Error()
	}

	return strings.Join(msgs, "; ")
}

// Unwrap gives the field errors to errors.Is and errors.As.
func (e *InvalidError) Unwrap() []error {
	errs := make([]error, len(e.Fields))
	for i, f := range e.Fields {
		errs[i] = f
	}

	return errs
}

// fieldErrors collects problems while one object is decoded and validated.
type fieldErrors struct {
	list []*FieldError
	// failed are the paths whose value could not be decoded; validation
	// stays quiet about them (and about what lies above or below them), or
	// every wrong type would also show as a "required" or "out of range".
	failed []string
}

// decodeError records a value that could not be decoded.
func (fe *fieldErrors) decodeError(field, format string, args ...any) {
	fe.failed = append(fe.failed, field)
	fe.list = append(fe.list, &FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

// add records a problem, unless it is a consequence of a decode error.
func (fe *fieldErrors) add(field, format string, args ...any) {
	for _, f := range fe.failed {
		if related(f, field) {
			return
		}
	}

	fe.list = append(fe.list, &FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

// related says whether one path is the other or lies inside it.
func related(a, b string) bool {
	if len(a) > len(b) {
		a, b = b, a
	}

	return b == a || strings.HasPrefix(b, a+".") || strings.HasPrefix(b, a+"[")
}

// err is nil when nothing was collected.
func (fe *fieldErrors) err(ref Ref) error {
	if len(fe.list) == 0 {
		return nil
	}

	return &InvalidError{Ref: ref, Fields: fe.list}
}

func index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }
