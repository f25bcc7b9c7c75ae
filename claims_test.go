package rotatord

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Every bad claim is a clear EINVALID naming the field; good ones pass.
func TestUserTemplateValidate(t *testing.T) {
	ok := UserTemplate{
		Permissions:   Permissions{Pub: PermissionList{Allow: []string{"a.>"}}, Resp: &ResponsePermission{Max: 1, TTL: time.Second}},
		Limits:        UserLimits{Subs: 10, Data: -1, Payload: 0},
		Src:           []string{"10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"},
		Times:         []TimeRange{{Start: "08:00:00", End: "18:00:00"}, {Start: "22:00:00", End: "02:00:00"}},
		TimesLocation: "Europe/Paris", ConnectionTypes: []string{"STANDARD"},
	}
	if err := ok.Validate(false); err != nil {
		t.Fatalf("valid template: %v", err)
	}
	many := func(n int, f func(i int) string) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = f(i)
		}
		return out
	}
	for _, c := range []struct {
		name string
		mod  func(*UserTemplate)
		want string
	}{
		{"bad cidr", func(u *UserTemplate) { u.Src = []string{"10.0.0.0/33"} }, "src[0]"},
		{"plain ip", func(u *UserTemplate) { u.Src = []string{"10.0.0.1"} }, "CIDR"},
		{"not an address", func(u *UserTemplate) { u.Src = []string{"10.0.0.0/8", "localhost"} }, "src[1]"},
		{"too many networks", func(u *UserTemplate) {
			u.Src = many(65, func(i int) string { return fmt.Sprintf("10.0.%d.0/24", i) })
		}, "more than 64"},
		{"bad start", func(u *UserTemplate) { u.Times = []TimeRange{{Start: "25:00:00", End: "26:00:00"}} }, "times[0].start"},
		{"short time", func(u *UserTemplate) { u.Times = []TimeRange{{Start: "8:00:00", End: "18:00:00"}} }, "HH:MM:SS"},
		{"missing end", func(u *UserTemplate) { u.Times = []TimeRange{{Start: "08:00:00"}} }, "times[0].end"},
		{"empty window", func(u *UserTemplate) { u.Times = []TimeRange{{Start: "08:00:00", End: "08:00:00"}} }, "empty"},
		{"too many windows", func(u *UserTemplate) {
			u.Times = make([]TimeRange, 25)
			for i := range u.Times {
				u.Times[i] = TimeRange{Start: "01:00:00", End: "02:00:00"}
			}
		}, "more than 24"},
		{"unknown zone", func(u *UserTemplate) { u.TimesLocation = "Mars/Olympus_Mons" }, "times_location"},
		{"local zone", func(u *UserTemplate) { u.TimesLocation = "Local" }, "times_location"},
		{"negative limit", func(u *UserTemplate) { u.Limits.Subs = -2 }, "limits.subs"},
		{"resp max", func(u *UserTemplate) { u.Permissions.Resp = &ResponsePermission{Max: -2} }, "resp.max"},
		{"resp ttl", func(u *UserTemplate) { u.Permissions.Resp = &ResponsePermission{TTL: -time.Second} }, "resp.ttl"},
		{"resp ttl too long", func(u *UserTemplate) { u.Permissions.Resp = &ResponsePermission{TTL: 8 * 24 * time.Hour} }, "resp.ttl"},
		{"template in own permissions", func(u *UserTemplate) { u.Permissions.Sub.Allow = []string{"a.{{name()}}"} }, "only in a role"},
		{"too many subjects", func(u *UserTemplate) {
			u.Permissions.Pub.Allow = many(257, func(i int) string { return fmt.Sprintf("s.%d", i) })
		}, "more than 256"},
		{"too many connection types", func(u *UserTemplate) { u.ConnectionTypes = many(17, func(int) string { return "STANDARD" }) }, "more than 16"},
	} {
		u := ok
		u.Permissions.Pub.Allow = append([]string{}, ok.Permissions.Pub.Allow...)
		c.mod(&u)
		err := u.Validate(false)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Validate = %v, want EINVALID with %q", c.name, err, c.want)
		}
	}
}

func TestTemplateSubjects(t *testing.T) {
	for _, s := range []string{"a.{{name()}}.>", "a.{{ Name() }}", "{{tag(team)}}.x", "a.{{subject()}}", "a.{{account-name()}}.{{account-subject()}}",
		"a.{{account-tag(env)}}", "a.pre-{{name()}}-post", "_INBOX.>"} {
		p := Permissions{Sub: PermissionList{Allow: []string{s}}}
		if err := p.validate(true); err != nil {
			t.Errorf("role subject %q: %v", s, err)
		}
	}
	for s, want := range map[string]string{
		"a.{{nope()}}":       "is not one of",
		"a.{{tag()}}":        "the key",
		"a.{{tag(a b)}}":     "the key",
		"a.{{name()}":        "unclosed",
		"a.name()}}":         "unclosed",
		"a.{{name()}}*":      "wildcards",
		"a.{{name()}}.>.b":   "last token",
		"a..{{name()}}":      "empty token",
		"a.{{tag(team)}} b":  "whitespace",
		"{{tag(x.y)}}.a.b.c": "the key",
	} {
		p := Permissions{Pub: PermissionList{Deny: []string{s}}}
		if err := p.validate(true); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("role subject %q: %v, want EINVALID with %q", s, err, want)
		}
	}
}

