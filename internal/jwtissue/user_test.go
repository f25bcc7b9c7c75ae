package jwtissue

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
)

func encodeUser(t *testing.T, spec UserSpec) (*jwt.UserClaims, nkeys.KeyPair, string) {
	t.Helper()
	signer := mustKey(t, nkeys.PrefixByteAccount)
	user := mustKey(t, nkeys.PrefixByteUser)
	spec.PublicKey, spec.AccountKey = Public(user), Public(mustKey(t, nkeys.PrefixByteAccount))
	if spec.Expires.IsZero() {
		spec.Expires = time.Now().Add(time.Hour)
	}
	token, _, err := EncodeUser(signer, spec)
	if err != nil {
		t.Fatal(err)
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		t.Fatal(err)
	}
	return uc, signer, token
}

// A direction with no allow entry denies ">": NATS would read an empty
// list as allow-all.
func TestDefaultDeny(t *testing.T) {
	for _, c := range []struct {
		name               string
		perms              rotatord.Permissions
		pubDeny, subDeny   string
		pubAllow, subAllow string
	}{
		{name: "none", pubDeny: ">", subDeny: ">"},
		{name: "pub only", perms: rotatord.Permissions{Pub: rotatord.PermissionList{Allow: []string{"a.>"}}},
			pubAllow: "a.>", subDeny: ">"},
		{name: "deny only", perms: rotatord.Permissions{Sub: rotatord.PermissionList{Deny: []string{"x"}}},
			pubDeny: ">", subDeny: "x,>"},
		{name: "everything", perms: rotatord.Permissions{Pub: rotatord.PermissionList{Allow: []string{">"}}, Sub: rotatord.PermissionList{Allow: []string{">"}}},
			pubAllow: ">", subAllow: ">"},
	} {
		uc, _, _ := encodeUser(t, UserSpec{Name: "kate", Claims: rotatord.UserTemplate{Permissions: c.perms, Limits: rotatord.NoUserLimits}})
		got := []string{strings.Join(uc.Pub.Allow, ","), strings.Join(uc.Pub.Deny, ","), strings.Join(uc.Sub.Allow, ","), strings.Join(uc.Sub.Deny, ",")}
		want := []string{c.pubAllow, c.pubDeny, c.subAllow, c.subDeny}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("%s: pub allow|deny, sub allow|deny = %q, want %q", c.name, got, want)
		}
	}
}

// Every claim of the template lands in the user JWT under nats-io/jwt's names.
func TestEncodeUserClaims(t *testing.T) {
	tmpl := rotatord.UserTemplate{
		Permissions: rotatord.Permissions{Sub: rotatord.PermissionList{Allow: []string{"svc.time"}},
			Resp: &rotatord.ResponsePermission{Max: 2, TTL: 5 * time.Second}},
		Limits:          rotatord.UserLimits{Subs: 10, Data: 2048, Payload: 512},
		Src:             []string{"10.0.0.0/8"},
		Times:           []rotatord.TimeRange{{Start: "08:00:00", End: "18:00:00"}},
		TimesLocation:   "Europe/Paris",
		ConnectionTypes: []string{jwt.ConnectionTypeStandard, jwt.ConnectionTypeWebsocket},
	}
	uc, _, _ := encodeUser(t, UserSpec{Name: "kate", Claims: tmpl, Tags: []string{"team:blue"}})
	if uc.Resp == nil || uc.Resp.MaxMsgs != 2 || uc.Resp.Expires != 5*time.Second {
		t.Errorf("resp = %+v", uc.Resp)
	}
	if uc.Subs != 10 || uc.Data != 2048 || uc.NatsLimits.Payload != 512 {
		t.Errorf("limits = %+v", uc.NatsLimits)
	}
	if !uc.Src.Contains("10.0.0.0/8") || len(uc.Times) != 1 || uc.Times[0].Start != "08:00:00" || uc.Locale != "Europe/Paris" {
		t.Errorf("src %v, times %v, location %q", uc.Src, uc.Times, uc.Locale)
	}
	if len(uc.AllowedConnectionTypes) != 2 || !uc.Tags.Contains("team:blue") || !uc.Pub.Deny.Contains(">") {
		t.Errorf("connection types %v, tags %v, pub deny %v", uc.AllowedConnectionTypes, uc.Tags, uc.Pub.Deny)
	}
	vr := jwt.CreateValidationResults()
	uc.Validate(vr)
	if !vr.IsEmpty() {
		t.Errorf("jwt validation: %v", vr.Errors())
	}
}

// A user of a role carries no permissions or limits, which nats-server
// requires of a scoped key's users, but keeps its tags for the templates.
func TestScopedUser(t *testing.T) {
	uc, signer, _ := encodeUser(t, UserSpec{Name: "kate", Scoped: true, Tags: []string{"team:blue"},
		Claims: rotatord.UserTemplate{Permissions: rotatord.Permissions{Pub: rotatord.PermissionList{Allow: []string{"ignored"}}}}})
	if !uc.HasEmptyPermissions() {
		t.Fatalf("scoped user carries permissions: %+v", uc.UserPermissionLimits)
	}
	us := jwt.NewUserScope()
	us.Key = Public(signer)
	if err := us.ValidateScopedSigner(uc); err != nil {
		t.Fatalf("nats-io/jwt refuses the scoped user: %v", err)
	}
	if !uc.Tags.Contains("team:blue") || uc.Name != "kate" {
		t.Fatalf("tags %v, name %q", uc.Tags, uc.Name)
	}
}

