package rotate_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/rotate"
)

func workerTemplate() rotatord.UserTemplate {
	return rotatord.UserTemplate{Permissions: rotatord.Permissions{
		Pub: rotatord.PermissionList{Allow: []string{"jobs.{{name()}}.>"}},
		Sub: rotatord.PermissionList{Allow: []string{"jobs.{{name()}}.>", "teams.{{tag(team)}}.>", "_INBOX.>"}},
	}}
}

func userClaims(t *testing.T, token string) *jwt.UserClaims {
	t.Helper()
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		t.Fatal(err)
	}
	return uc
}

func roleScope(t *testing.T, svc *rotate.Service, account, key string) *jwt.UserScope {
	t.Helper()
	acc, err := svc.Account(context.Background(), account)
	if err != nil {
		t.Fatal(err)
	}
	ac, err := jwt.DecodeAccountClaims(acc.JWT)
	if err != nil {
		t.Fatal(err)
	}
	s, ok := ac.SigningKeys.GetScope(key)
	if !ok {
		return nil
	}
	us, _ := s.(*jwt.UserScope)
	return us
}

func wantCode(t *testing.T, what string, err error, code, text string) {
	t.Helper()
	if rotatord.ErrorCode(err) != code || !strings.Contains(rotatord.ErrorMessage(err), text) {
		t.Errorf("%s: %v; want %s with %q", what, err, code, text)
	}
}

