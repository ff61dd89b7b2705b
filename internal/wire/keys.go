package wire

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
)

// knownKeys holds every field name of the protocol's messages, spelled
// exactly. encoding/json matches names case-insensitively and lets a
// repeated key overwrite an earlier one; checkKeys closes both gaps, so that
// one message has exactly one reading.
var knownKeys = func() map[string]bool {
	m := map[string]bool{}
	var walk func(t reflect.Type)
	seen := map[reflect.Type]bool{}
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || seen[t] {
			return
		}
		seen[t] = true
		for i := range t.NumField() {
			f := t.Field(i)
			if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name != "" && name != "-" {
				m[name] = true
			}
			walk(f.Type)
		}
	}
	walk(reflect.TypeFor[Request]())
	walk(reflect.TypeFor[Reply]())
	return m
}()

// checkKeys scans a JSON document that has already decoded: every object
// key must be a known field name spelled exactly, and appear once in its
// object. It does not allocate for documents of ordinary depth.
func checkKeys(b []byte) error {
	type container struct {
		object bool
		keys   [][]byte
	}
	var stackBuf [8]container
	stack := stackBuf[:0]
	expectKey := false // inside an object, before a key
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '{':
			stack = append(stack, container{object: true})
			expectKey = true
		case '[':
			stack = append(stack, container{})
			expectKey = false
		case '}', ']':
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
			expectKey = false
		case ',':
			expectKey = len(stack) > 0 && stack[len(stack)-1].object
		case '"':
			end := stringEnd(b, i)
			if expectKey {
				key := b[i+1 : end]
				if bytes.IndexByte(key, '\\') >= 0 || !knownKeys[string(key)] {
					return fmt.Errorf("field %q: field names are exact and case-sensitive", key)
				}
				top := &stack[len(stack)-1]
				for _, k := range top.keys {
					if bytes.Equal(k, key) {
						return fmt.Errorf("field %q appears twice", key)
					}
				}
				top.keys = append(top.keys, key)
				expectKey = false
			}
			i = end
		}
	}
	return nil
}

// stringEnd returns the index of the quote closing the string that starts
// at b[i].
func stringEnd(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j
		}
	}
	return len(b) - 1
}
