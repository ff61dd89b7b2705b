package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"
	"unicode/utf8"
)

// FuzzCheckKeys compares checkKeys with a reference built on
// encoding/json's tokenizer: a valid JSON document passes exactly when every
// object key is a known field name, spelled exactly without escapes, and
// appears once in its object.
func FuzzCheckKeys(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"id":1,"op":"status"}`,
		`{"v":1,"id":1,"id":2}`,
		`{"v":1,"V":1}`,
		`{"\u0076":1}`,
		`{"op":"x{\"id\":[1,2]},\"v\"","id":1}`,
		`{"bind":{"options":{"listen":true}},"status":{"sockets":[{"refs":1,"refs":2}]}}`,
		`{"sockets":[{"refs":1},{"refs":1}]}`,
		`[{"id":1},{"id":1,"id":1}]`,
		`{"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":{"i":{"id":1,"id":1}}}}}}}}}}`,
		"{\"to\u212aen\":\"x\"}",
		"{\"\u017ftatus\":{}}",
		`{"op":"reclaim","reclaim":{"token":"t","secret":"s","secret":"s"}}`,
		`{"upgrade":{"old_pid":1,"new_pid":2,"version":"v","took_ms":3},"bind":{"reclaim":"s"}}`,
		`"id"`,
		`{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !json.Valid(b) {
			return // checkKeys runs only after a successful decode
		}
		got := checkKeys(b)
		want := refCheckKeys(t, b)
		if (got == nil) != (want == nil) {
			t.Fatalf("checkKeys(%s) = %v; the reference says %v", b, got, want)
		}
	})
}

// refCheckKeys walks b with json.Decoder.Token, recovering each key's raw
// bytes from the input offsets.
func refCheckKeys(t *testing.T, b []byte) error {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // numbers out of float64 range are valid JSON
	type frame struct {
		object   bool
		keyNext  bool // the next string token in this object is a key
		seenKeys map[string]bool
	}
	var stack []*frame
	for {
		start := dec.InputOffset()
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			t.Fatalf("json.Valid(%s) but Token: %v", b, err)
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		isKey := top != nil && top.object && top.keyNext
		if top != nil && top.object {
			top.keyNext = !top.keyNext
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{':
				stack = append(stack, &frame{object: true, keyNext: true, seenKeys: map[string]bool{}})
			case '[':
				stack = append(stack, &frame{})
			default:
				stack = stack[:len(stack)-1]
				if len(stack) > 0 && stack[len(stack)-1].object {
					stack[len(stack)-1].keyNext = true
				}
			}
			if v == '{' || v == '[' {
				// An opening delimiter is a value: the parent's next
				// token is a key again, once this one closes.
				if isKey {
					t.Fatalf("delimiter %q in key position in %s", v, b)
				}
			}
		case string:
			if !isKey {
				continue
			}
			raw := bytes.TrimLeft(b[start:dec.InputOffset()], " \t\r\n,:")
			if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
				t.Fatalf("cannot recover key %q from %q in %s", v, raw, b)
			}
			raw = raw[1 : len(raw)-1]
			if bytes.IndexByte(raw, '\\') >= 0 || !utf8.Valid(raw) || !knownKeys[string(raw)] {
				return errors.New("unknown or escaped key")
			}
			if top.seenKeys[string(raw)] {
				return errors.New("duplicate key")
			}
			top.seenKeys[string(raw)] = true
		}
	}
}
