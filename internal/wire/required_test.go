package wire

import (
	"strings"
	"testing"
)

// TestDecodeRequiredMembers: a required member of an op's parameter object
// that is missing, null or empty is invalid_request naming the member, with
// the request's id, from both decoders alike. Before, such a pickup or
// release went on to the daemon and came back not_found. With two required
// members (reclaim's token and secret), each is checked with the other
// valid; TestDecodeParameterObjectRequired has both absent at once.
func TestDecodeRequiredMembers(t *testing.T) {
	type obj struct {
		op, object string
		members    map[string]string // each required member with a valid value
	}
	objs := []obj{
		{"connect", "connect", map[string]string{"network": `"tcp"`, "address": `"a:1"`}},
		{"hello", "hello", map[string]string{"app": `"web"`}},
		{"bind", "bind", map[string]string{"network": `"tcp"`, "address": `":53"`}},
		{"pickup", "token", map[string]string{"token": `"0123456789abcdef0123456789abcdef"`}},
		{"release", "token", map[string]string{"token": `"0123456789abcdef0123456789abcdef"`}},
		{"reclaim", "reclaim", map[string]string{"token": `"0123456789abcdef0123456789abcdef"`, "secret": `"fedcba9876543210fedcba9876543210"`}},
	}
	build := func(o obj, member, value string) string {
		var parts []string
		for m, v := range o.members {
			if m == member {
				if value == "" {
					continue // missing
				}
				v = value
			}
			parts = append(parts, `"`+m+`":`+v)
		}
		return `{"v":1,"id":42,"op":"` + o.op + `","` + o.object + `":{` + strings.Join(parts, ",") + `}}`
	}
	for _, o := range objs {
		t.Run(o.op+" valid", func(t *testing.T) {
			b := []byte(build(o, "", ""))
			agreeRequest(t, b)
			if _, err := DecodeRequest(b); err != nil {
				t.Fatalf("DecodeRequest(%s): %v, want no error", b, err)
			}
		})
		for m := range o.members {
			for _, how := range []struct{ name, value string }{{"missing", ""}, {"null", "null"}, {"empty", `""`}} {
				t.Run(o.op+" "+m+" "+how.name, func(t *testing.T) {
					b := []byte(build(o, m, how.value))
					agreeRequest(t, b)
					req, err := DecodeRequest(b)
					e, ok := err.(*Error)
					if !ok || e.Code != CodeInvalidRequest || !strings.Contains(e.Message, `"`+m+`"`) || !strings.Contains(e.Message, `"`+o.object+`"`) {
						t.Fatalf("DecodeRequest(%s): got %v; want invalid_request naming member %q of %q", b, err, m, o.object)
					}
					if req == nil || req.ID != 42 {
						t.Errorf("DecodeRequest(%s): got request %+v; want id 42 echoed", b, req)
					}
				})
			}
		}
	}
}

// TestDecodeParameterObjectRequired: an op with parameters needs its
// parameter object (missing or null alike); reload, status and upgrade do
// not, and upgrade has none to send.
func TestDecodeParameterObjectRequired(t *testing.T) {
	for _, tt := range []struct {
		in, want string // want: a substring of the invalid_request message, or "" for no error
	}{
		{`{"v":1,"id":42,"op":"reclaim"}`, `op "reclaim" needs a "reclaim" object`},
		{`{"v":1,"id":42,"op":"reclaim","reclaim":null}`, `op "reclaim" needs a "reclaim" object`},
		{`{"v":1,"id":42,"op":"reclaim","token":{"token":"t"}}`, `op "reclaim" needs a "reclaim" object`},
		{`{"v":1,"id":42,"op":"reclaim","reclaim":{}}`, `the "reclaim" object's member "token" is required`},
		{`{"v":1,"id":42,"op":"reclaim","reclaim":{"secret":null,"token":""}}`, `the "reclaim" object's member "token" is required`},
		{`{"v":1,"id":42,"op":"pickup","reclaim":{"token":"t","secret":"s"}}`, `op "pickup" needs a "token" object`},
		{`{"v":1,"id":42,"op":"upgrade","upgrade":{}}`, `unknown field "upgrade"`},
		{`{"v":1,"id":42,"op":"upgrade"}`, ""},
		{`{"v":1,"id":42,"op":"upgrade","upgrade":null}`, `unknown field "upgrade"`},
		{`{"v":1,"id":42,"op":"reload"}`, ""},
		{`{"v":1,"id":42,"op":"Upgrade"}`, `unknown op "Upgrade"`},
		{`{"v":1,"id":42,"op":"reclaim ","reclaim":{"token":"t","secret":"s"}}`, `unknown op "reclaim "`},
	} {
		b := []byte(tt.in)
		agreeRequest(t, b)
		req, err := DecodeRequest(b)
		if tt.want == "" {
			if err != nil {
				t.Errorf("DecodeRequest(%s): %v, want no error", b, err)
			}
			continue
		}
		e, ok := err.(*Error)
		if !ok || e.Code != CodeInvalidRequest || !strings.Contains(e.Message, tt.want) {
			t.Errorf("DecodeRequest(%s): got %v; want invalid_request containing %q", b, err, tt.want)
		}
		if req == nil || req.ID != 42 {
			t.Errorf("DecodeRequest(%s): got request %+v; want id 42 echoed", b, req)
		}
	}
}
