package rotatord

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestValidateSubject(t *testing.T) {
	for _, s := range []string{"a", "a.b", "a.*", "a.>", ">", "*", "*.b.>", "_INBOX.>", "orders.v1-new.ok"} {
		if err := ValidateSubject(s); err != nil {
			t.Errorf("ValidateSubject(%q) = %v, want nil", s, err)
		}
	}
	for _, s := range []string{"", ".", "a.", ".a", "a..b", "a b", "a\tb", "a.>.b", ">.a", "a*", "a.b*", "a.>b", "x\x00"} {
		if err := ValidateSubject(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateSubject(%q) = %v, want ErrInvalid", s, err)
		}
	}
}

func TestValidateName(t *testing.T) {
	for _, n := range []string{"a", "agent-kate", "A.b_c-9", "x123456789012345678901234567890123456789012345678901234567890123"} {
		if err := ValidateName("agent", n); err != nil {
			t.Errorf("ValidateName(%q) = %v", n, err)
		}
	}
	for _, n := range []string{"", "-a", ".a", "a b", "a/b", "../x", "é", "x1234567890123456789012345678901234567890123456789012345678901234"} {
		if err := ValidateName("agent", n); !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateName(%q) = %v, want ErrInvalid", n, err)
		}
	}
}

func TestScope(t *testing.T) {
	cases := []struct {
		have, need Scope
		ok         bool
	}{
		{ScopeAdmin, ScopeRead, true}, {ScopeAdmin, ScopeAdmin, true}, {ScopeRotate, ScopeRead, true},
		{ScopeRotate, ScopeRotate, true}, {ScopeRotate, ScopeAdmin, false}, {ScopeRead, ScopeRotate, false},
		{Scope("root"), ScopeRead, false}, {Scope(""), ScopeRead, false},
	}
	for _, c := range cases {
		if got := c.have.Allows(c.need); got != c.ok {
			t.Errorf("%s.Allows(%s) = %v, want %v", c.have, c.need, got, c.ok)
		}
	}
}

func TestPermissionsValidate(t *testing.T) {
	many := make([]string, maxSubjects+1)
	for i := range many {
		many[i] = fmt.Sprintf("s.%d", i)
	}
	if err := (Permissions{Sub: PermissionList{Allow: many}}).Validate(); !errors.Is(err, ErrInvalid) {
		t.Errorf("too many subjects: %v", err)
	}
	p := Permissions{}.Normalize()
	if p.Pub.Allow == nil || p.Sub.Deny == nil {
		t.Error("Normalize left nil lists")
	}
	if err := (RotationPolicy{Grace: 30 * time.Second}).Validate(); err == nil {
		t.Error("grace under a minute accepted")
	}
}

func TestErrors(t *testing.T) {
	err := fmt.Errorf("wrapped: %w", Errorf(ENOTFOUND, "agent %q not found", "x"))
	if !errors.Is(err, ErrNotFound) || errors.Is(err, ErrConflict) {
		t.Fatal("errors.Is does not match by code")
	}
	if ErrorCode(err) != ENOTFOUND || ErrorMessage(err) != `agent "x" not found` {
		t.Fatalf("code %s message %s", ErrorCode(err), ErrorMessage(err))
	}
	plain := errors.New("dial tcp 10.0.0.1: secret detail")
	if ErrorCode(plain) != EINTERNAL || ErrorMessage(plain) != "internal error" {
		t.Fatal("a plain error leaks its text")
	}
}