// A role is a scoped key in the account JWT; its agents' JWTs are signed by
// that key, carry no permissions but their tags, and record the signer.
func TestRoleAgents(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	svc, _ := newService(t, clk)
	ctx := context.Background()
	if _, err := svc.CreateAccount(ctx, "test", rotate.AccountInput{Name: "fleet"}); err != nil {
		t.Fatal(err)
	}
	role, err := svc.CreateRole(ctx, "test", "fleet", rotate.RoleInput{Name: "worker", Description: "workers", Template: workerTemplate()})
	if err != nil {
		t.Fatal(err)
	}
	if role.SigningKey() == "" || role.Template.Limits != rotatord.NoUserLimits {
		t.Fatalf("role = %+v", role)
	}
	us := roleScope(t, svc, "fleet", role.SigningKey())
	if us == nil || us.Role != "worker" || !us.Template.Pub.Allow.Contains("jobs.{{name()}}.>") {
		t.Fatalf("account JWT scope of the role = %+v", us)
	}
	acc, _ := svc.Account(ctx, "fleet")
	for _, k := range acc.SigningKeys {
		if k == role.SigningKey() {
			t.Fatal("the role's key is listed among the account's own signing keys")
		}
	}

	g, creds, err := svc.CreateAgent(ctx, "test", rotate.AgentInput{Name: "kate", Account: "fleet", Role: "worker", Tags: []string{"Team:Blue"}})
	if err != nil {
		t.Fatal(err)
	}
	uc := userClaims(t, g.Active.JWT)
	if uc.Issuer != role.SigningKey() || uc.IssuerAccount != acc.PublicKey || !uc.HasEmptyPermissions() || !uc.Tags.Contains("team:blue") {
		t.Fatalf("user JWT of a role's agent: issuer %s, permissions %+v, tags %v", uc.Issuer, uc.UserPermissionLimits, uc.Tags)
	}
	if g.Active.SigningKey != role.SigningKey() || g.Role != "worker" || len(creds) == 0 {
		t.Fatalf("agent = role %q, credential signed by %q", g.Role, g.Active.SigningKey)
	}
	got, _ := svc.Agent(ctx, "kate")
	if got.Role != "worker" || got.RoleKey != role.SigningKey() || got.Active.SigningKey != role.SigningKey() || got.Tags[0] != "team:blue" {
		t.Fatalf("stored agent: role %q key %q, signed by %q, tags %v", got.Role, got.RoleKey, got.Active.SigningKey, got.Tags)
	}
	// A rotation signs with the role's key too.
	rotateAgent(t, svc, "kate")
	got, _ = svc.Agent(ctx, "kate")
	if userClaims(t, got.Active.JWT).Issuer != role.SigningKey() {
		t.Fatal("the rotated JWT is not signed by the role's key")
	}
	if r, _ := svc.Role(ctx, "fleet", "worker"); r.Agents != 1 {
		t.Fatalf("role agents = %d, want 1", r.Agents)
	}

	// What an agent of a role may not have, or be.
	for _, c := range []struct {
		in   rotate.AgentInput
		want string
	}{
		{rotate.AgentInput{Name: "own", Account: "fleet", Role: "worker",
			Permissions: rotatord.Permissions{Pub: rotatord.PermissionList{Allow: []string{"x"}}}}, "exclude each other"},
		{rotate.AgentInput{Name: "own2", Account: "fleet", Role: "worker", Src: []string{"10.0.0.0/8"}}, "exclude each other"},
		{rotate.AgentInput{Name: "nope", Account: "fleet", Role: "ghost"}, `role "ghost" does not exist`},
		{rotate.AgentInput{Name: "a.b", Account: "fleet", Role: "worker"}, "has a '.'"},
		{rotate.AgentInput{Name: "dots", Account: "fleet", Role: "worker", Tags: []string{"team:a.b"}}, "one subject token"},
	} {
		_, _, err := svc.CreateAgent(ctx, "test", c.in)
		wantCode(t, "create "+c.in.Name, err, rotatord.EINVALID, c.want)
	}
	// Empty claims of its own are no claims.
	if _, _, err := svc.CreateAgent(ctx, "test", rotate.AgentInput{Name: "empty", Account: "fleet", Role: "worker",
		Permissions: rotatord.Permissions{Pub: rotatord.PermissionList{Allow: []string{}}}, Src: []string{}}); err != nil {
		t.Fatalf("role with empty own claims: %v", err)
	}
	_, err = svc.CreateRole(ctx, "test", "fleet", rotate.RoleInput{Name: "worker"})
	wantCode(t, "duplicate role", err, rotatord.ECONFLICT, "exists")
	_, err = svc.CreateRole(ctx, "test", "SYS", rotate.RoleInput{Name: "x"})
	wantCode(t, "role in the system account", err, rotatord.EINVALID, "system account")
	_, err = svc.CreateRole(ctx, "test", "ghost", rotate.RoleInput{Name: "x"})
	wantCode(t, "role in no account", err, rotatord.ENOTFOUND, "ghost")
	_, err = svc.CreateRole(ctx, "test", "fleet", rotate.RoleInput{Name: "bad",
		Template: rotatord.UserTemplate{Permissions: rotatord.Permissions{Pub: rotatord.PermissionList{Allow: []string{"a.{{nope()}}"}}}}})
	wantCode(t, "unknown template", err, rotatord.EINVALID, "is not one of")
	_, err = svc.CreateRole(ctx, "test", "fleet", rotate.RoleInput{Name: "envs",
		Template: rotatord.UserTemplate{Permissions: rotatord.Permissions{Pub: rotatord.PermissionList{Deny: []string{"a.{{account-tag(env)}}"}}}}})
	wantCode(t, "deny reads a missing account tag", err, rotatord.EINVALID, "account tag")
}