// A role's template is checked against each agent as nats-server will
// expand it, so that it never makes the server refuse the agent or reach
// another agent's subjects.
func TestCheckAgent(t *testing.T) {
	tmpl := UserTemplate{Permissions: Permissions{
		Pub: PermissionList{Allow: []string{"jobs.{{name()}}.>"}},
		Sub: PermissionList{Allow: []string{"teams.{{tag(team)}}.>"}, Deny: []string{"teams.{{tag(team)}}.admin"}},
	}}
	if err := tmpl.CheckAgent("kate", []string{"team:blue", "team:red"}); err != nil {
		t.Fatalf("fitting agent: %v", err)
	}
	for _, c := range []struct {
		name string
		tags []string
		want string
	}{
		{"a.b", []string{"team:blue"}, "has a '.'"},
		{"kate", nil, `lacks`},                              // a deny subject needs the tag
		{"kate", []string{"team:a.b"}, "one subject token"}, // a value must not add tokens
		{"kate", []string{"team:>"}, "one subject token"},
	} {
		if err := tmpl.CheckAgent(c.name, c.tags); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("CheckAgent(%q, %v) = %v, want EINVALID with %q", c.name, c.tags, err, c.want)
		}
	}
	// Allow subjects without the tag are only left out: no error.
	allowOnly := UserTemplate{Permissions: Permissions{Sub: PermissionList{Allow: []string{"t.{{tag(team)}}"}}}}
	if err := allowOnly.CheckAgent("kate", nil); err != nil {
		t.Errorf("allow subject without its tag: %v", err)
	}
	// nats-server refuses a user whose lists expand past 4096 subjects.
	var tags []string
	for i := range 65 {
		tags = append(tags, fmt.Sprintf("a:%d", i), fmt.Sprintf("b:%d", i))
	}
	wide := UserTemplate{Permissions: Permissions{Pub: PermissionList{Allow: []string{"x.{{tag(a)}}.{{tag(b)}}"}}}}
	if err := wide.CheckAgent("kate", tags); err == nil || !strings.Contains(err.Error(), "4096") {
		t.Errorf("65x65 expansions: %v, want the 4096 bound", err)
	}
	if got := (UserTemplate{Permissions: Permissions{Pub: PermissionList{Deny: []string{"a.{{account-tag(env)}}"}}}}).AccountTagsNeeded(); len(got) != 1 || got[0] != "env" {
		t.Errorf("AccountTagsNeeded = %v, want [env]", got)
	}
}

func TestNormalizeTags(t *testing.T) {
	got, err := NormalizeTags([]string{"Team:Blue", "team:blue", "region:eu"})
	if err != nil || strings.Join(got, ",") != "team:blue,region:eu" {
		t.Fatalf("NormalizeTags = %v, %v", got, err)
	}
	for _, bad := range [][]string{{""}, {"a b"}, {"a\x00"}, {strings.Repeat("x", 256)}, make([]string, 65)} {
		if _, err := NormalizeTags(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("NormalizeTags(%.20q) = %v, want EINVALID", bad, err)
		}
	}
}

func TestResponsePermissionJSON(t *testing.T) {
	for in, want := range map[string]ResponsePermission{
		`{"max":1,"ttl":"5s"}`:        {Max: 1, TTL: 5 * time.Second},
		`{"max":-1,"ttl":2000000000}`: {Max: -1, TTL: 2 * time.Second},
		`{"max":3}`:                   {Max: 3},
		`{"max":0,"ttl":null}`:        {},
		`{"max":2,"ttl":"1m30s"}`:     {Max: 2, TTL: 90 * time.Second},
	} {
		var got ResponsePermission
		if err := json.Unmarshal([]byte(in), &got); err != nil || got != want {
			t.Errorf("decode %s = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{`{"max":1,"ttl":"soon"}`, `{"max":1,"ttl":true}`, `{"max":"1"}`} {
		var got ResponsePermission
		if err := json.Unmarshal([]byte(in), &got); err == nil {
			t.Errorf("decode %s = %+v, want an error", in, got)
		}
	}
	b, _ := json.Marshal(ResponsePermission{Max: 1, TTL: 90 * time.Second})
	if string(b) != `{"max":1,"ttl":"1m30s"}` {
		t.Errorf("encode = %s", b)
	}
}

func TestAllowAllWhereEmpty(t *testing.T) {
	p := Permissions{Pub: PermissionList{Deny: []string{"x"}}, Sub: PermissionList{Allow: []string{"a"}}}.AllowAllWhereEmpty()
	if strings.Join(p.Pub.Allow, ",") != ">" || strings.Join(p.Pub.Deny, ",") != "x" || strings.Join(p.Sub.Allow, ",") != "a" {
		t.Fatalf("AllowAllWhereEmpty = %+v", p)
	}
}

func TestUserTemplateIsEmpty(t *testing.T) {
	e := UserTemplate{Limits: NoUserLimits}.Normalize()
	if !e.IsEmpty() {
		t.Fatal("default template is not empty")
	}
	for _, mod := range []func(*UserTemplate){
		func(u *UserTemplate) { u.Permissions.Sub.Deny = []string{"x"} },
		func(u *UserTemplate) { u.Permissions.Resp = &ResponsePermission{} },
		func(u *UserTemplate) { u.Limits.Payload = 10 },
		func(u *UserTemplate) { u.Src = []string{"10.0.0.0/8"} },
		func(u *UserTemplate) { u.TimesLocation = "UTC" },
		func(u *UserTemplate) { u.ConnectionTypes = []string{"STANDARD"} },
	} {
		u := e
		mod(&u)
		if u.IsEmpty() {
			t.Errorf("%+v counts as empty", u)
		}
	}
}