// Roles go into the account JWT as scoped signing keys with their template,
// default deny included.
func TestEncodeAccountScopedKeys(t *testing.T) {
	opSigner, acc := mustKey(t, nkeys.PrefixByteOperator), mustKey(t, nkeys.PrefixByteAccount)
	signing, roleKey := mustKey(t, nkeys.PrefixByteAccount), mustKey(t, nkeys.PrefixByteAccount)
	tmpl := rotatord.UserTemplate{Permissions: rotatord.Permissions{Pub: rotatord.PermissionList{Allow: []string{"jobs.{{name()}}.>"}}},
		Limits: rotatord.UserLimits{Subs: 5, Data: -1, Payload: -1}, ConnectionTypes: []string{jwt.ConnectionTypeStandard}}
	token, _, err := EncodeAccount(opSigner, AccountSpec{Name: "fleet", PublicKey: Public(acc), SigningKeys: []string{Public(signing)},
		Limits: rotatord.NoLimits, ScopedKeys: []ScopedKey{{Key: Public(roleKey), Role: "worker", Template: tmpl}}})
	if err != nil {
		t.Fatal(err)
	}
	ac, err := jwt.DecodeAccountClaims(token)
	if err != nil {
		t.Fatal(err)
	}
	if s, ok := ac.SigningKeys.GetScope(Public(signing)); !ok || s != nil {
		t.Fatalf("account signing key: scope %v, present %v; want unscoped", s, ok)
	}
	s, ok := ac.SigningKeys.GetScope(Public(roleKey))
	us, isUser := s.(*jwt.UserScope)
	if !ok || !isUser {
		t.Fatalf("role key: scope %#v, present %v", s, ok)
	}
	if us.Role != "worker" || !us.Template.Pub.Allow.Contains("jobs.{{name()}}.>") || !us.Template.Sub.Deny.Contains(">") ||
		us.Template.Subs != 5 || !us.Template.AllowedConnectionTypes.Contains(jwt.ConnectionTypeStandard) {
		t.Fatalf("role scope = %+v", us)
	}
}

func TestValidateConnectionTypes(t *testing.T) {
	if err := ValidateConnectionTypes(ConnectionTypes); err != nil {
		t.Fatalf("every known type: %v", err)
	}
	for _, bad := range [][]string{{"CARRIER_PIGEON"}, {"STANDARD", "STANDARD"}, {"websocket"}} {
		if err := ValidateConnectionTypes(bad); !errors.Is(err, rotatord.ErrInvalid) {
			t.Errorf("ValidateConnectionTypes(%q) = %v, want EINVALID", bad, err)
		}
	}
}

// ConnectLine is the length of the CONNECT line a real nats.go client
// sends with these creds: a fake server hands it a nonce and reads it.
func TestConnectLine(t *testing.T) {
	perms := rotatord.Permissions{Pub: rotatord.PermissionList{Allow: []string{"orders.>", "_INBOX.>"}}}
	user := mustKey(t, nkeys.PrefixByteUser)
	signer := mustKey(t, nkeys.PrefixByteAccount)
	token, _, err := EncodeUser(signer, UserSpec{Name: "kate", PublicKey: Public(user), AccountKey: Public(mustKey(t, nkeys.PrefixByteAccount)),
		Claims: rotatord.UserTemplate{Permissions: perms, Limits: rotatord.NoUserLimits}, Expires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	creds, err := Creds(token, Seed(user))
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "kate.creds")
	if err := os.WriteFile(file, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- "accept: " + err.Error()
			return
		}
		defer c.Close()
		fmt.Fprintf(c, "INFO {\"server_id\":\"S\",\"version\":\"2.15.2\",\"proto\":1,\"headers\":true,\"auth_required\":true,"+
			"\"nonce\":\"HJbzEDYsFwvKcLB\",\"max_payload\":1048576}\r\n")
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			got <- "read: " + err.Error()
			return
		}
		got <- line
	}()
	nc, err := nats.Connect("nats://"+l.Addr().String(), nats.UserCredentials(file), nats.Name("kate"), nats.Timeout(2*time.Second),
		nats.MaxReconnects(0))
	if err == nil {
		nc.Close()
	}
	line := <-got
	arg, ok := strings.CutPrefix(strings.TrimSuffix(line, "\r\n"), "CONNECT ")
	if !ok {
		t.Fatalf("the client sent %q, want a CONNECT line", line)
	}
	if !strings.Contains(arg, token) {
		t.Fatal("the CONNECT line does not carry the JWT")
	}
	if n := ConnectLine(token, "kate"); n != len(arg) {
		t.Fatalf("ConnectLine = %d, nats.go sent %d bytes: %s", n, len(arg), arg)
	}
}
