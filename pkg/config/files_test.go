package config

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// isFileField says which fields name a file the agent reads: the TLS paths and
// every "...File" key. A new such field that Files misses fails the test below.
func isFileField(key string) bool {
	return key == "ca" || key == "cert" || key == "key" || strings.HasSuffix(key, "File")
}

// fill sets every file field reachable from v (through structs, pointers and
// one-element slices) to a unique path and returns the paths.
func fill(v reflect.Value, path string) []string {
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))

		return fill(v.Elem(), path)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))

		return fill(v.Index(0), path+"[0]")
	case reflect.Struct:
		var out []string

		for i := range v.NumField() {
			key, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ",")
			f := v.Field(i)

			if f.Kind() == reflect.String && isFileField(key) {
				p := fmt.Sprintf("/%s.%s", path, key)
				f.SetString(p)
				out = append(out, p)

				continue
			}

			out = append(out, fill(f, path+"."+key)...)
		}

		return out
	default:
		return nil
	}
}

func TestFilesListsEveryFileField(t *testing.T) {
	var c Config

	want := fill(reflect.ValueOf(&c).Elem(), "cfg")
	assert.NotEmpty(t, want)
	assert.ElementsMatch(t, want, c.Files())
}

func TestFilesOnceEach(t *testing.T) {
	c := Config{API: API{TLS: TLS{CA: "/ca", Cert: "/crt", Key: "/key"}}, HealthChecks: []HealthCheck{{CAFile: "/ca"}, {}}}
	assert.Equal(t, []string{"/ca", "/crt", "/key"}, c.Files())
}
