package registry_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rotatord/rotatord"
)

// Stats: the largest accounts one by one, at most top of them, totals over
// all; credentials expiring within the hour of the given time, of active
// agents and active credentials only.
func TestStats(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := context.Background()
	var accs []*rotatord.Account
	for i := range 5 {
		a := account(fmt.Sprintf("acc%d", i))
		a.JWT = strings.Repeat("j", 100*(i+1))
		if err := s.CreateAccount(ctx, a); err != nil {
			t.Fatal(err)
		}
		accs = append(accs, a)
	}
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	agent := func(name, state string, expires time.Time, credState string) {
		t.Helper()
		g := &rotatord.Agent{AccountID: accs[0].ID, Name: name, Rotation: rotatord.RotationPolicy{Schedule: "@daily", Grace: time.Hour},
			Delivery: rotatord.DeliveryPoll, State: state}
		if err := s.CreateAgent(ctx, g); err != nil {
			t.Fatal(err)
		}
		c := &rotatord.Credential{AgentID: g.ID, PublicKey: "U" + strings.ToUpper(name), JWT: "jwt", JWTID: "jti-" + name,
			IssuedAt: now.Add(-time.Hour), ExpiresAt: expires, State: credState}
		if err := s.CreateCredential(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	agent("soon", rotatord.AgentActive, now.Add(30*time.Minute), rotatord.CredentialActive)
	agent("gone", rotatord.AgentActive, now.Add(-time.Hour), rotatord.CredentialActive)
	agent("later", rotatord.AgentActive, now.Add(2*time.Hour), rotatord.CredentialActive)
	agent("pending", rotatord.AgentActive, now.Add(10*time.Minute), rotatord.CredentialPending)
	agent("revoked", rotatord.AgentRevoked, now.Add(10*time.Minute), rotatord.CredentialActive)

	st, err := s.Stats(ctx, now, 3)
	if err != nil {
		t.Fatal(err)
	}
	if st.Accounts != 5 || st.JWTBytes != 1500 || st.Revocations != 0 || st.CredentialsExpiring != 2 ||
		st.Agents[rotatord.AgentActive] != 4 || st.Agents[rotatord.AgentRevoked] != 1 {
		t.Fatalf("Stats = %+v", st)
	}
	var names []string
	for _, a := range st.Largest {
		names = append(names, fmt.Sprintf("%s:%d", a.Name, a.JWTBytes))
	}
	if got := strings.Join(names, " "); got != "acc4:500 acc3:400 acc2:300" {
		t.Fatalf("largest = %s", got)
	}
}
