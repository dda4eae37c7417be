package crd

import (
	"errors"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// maxMessage is metav1.Condition's limit on Message.
const maxMessage = 32768

// ValidCondition is the Valid condition for an object of that generation
// whose Parse (or Compile) error is err: True with reason Valid, the warnings
// (if any) as message; or False with reason Invalid and the fields that are
// wrong. Set it with meta.SetStatusCondition, which keeps LastTransitionTime
// while the status stays the same and says whether UpdateStatus is needed.
func ValidCondition(generation int64, err error, warnings ...string) metav1.Condition {
	c := metav1.Condition{
		Type:               ConditionValid,
		Status:             metav1.ConditionTrue,
		ObservedGeneration: generation,
		LastTransitionTime: metav1.Now(),
		Reason:             ReasonValid,
	}

	if err != nil {
		c.Status = metav1.ConditionFalse
		c.Reason = ReasonInvalid

		var ie *InvalidError
		if errors.As(err, &ie) {
			c.Message = ie.FieldsMessage()
		} else {
			c.Message = err.Error()
		}
	} else if len(warnings) > 0 {
		c.Message = "valid, but: " + strings.Join(warnings, "; ")
	}

	if len(c.Message) > maxMessage {
		c.Message = strings.ToValidUTF8(c.Message[:maxMessage-3], "") + "..."
	}

	return c
}
