package rotate

import (
	"context"
	"fmt"
	"time"

	"github.com/rotatord/rotatord"
)

// When a signing key is removed before every agent is on the new one (an
// emergency rotation, or an operator completing a staged one), the old
// credentials of the agents not back yet stop working in NATS. Rolling such
// an agent's rotation back at its deadline would revoke the only
// credentials that can work and leave it the dead ones: the rotation is
// held instead, its deadline moved on (at most to the new credentials'
// expiry), with an alert, so the agent finds its new credentials whenever
// it comes back (a poll agent still authenticates to rotatord with its old
// key).

// signedByRetired reports, by signing key, which of the credentials were
// signed by a signing key rotatord retired.
func (s *Service) signedByRetired(ctx context.Context, creds map[int64]*rotatord.Credential) (map[string]bool, error) {
	var keys []string
	for _, c := range creds {
		if c.SigningKey != "" {
			keys = append(keys, c.SigningKey)
		}
	}
	return s.store.RetiredSigningKeys(ctx, keys)
}

// stampSignedByRetired records, for confirmed rotations whose old
// credentials were signed by a retired key (rotation IDs by account), that
// the account's stored JWT already refuses their old keys: its signer is
// out of it. It sets their ResignVersion, which the caller stores with the
// rotations' confirmation (UpdateRotations), in the same write. The
// version is read after the signing key was found retired, so it is one
// without the key. The push of that version (or the next settle, when it
// was pushed already) completes them, without a revocation entry.
func (s *Service) stampSignedByRetired(ctx context.Context, items []completion, byAccount map[int64][]string) error {
	if len(byAccount) == 0 {
		return nil
	}
	versions := make(map[string]int64)
	for acc, ids := range byAccount {
		v, err := s.store.AccountVersion(ctx, acc)
		if err != nil {
			return err
		}
		for _, id := range ids {
			versions[id] = v
		}
	}
	for _, it := range items {
		if v, ok := versions[it.r.ID]; ok && it.r.ResignVersion == 0 {
			it.r.ResignVersion = v
		}
	}
	return nil
}

// hold holds a distributed rotation past its deadline instead of rolling it
// back when its old credentials were signed by a retired key and its new
// ones were not and have not expired. It reports whether it held it.
func (s *Service) hold(ctx context.Context, g *rotatord.Agent, r *rotatord.Rotation, now time.Time) (bool, func(), error) {
	if r.OldCredentialID == 0 {
		return false, nil, nil
	}
	creds, err := s.store.FindCredentials(ctx, []int64{r.OldCredentialID, r.NewCredentialID})
	if err != nil {
		return false, nil, err
	}
	old, cur := creds[r.OldCredentialID], creds[r.NewCredentialID]
	if old == nil || cur == nil || !now.Before(cur.ExpiresAt) {
		return false, nil, nil
	}
	dead, err := s.signedByRetired(ctx, creds)
	if err != nil {
		return false, nil, err
	}
	if !dead[old.SigningKey] || dead[cur.SigningKey] {
		return false, nil, nil
	}
	deadline := now.Add(g.Rotation.Grace)
	if deadline.After(cur.ExpiresAt) {
		deadline = cur.ExpiresAt
	}
	first := r.Reason == ""
	r.Deadline = &deadline
	r.Reason = fmt.Sprintf("held: the agent did not reconnect with its new key before the deadline, and its old credentials "+
		"stopped working when signing key %s was removed; the new ones wait for it until they expire at %s "+
		"(a poll agent fetches them with its old key; otherwise reissue it)", old.SigningKey, cur.ExpiresAt.UTC().Format(time.RFC3339))
	if err := s.store.UpdateRotation(ctx, r); err != nil {
		return false, nil, err
	}
	if !first {
		return true, nil, nil
	}
	if err := s.store.AddAlert(ctx, &rotatord.Alert{Kind: AlertRotationHeld, Severity: rotatord.SeverityWarning,
		Account: g.Account, Agent: g.Name, Rotation: r.ID, Reason: r.Reason}); err != nil {
		return false, nil, err
	}
	if err := s.audit(ctx, SystemActor, "rotation.hold", rotatord.AuditEvent{Account: g.Account, Agent: g.Name,
		PublicKey: r.NewKey, Rotation: r.ID, Details: map[string]any{"deadline": deadline, "old_signing_key": old.SigningKey}}); err != nil {
		return false, nil, err
	}
	return true, s.kickAlerts, nil
}