// Changing a role's scope re-signs the account and says the agents will
// reconnect; a description does not touch the account JWT. A new scope
// that would lock an agent out is refused.
func TestUpdateRole(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	svc, _ := newService(t, clk)
	ctx := context.Background()
	svc.CreateAccount(ctx, "test", rotate.AccountInput{Name: "fleet"})
	role, err := svc.CreateRole(ctx, "test", "fleet", rotate.RoleInput{Name: "worker", Template: workerTemplate()})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.CreateAgent(ctx, "test", rotate.AgentInput{Name: "kate", Account: "fleet", Role: "worker"}); err != nil {
		t.Fatal(err)
	}
	before, _ := svc.Account(ctx, "fleet")
	desc := "new words"
	res, err := svc.UpdateRole(ctx, "test", "fleet", "worker", rotate.RolePatch{Description: &desc})
	if err != nil || res.ScopeChanged || res.Role.Description != desc {
		t.Fatalf("description change = %+v, %v; want no scope change", res, err)
	}
	if after, _ := svc.Account(ctx, "fleet"); after.JWT != before.JWT {
		t.Fatal("a description change re-signed the account")
	}
	// The same permissions again change nothing either.
	same := workerTemplate().Permissions
	if res, err = svc.UpdateRole(ctx, "test", "fleet", "worker", rotate.RolePatch{Template: rotatord.UserTemplatePatch{Permissions: &same}}); err != nil || res.ScopeChanged {
		t.Fatalf("same permissions = %+v, %v; want no scope change", res, err)
	}

	subs := int64(7)
	res, err = svc.UpdateRole(ctx, "test", "fleet", "worker", rotate.RolePatch{Template: rotatord.UserTemplatePatch{Limits: &rotatord.UserLimitsPatch{Subs: &subs}}})
	if err != nil || !res.ScopeChanged || res.Role.Template.Limits.Subs != 7 || res.Role.Template.Limits.Payload != -1 {
		t.Fatalf("limits change = %+v, %v; want the scope changed", res, err)
	}
	if us := roleScope(t, svc, "fleet", role.SigningKey()); us == nil || us.Template.Subs != 7 {
		t.Fatalf("account JWT scope after the change = %+v", us)
	}
	// A deny subject reading a tag kate lacks would make the server refuse her.
	deny := workerTemplate().Permissions
	deny.Sub.Deny = []string{"teams.{{tag(team)}}.admin"}
	_, err = svc.UpdateRole(ctx, "test", "fleet", "worker", rotate.RolePatch{Template: rotatord.UserTemplatePatch{Permissions: &deny}})
	wantCode(t, "deny template without the agent's tag", err, rotatord.EINVALID, "agent kate")
	if r, _ := svc.Role(ctx, "fleet", "worker"); len(r.Template.Permissions.Sub.Deny) != 0 {
		t.Fatal("a refused change was stored")
	}
	_, err = svc.UpdateRole(ctx, "test", "fleet", "ghost", rotate.RolePatch{Description: &desc})
	wantCode(t, "unknown role", err, rotatord.ENOTFOUND, "ghost")
}

