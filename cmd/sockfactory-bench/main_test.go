package main

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

func TestIntList(t *testing.T) {
	tests := []struct {
		in      string
		want    []int
		wantErr bool
	}{
		{"1", []int{1}, false},
		{"1,8, 64", []int{1, 8, 64}, false},
		{"", nil, true},
		{"1,,2", nil, true},
		{"-1", nil, true},
		{"x", nil, true},
	}
	for _, tt := range tests {
		got, err := intList(tt.in)
		if (err != nil) != tt.wantErr || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("intList(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

// Bad command lines fail with status 2 and say why, before anything runs.
func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-clients", "a,b"}, "-clients"},
		{[]string{"-held", "10,x"}, "-held"},
		{[]string{"extra"}, "unexpected argument"},
		{[]string{"-nosuchflag"}, "nosuchflag"},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		if code := run(tt.args, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("run(%q) = %d, stderr %q; want 2 and a message naming %q", tt.args, code, stderr.String(), tt.want)
		}
	}
}
