package rotate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/jwtissue"
)

// Proof is a parsed proof of possession from an agent request.
type Proof struct {
	Header string // the Authorization header
	Method string
	Path   string
	Source string // remote address, for the audit trail
}

// authenticateAgent checks a proof of possession for the named agent: the
// key must be the agent's active or pending one, the time within ±60 s,
// the signature valid, and the proof unused. Every refusal is audited.
func (s *Service) authenticateAgent(ctx context.Context, name string, p Proof) (*rotatord.Agent, *rotatord.Credential, error) {
	fail := func(code, key, why string) error {
		err := s.audit(ctx, Actor("agent:"+name), "agent.auth_failed", rotatord.AuditEvent{Agent: name, PublicKey: key,
			Details: map[string]any{"reason": why, "source": p.Source, "method": p.Method, "path": p.Path}})
		if err != nil {
			s.log.Warn("audit agent auth failure", "agent", name, "err", err)
		}
		return rotatord.Errorf(code, "%s", why)
	}
	pub, unix, sig, err := rotatord.ParseProof(p.Header)
	if err != nil {
		return nil, nil, fail(rotatord.EUNAUTHORIZED, "", rotatord.ErrorMessage(err))
	}
	if err := jwtissue.ValidateUserKey(pub); err != nil {
		return nil, nil, fail(rotatord.EUNAUTHORIZED, "", "proof key is not a user public key")
	}
	now := s.now()
	at := time.Unix(unix, 0)
	if at.Before(now.Add(-rotatord.ProofWindow)) || at.After(now.Add(rotatord.ProofWindow)) {
		return nil, nil, fail(rotatord.EUNAUTHORIZED, pub, "proof timestamp is more than 60s away from the server's clock")
	}
	kp, err := nkeys.FromPublicKey(pub)
	if err != nil {
		return nil, nil, fail(rotatord.EUNAUTHORIZED, pub, "proof key is not a user public key")
	}
	if err := kp.Verify(rotatord.ProofMessage(p.Method, p.Path, unix), sig); err != nil {
		return nil, nil, fail(rotatord.EUNAUTHORIZED, pub, "bad proof signature")
	}
	cred, err := s.store.FindCredentialByPublicKey(ctx, pub)
	if errors.Is(err, rotatord.ErrNotFound) {
		return nil, nil, fail(rotatord.EFORBIDDEN, pub, "key is not a key of this agent")
	}
	if err != nil {
		return nil, nil, err
	}
	g, err := s.store.FindAgentByName(ctx, name)
	if errors.Is(err, rotatord.ErrNotFound) || (err == nil && g.ID != cred.AgentID) {
		return nil, nil, fail(rotatord.EFORBIDDEN, pub, "key is not a key of this agent")
	}
	if err != nil {
		return nil, nil, err
	}
	if g.State != rotatord.AgentActive || (cred.State != rotatord.CredentialActive && cred.State != rotatord.CredentialPending) {
		return nil, nil, fail(rotatord.EFORBIDDEN, pub, "key is revoked")
	}
	// Only a signature that verified is recorded, so junk cannot fill the table.
	if err := s.store.UseProof(ctx, sig, at.Add(rotatord.ProofWindow)); errors.Is(err, rotatord.ErrConflict) {
		return nil, nil, fail(rotatord.EUNAUTHORIZED, pub, "proof already used (replay)")
	} else if err != nil {
		return nil, nil, err
	}
	return g, cred, nil
}

// AgentCreds returns the newest creds file for the agent that proves
// possession of its active or pending key. It returns ENOTMODIFIED when the
// presented key already is the newest.
func (s *Service) AgentCreds(ctx context.Context, name string, p Proof) ([]byte, error) {
	g, presented, err := s.authenticateAgent(ctx, name, p)
	if err != nil {
		return nil, err
	}
	r, err := s.store.InFlightRotation(ctx, g.ID)
	if err != nil {
		return nil, err
	}
	if r == nil || r.State == rotatord.RotationIssued || r.NewKey == presented.PublicKey {
		return nil, rotatord.ErrNotModified
	}
	cred, err := s.store.FindCredential(ctx, r.NewCredentialID)
	if err != nil {
		return nil, err
	}
	if cred.SeedEnc == nil {
		// The agent generated this key itself and holds the seed.
		return nil, rotatord.ErrNotModified
	}
	seed, err := s.sealer.Open(cred.SeedEnc, []byte(cred.PublicKey))
	if err != nil {
		return nil, fmt.Errorf("open seed of %s: %w", cred.PublicKey, err)
	}
	creds, err := jwtissue.Creds(cred.JWT, seed)
	if err != nil {
		return nil, err
	}
	if err := s.audit(ctx, Actor("agent:"+name), "credential.fetch", rotatord.AuditEvent{Account: g.Account, Agent: g.Name,
		PublicKey: cred.PublicKey, Rotation: r.ID, Details: map[string]any{"source": p.Source, "proof_key": presented.PublicKey}}); err != nil {
		return nil, err
	}
	return creds, nil
}

// AgentKeyResult is what an agent gets back for a key it generated.
type AgentKeyResult struct {
	Rotation   *rotatord.Rotation
	Credential *rotatord.Credential
}

// AgentKey starts a rotation from a key pair the agent generated itself:
// rotatord issues a JWT for pub and the seed never leaves the agent. The
// caller proves possession of its current key. A key that is not a user
// key is EINVALID; one already used (by this agent or another) ECONFLICT.
func (s *Service) AgentKey(ctx context.Context, name, pub string, p Proof) (*AgentKeyResult, error) {
	g, presented, err := s.authenticateAgent(ctx, name, p)
	if err != nil {
		return nil, err
	}
	if err := jwtissue.ValidateUserKey(pub); err != nil {
		return nil, err
	}
	if _, err := s.store.FindCredentialByPublicKey(ctx, pub); err == nil {
		return nil, rotatord.Errorf(rotatord.ECONFLICT, "public key was used before: generate a new key pair")
	} else if !errors.Is(err, rotatord.ErrNotFound) {
		return nil, err
	}
	r, err := s.startRotation(ctx, Actor("agent:"+name), g.Name, rotatord.TriggerAgent, pub)
	if err != nil {
		return nil, err
	}
	if r, err = s.advance(ctx, r.ID, false); err != nil {
		return nil, err
	}
	cred, err := s.store.FindCredential(ctx, r.NewCredentialID)
	if err != nil {
		return nil, err
	}
	s.log.Info("agent sent its own key", "agent", name, "key", pub, "rotation", r.ID, "proof_key", presented.PublicKey)
	return &AgentKeyResult{Rotation: r, Credential: cred}, nil
}