// A role in use cannot be deleted, nor one whose key still signs a valid
// credential of an agent that left it; once that agent rotated, it can.
func TestDeleteRole(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	svc, _ := newService(t, clk)
	ctx := context.Background()
	svc.CreateAccount(ctx, "test", rotate.AccountInput{Name: "fleet"})
	role, err := svc.CreateRole(ctx, "test", "fleet", rotate.RoleInput{Name: "worker", Template: workerTemplate()})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.CreateAgent(ctx, "test", rotate.AgentInput{Name: "kate", Account: "fleet", Role: "worker"}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "delete a role with agents", svc.DeleteRole(ctx, "test", "fleet", "worker"), rotatord.ECONFLICT, "has 1 agents")

	// Out of the role, with permissions of her own: her credential is still the role's.
	none := ""
	own := rotatord.Permissions{Pub: rotatord.PermissionList{Allow: []string{"x.>"}}}
	g, err := svc.UpdateAgent(ctx, "test", "kate", rotate.AgentPatch{Role: &none, Permissions: &own})
	if err != nil || g.Role != "" || g.Permissions.Pub.Allow[0] != "x.>" {
		t.Fatalf("leave the role = %+v, %v", g, err)
	}
	wantCode(t, "delete while a credential is signed by it", svc.DeleteRole(ctx, "test", "fleet", "worker"), rotatord.ECONFLICT, "rotate them first")

	rotateAgent(t, svc, "kate")
	g, _ = svc.Agent(ctx, "kate")
	uc := userClaims(t, g.Active.JWT)
	if uc.Issuer == role.SigningKey() || !uc.Pub.Allow.Contains("x.>") {
		t.Fatalf("after the rotation kate's JWT is signed by %s with %v", uc.Issuer, uc.Pub.Allow)
	}
	if err := svc.DeleteRole(ctx, "test", "fleet", "worker"); err != nil {
		t.Fatalf("delete an unused role: %v", err)
	}
	if us := roleScope(t, svc, "fleet", role.SigningKey()); us != nil {
		t.Fatal("the deleted role's key is still in the account JWT")
	}
	if _, err := svc.Role(ctx, "fleet", "worker"); !errors.Is(err, rotatord.ErrNotFound) {
		t.Fatalf("deleted role: %v", err)
	}
	// An account without agents goes with its roles.
	svc.CreateAccount(ctx, "test", rotate.AccountInput{Name: "tmp"})
	if _, err := svc.CreateRole(ctx, "test", "tmp", rotate.RoleInput{Name: "r"}); err != nil {
		t.Fatal(err)
	}
	if err := svc.DeleteAccount(ctx, "test", "tmp"); err != nil {
		t.Fatalf("delete an account with a role: %v", err)
	}
	// A template too large for the account JWT is refused.
	var huge []string
	for i := range 256 {
		huge = append(huge, fmt.Sprintf("%s.%d", strings.Repeat("x", 300), i))
	}
	big := rotatord.Permissions{Pub: rotatord.PermissionList{Allow: huge}, Sub: rotatord.PermissionList{Allow: huge}}
	_, err = svc.CreateRole(ctx, "test", "fleet", rotate.RoleInput{Name: "huge", Template: rotatord.UserTemplate{Permissions: big}})
	wantCode(t, "huge template", err, rotatord.EINVALID, "bytes in the account JWT")
}

// Moving into a role clears the agent's own claims; the next credentials
// are the role's. Own claims on an agent of a role are refused.
func TestAgentJoinsRole(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	svc, _ := newService(t, clk)
	ctx := context.Background()
	svc.CreateAccount(ctx, "test", rotate.AccountInput{Name: "fleet"})
	role, _ := svc.CreateRole(ctx, "test", "fleet", rotate.RoleInput{Name: "worker", Template: workerTemplate()})
	if _, _, err := svc.CreateAgent(ctx, "test", rotate.AgentInput{Name: "kate", Account: "fleet", Src: []string{"10.0.0.0/8"},
		Permissions: rotatord.Permissions{Pub: rotatord.PermissionList{Allow: []string{"x.>"}}}}); err != nil {
		t.Fatal(err)
	}
	worker := "worker"
	g, err := svc.UpdateAgent(ctx, "test", "kate", rotate.AgentPatch{Role: &worker})
	if err != nil || g.Role != "worker" || len(g.Permissions.Pub.Allow) != 0 || len(g.Src) != 0 {
		t.Fatalf("join = role %q perms %+v src %v, %v", g.Role, g.Permissions, g.Src, err)
	}
	own := rotatord.Permissions{Pub: rotatord.PermissionList{Allow: []string{"y"}}}
	_, err = svc.UpdateAgent(ctx, "test", "kate", rotate.AgentPatch{Permissions: &own})
	wantCode(t, "own permissions on a role's agent", err, rotatord.EINVALID, "exclude each other")
	tags := []string{"team:a.b"}
	_, err = svc.UpdateAgent(ctx, "test", "kate", rotate.AgentPatch{Tags: &tags})
	wantCode(t, "tags the role cannot use", err, rotatord.EINVALID, "one subject token")
	ghost := "ghost"
	_, err = svc.UpdateAgent(ctx, "test", "kate", rotate.AgentPatch{Role: &ghost})
	wantCode(t, "unknown role", err, rotatord.EINVALID, "does not exist")
	rotateAgent(t, svc, "kate")
	g, _ = svc.Agent(ctx, "kate")
	if uc := userClaims(t, g.Active.JWT); uc.Issuer != role.SigningKey() || !uc.HasEmptyPermissions() {
		t.Fatalf("after joining and rotating: issuer %s, permissions %+v", uc.Issuer, uc.UserPermissionLimits)
	}
}

