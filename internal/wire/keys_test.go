package wire_test

import (
	"strings"
	"testing"

	"github.com/sockfactory/sockfactory/internal/wire"
)

func TestDecodeRequestExactKeys(t *testing.T) {
	cases := []struct {
		name, msg string
		ok        bool
	}{
		{"exact", `{"v":1,"id":1,"op":"connect","connect":{"network":"tcp","address":"a.example:1"}}`, true},
		{"braces and quotes inside values", `{"v":1,"id":1,"op":"hello","hello":{"app":"x{\"id\":[1,2]},\"v\""}}`, true},
		{"array of objects", `{"v":1,"id":1,"op":"bind","bind":{"network":"tcp","address":":1","options":{"backlog":5}}}`, true},
		{"upper-case key", `{"V":1,"id":1,"op":"status"}`, false},
		{"mixed-case nested key", `{"v":1,"id":1,"op":"connect","connect":{"Network":"tcp","address":"a:1"}}`, false},
		{"duplicate id", `{"v":1,"id":1,"id":2,"op":"status"}`, false},
		{"duplicate nested address", `{"v":1,"id":1,"op":"connect","connect":{"network":"tcp","address":"a:1","address":"b:1"}}`, false},
		{"escaped key", `{"\u0076":1,"id":1,"op":"status"}`, false},
		{"same key in different objects", `{"v":1,"id":1,"op":"bind","bind":{"network":"tcp","address":":1","name":"n","options":{"listen":true}}}`, true},
		{"reclaim", `{"v":1,"id":1,"op":"reclaim","reclaim":{"token":"t","secret":"s"}}`, true},
		{"reclaim secret in upper case", `{"v":1,"id":1,"op":"reclaim","reclaim":{"token":"t","SECRET":"s"}}`, false},
		{"reclaim secret twice", `{"v":1,"id":1,"op":"reclaim","reclaim":{"token":"t","secret":"s","secret":"s"}}`, false},
		{"reclaim in Kelvin sign", "{\"v\":1,\"id\":1,\"op\":\"reclaim\",\"reclaim\":{\"to\u212aen\":\"t\",\"secret\":\"s\"}}", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := wire.DecodeRequest([]byte(tc.msg))
			if (err == nil) != tc.ok {
				t.Fatalf("DecodeRequest(%s): got error %v; want ok=%v", tc.msg, err, tc.ok)
			}
			if err != nil && !strings.Contains(err.Error(), "field") {
				t.Errorf("error %q does not name the field problem", err)
			}
		})
	}
}
