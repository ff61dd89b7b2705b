package config

import (
	"errors"
	"fmt"
	"os/user"
	"slices"
	"strings"
	"testing"
)

// unknownUID returns a uid no account in the passwd database has.
func unknownUID(t *testing.T) int {
	t.Helper()
	for uid := 2000000000; uid < 2000000100; uid++ {
		var unknown user.UnknownUserIdError
		if _, err := user.LookupId(fmt.Sprint(uid)); errors.As(err, &unknown) {
			return uid
		}
	}
	t.Fatal("every uid from 2000000000 to 2000000099 has a passwd entry")
	return 0
}

// TestParseDaemonAccount: [daemon] user accepts a name or a decimal uid,
// one with no passwd entry included (uid and gid both that number, as
// docs/configuration.md promises); group replaces the primary gid;
// supplementary_groups are kept, by name or number, and default to none.
func TestParseDaemonAccount(t *testing.T) {
	nobodyUID := unknownUID(t)
	rootGID := int(gidOf(t, "root"))
	tests := []struct {
		name     string
		daemon   string
		uid, gid int
		groups   []int
	}{
		{"numeric uid without passwd entry", fmt.Sprintf("user = %q", fmt.Sprint(nobodyUID)), nobodyUID, nobodyUID, nil},
		{"numeric uid without passwd entry and a group", fmt.Sprintf("user = \"%d\"\ngroup = \"4242\"", nobodyUID), nobodyUID, 4242, nil},
		{"root by name", `user = "root"`, int(uidOf(t, "root")), rootGID, nil},
		{"uid 0 takes root's primary group", `user = "0"`, 0, rootGID, nil},
		{"supplementary groups by name and number", "user = \"root\"\nsupplementary_groups = [\"root\", 7, \"8\"]", 0, rootGID, []int{rootGID, 7, 8}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := mustParse(t, "[daemon]\n"+tc.daemon+"\n")
			if c.UID != tc.uid || c.GID != tc.gid || !slices.Equal(c.Groups, tc.groups) {
				t.Errorf("got uid %d gid %d groups %v; want uid %d gid %d groups %v", c.UID, c.GID, c.Groups, tc.uid, tc.gid, tc.groups)
			}
		})
	}
}

// TestParseDaemonAccountErrors: what [daemon] user, group and
// supplementary_groups refuse, each at its line.
func TestParseDaemonAccountErrors(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		line int
		msg  string
	}{
		{"unknown user name", "[daemon]\n\nuser = \"no-such-user-sf\"\n", 3, `"no-such-user-sf": no such user`},
		{"uid 2^32-1", "[daemon]\nuser = \"4294967295\"\n", 2, `"4294967295": no such user`},
		{"negative uid", "[daemon]\nuser = \"-1\"\n", 2, `"-1": no such user`},
		{"group without user", "[daemon]\n\ngroup = \"0\"\n", 3, "set user too"},
		{"supplementary groups without user", "[daemon]\nsupplementary_groups = [0]\n", 2, "set user too"},
		{"unknown supplementary group", "[daemon]\nuser = \"0\"\nsupplementary_groups = [\n  0,\n  \"no-such-group-sf\",\n]\n", 5, `"no-such-group-sf": no such group`},
		{"supplementary group not a name or number", "[daemon]\nuser = \"0\"\nsupplementary_groups = [1.5]\n", 3, "want a name or a number"},
		{"unknown primary group", "[daemon]\nuser = \"0\"\ngroup = \"no-such-group-sf\"\n", 3, `"no-such-group-sf": no such group`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("test.toml", []byte(tc.doc))
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("got %+v, %v; want a *config.Error at line %d\ndocument:\n%s", c, err, tc.line, tc.doc)
			}
			if e.Line != tc.line || !strings.Contains(e.Msg, tc.msg) {
				t.Errorf("got %v; want line %d and a message containing %q\ndocument:\n%s", err, tc.line, tc.msg, tc.doc)
			}
		})
	}
}