// A user JWT whose CONNECT line would not fit max_control_line is refused
// on create and on change, with its size and the way out; a role holds the
// same subjects and keeps the JWT small. A larger setting lets it through.
func TestControlLine(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	svc, store, sealer := newSealedService(t, clk)
	ctx := context.Background()
	svc.CreateAccount(ctx, "test", rotate.AccountInput{Name: "fleet"})
	var subjects, templated []string
	for i := range 200 {
		subjects = append(subjects, fmt.Sprintf("svc.kate.s%03d", i))
		templated = append(templated, fmt.Sprintf("svc.{{name()}}.s%03d", i))
	}
	big := rotatord.Permissions{Pub: rotatord.PermissionList{Allow: subjects}}
	_, _, err := svc.CreateAgent(ctx, "test", rotate.AgentInput{Name: "kate", Account: "fleet", Permissions: big})
	wantCode(t, "200 own subjects", err, rotatord.EINVALID, "max_control_line of 4096")
	for _, want := range []string{"CONNECT line of", "role", "ROTATORD_MAX_CONTROL_LINE"} {
		if !strings.Contains(rotatord.ErrorMessage(err), want) {
			t.Errorf("size message %q lacks %q", rotatord.ErrorMessage(err), want)
		}
	}
	if _, err := svc.Agent(ctx, "kate"); !errors.Is(err, rotatord.ErrNotFound) {
		t.Fatalf("refused agent exists: %v", err)
	}

	if _, err := svc.CreateRole(ctx, "test", "fleet", rotate.RoleInput{Name: "svc",
		Template: rotatord.UserTemplate{Permissions: rotatord.Permissions{Pub: rotatord.PermissionList{Allow: templated}}}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.CreateAgent(ctx, "test", rotate.AgentInput{Name: "kate", Account: "fleet", Role: "svc"}); err != nil {
		t.Fatalf("the same subjects in a role: %v", err)
	}

	// A change is checked the same way and leaves the agent as it was.
	small := rotatord.Permissions{Pub: rotatord.PermissionList{Allow: subjects[:5]}}
	if _, _, err := svc.CreateAgent(ctx, "test", rotate.AgentInput{Name: "lee", Account: "fleet", Permissions: small}); err != nil {
		t.Fatal(err)
	}
	_, err = svc.UpdateAgent(ctx, "test", "lee", rotate.AgentPatch{Permissions: &big})
	wantCode(t, "patch to 200 subjects", err, rotatord.EINVALID, "max_control_line")
	if g, _ := svc.Agent(ctx, "lee"); len(g.Permissions.Pub.Allow) != 5 {
		t.Fatalf("refused patch changed the agent: %d subjects", len(g.Permissions.Pub.Allow))
	}

	// Servers with a larger max_control_line, and rotatord told so.
	wide := rotate.New(rotate.Config{Store: store, Sealer: sealer, Now: clk.Now, NoJitter: true, MaxControlLine: 16384})
	if _, _, err := wide.CreateAgent(ctx, "test", rotate.AgentInput{Name: "max", Account: "fleet", Permissions: big}); err != nil {
		t.Fatalf("200 subjects with max_control_line 16384: %v", err)
	}
}

// rotatord's own system-account user is not an agent: default deny does
// not apply to it.
func TestSystemUserAllowed(t *testing.T) {
	svc, _ := newService(t, &fakeClock{t: time.Now()})
	token, _, err := svc.MintSystemUser(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	uc := userClaims(t, token)
	if !uc.Pub.Allow.Contains(">") || !uc.Sub.Allow.Contains(">") || len(uc.Pub.Deny)+len(uc.Sub.Deny) != 0 {
		t.Fatalf("system user permissions = %+v", uc.Permissions)
	}
}
