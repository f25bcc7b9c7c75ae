package rotate

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/jwtissue"
	"github.com/rotatord/rotatord/internal/refusals"
)

// Proof is an agent request's proof of possession as it arrived.
type Proof struct {
	Header string // the Authorization header
	Method string
	// Target is the request's escaped path, with "?query" when it has one.
	Target string
	Body   []byte
	Source string // remote address, for the audit trail
}

// AgentProof is a proof whose form, time and signature CheckProof accepted:
// what is left to check needs the database (the key's owner and state, the
// JWT's expiry, replays).
type AgentProof struct {
	Agent     string // the agent name of the path
	PublicKey string
	Unix      int64
	Sig       []byte
	Source    string
}

// Refused is a refusal of an agent request: Reason (one of the refusals
// package's reasons) says why, for the aggregated audit events; Err is the
// *rotatord.Error shown to the caller.
type Refused struct {
	Reason string
	Err    error
}

// Error returns the caller-safe message.
func (e *Refused) Error() string { return e.Err.Error() }

// Unwrap returns the *rotatord.Error.
func (e *Refused) Unwrap() error { return e.Err }

func refuse(reason, code, format string, args ...any) error {
	return &Refused{Reason: reason, Err: rotatord.Errorf(code, format, args...)}
}

// RefusalReason returns why an agent request was refused, when err is a
// refusal (not a failure of rotatord or a request of an authenticated
// agent that broke a rule).
func RefusalReason(err error) (string, bool) {
	var r *Refused
	if errors.As(err, &r) {
		return r.Reason, true
	}
	return "", false
}

// CheckProof checks, without the database, an agent request's proof of
// possession for the agent name of its path: the name is valid, the header
// is a version 2 NKey proof by a user key, its time within ProofWindow of
// now, and its signature verifies over the method, target, time and body
// hash. Every error is a *Refused: EINVALID for a bad name, EUNAUTHORIZED
// otherwise (a version 1 proof says so). No error quotes the request.
func CheckProof(name string, p Proof, now time.Time) (*AgentProof, error) {
	if rotatord.ValidateName("agent", name) != nil {
		return nil, refuse(refusals.ReasonInvalidName, rotatord.EINVALID,
			"agent name is invalid: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
	}
	pub, unix, sig, err := rotatord.ParseProof(p.Header)
	if err != nil {
		reason := refusals.ReasonMalformed
		if !strings.HasPrefix(p.Header, rotatord.ProofScheme+" ") {
			reason = refusals.ReasonMissingProof
		}
		return nil, &Refused{Reason: reason, Err: err}
	}
	// Decoded once and verified with crypto/ed25519 directly (nkeys would
	// decode the key twice); the signature check itself is the boundary.
	key, err := jwtissue.UserPublicKey(pub)
	if err != nil {
		return nil, refuse(refusals.ReasonMalformed, rotatord.EUNAUTHORIZED, "proof key is not a user public key")
	}
	at := time.Unix(unix, 0)
	if at.Before(now.Add(-rotatord.ProofWindow)) || at.After(now.Add(rotatord.ProofWindow)) {
		return nil, refuse(refusals.ReasonStale, rotatord.EUNAUTHORIZED,
			"proof timestamp is more than 60s away from the server's clock")
	}
	if !ed25519.Verify(key, rotatord.ProofMessage(p.Method, p.Target, unix, rotatord.BodyHash(p.Body)), sig) {
		path, _, _ := strings.Cut(p.Target, "?")
		if ed25519.Verify(key, rotatord.ProofMessageV1(p.Method, path, unix), sig) {
			return nil, refuse(refusals.ReasonProofV1, rotatord.EUNAUTHORIZED,
				"version 1 proofs are no longer accepted: sign rotatord-v2\\n<METHOD>\\n<path?query>\\n<unix seconds>\\n<hex SHA-256 of the body> (update the agent)")
		}
		return nil, refuse(refusals.ReasonBadSignature, rotatord.EUNAUTHORIZED, "bad proof signature")
	}
	return &AgentProof{Agent: name, PublicKey: pub, Unix: unix, Sig: sig, Source: p.Source}, nil
}

// CheckKeyProof checks, without the database, the body of an own-key POST
// whose proof CheckProof accepted: pub must be a user public key other than
// the proof's, and keyProof the new key's signature over
// rotatord.KeyProofMessage(agent, pub, time of the proof). Errors are
// *Refused: EINVALID for the key (never quoted), EUNAUTHORIZED for the key
// proof.
func CheckKeyProof(ap *AgentProof, pub, keyProof string) error {
	key, err := jwtissue.UserPublicKey(pub)
	if err != nil {
		return refuse(refusals.ReasonBadBody, rotatord.EINVALID, "public_key is not a user public key (it starts with U and has 56 characters)")
	}
	if pub == ap.PublicKey {
		return refuse(refusals.ReasonBadBody, rotatord.EINVALID, "public_key is the key that signed the request: generate a new key pair")
	}
	if keyProof == "" {
		return refuse(refusals.ReasonBadKeyProof, rotatord.EUNAUTHORIZED,
			"missing key_proof: the new key's signature over rotatord-v2-key\\n<agent name>\\n<new public key>\\n<unix seconds of the proof>")
	}
	sig, err := rotatord.DecodeSignature(keyProof)
	if err != nil {
		return refuse(refusals.ReasonBadKeyProof, rotatord.EUNAUTHORIZED, "malformed key_proof: want a base64url ed25519 signature")
	}
	if !ed25519.Verify(key, rotatord.KeyProofMessage(ap.Agent, pub, ap.Unix), sig) {
		return refuse(refusals.ReasonBadKeyProof, rotatord.EUNAUTHORIZED,
			"bad key_proof: it must be the new key's signature over rotatord-v2-key\\n<agent name>\\n<new public key>\\n<unix seconds of the proof>")
	}
	return nil
}

// authenticateAgent finishes checking a proof with the database: the key
// must be the agent's active or pending one, its JWT unexpired, and the
// proof unused. It records the proof as used only after every other check
// passed, so a refused request never burns a genuine one. Refusals are
// *Refused: EFORBIDDEN (not the agent's key, revoked), ECREDEXPIRED,
// EUNAUTHORIZED (replay).
func (s *Service) authenticateAgent(ctx context.Context, ap *AgentProof) (*rotatord.AgentKey, error) {
	k, err := s.checkAgentKey(ctx, ap)
	if err != nil {
		return nil, err
	}
	if err := s.useProof(ctx, ap, nil); err != nil {
		return nil, err
	}
	return k, nil
}

// checkAgentKey reads what answering ap needs (one round trip) and does
// every check of authenticateAgent but the replay check: the caller must
// call useProof before it answers or changes anything.
func (s *Service) checkAgentKey(ctx context.Context, ap *AgentProof) (*rotatord.AgentKey, error) {
	k, err := s.store.FindAgentKey(ctx, ap.Agent, ap.PublicKey)
	if errors.Is(err, rotatord.ErrNotFound) || (err == nil && k.Agent.ID != k.Presented.AgentID) {
		return nil, refuse(refusals.ReasonForeignKey, rotatord.EFORBIDDEN, "key is not a key of this agent")
	}
	if err != nil {
		return nil, err
	}
	g, cred := k.Agent, k.Presented
	if g.State != rotatord.AgentActive || (cred.State != rotatord.CredentialActive && cred.State != rotatord.CredentialPending) {
		return nil, refuse(refusals.ReasonRevokedKey, rotatord.EFORBIDDEN, "key is revoked")
	}
	if now := s.now(); !now.Before(cred.ExpiresAt) {
		return nil, refuse(refusals.ReasonExpired, rotatord.ECREDEXPIRED,
			"the JWT of this key expired at %s: an operator must reissue the agent (rotatord agents reissue %s)",
			cred.ExpiresAt.UTC().Format(time.RFC3339), g.Name)
	}
	return k, nil
}

// useProof records ap's proof as used, with e (the audit event of what it
// is used for) in the same statement when e is not nil, and refuses a proof
// used before (EUNAUTHORIZED, a replay). The proof's own time, not this
// replica's clock, bounds the record; pruning waits ProofReplayMargin more
// by the database's clock.
func (s *Service) useProof(ctx context.Context, ap *AgentProof, e *rotatord.AuditEvent) error {
	expires := time.Unix(ap.Unix, 0).Add(rotatord.ProofWindow)
	var err error
	if e == nil {
		err = s.store.UseProof(ctx, ap.Sig, expires)
	} else {
		err = s.store.UseProofFor(ctx, ap.Sig, expires, e)
	}
	if errors.Is(err, rotatord.ErrConflict) {
		return refuse(refusals.ReasonReplay, rotatord.EUNAUTHORIZED, "proof already used (replay)")
	}
	return err
}

// AgentCreds returns the newest creds file for the agent whose proof
// CheckProof accepted, once the database confirms it (authenticateAgent).
// It returns ENOTMODIFIED when the presented key already is the newest,
// and EDELIVERYMISMATCH for an agent whose delivery is not poll: its creds
// go to Vault or a file, never over HTTP.
//
// A fetch of creds that are ready costs two round trips to the database:
// one read (checkAgentKey), and one statement that records the proof and
// the fetch's audit event together. When a whole fleet is dropped at once
// (an emergency signing-key rotation), every agent fetches in the same
// seconds.
func (s *Service) AgentCreds(ctx context.Context, ap *AgentProof) ([]byte, error) {
	k, err := s.checkAgentKey(ctx, ap)
	if err != nil {
		return nil, err
	}
	g, presented, r := k.Agent, k.Presented, k.InFlight
	if g.Delivery == rotatord.DeliveryPoll && r != nil && r.State != rotatord.RotationIssued && r.NewKey != presented.PublicKey &&
		k.Next != nil && k.Next.SeedEnc != nil {
		creds, e, err := s.credsFile(g, presented, r, k.Next, ap)
		if err != nil {
			return nil, err
		}
		if err := s.useProof(ctx, ap, e); err != nil {
			return nil, err
		}
		return creds, nil
	}
	if err := s.useProof(ctx, ap, nil); err != nil {
		return nil, err
	}
	if g.Delivery != rotatord.DeliveryPoll {
		return nil, rotatord.Errorf(rotatord.EDELIVERYMISMATCH,
			"agent %s has delivery %s: its credentials are not served over HTTP", g.Name, g.Delivery)
	}
	if r == nil {
		// A fleet rotation's current wave may be waiting for it (fleet.go).
		if r, err = s.startOwnReissue(ctx, g); err != nil {
			return nil, err
		}
	}
	if r == nil || r.State == rotatord.RotationIssued || r.NewKey == presented.PublicKey {
		return nil, rotatord.ErrNotModified
	}
	cred := k.Next // nil when r was not read with it (or was started just now)
	if cred == nil {
		if cred, err = s.store.FindCredential(ctx, r.NewCredentialID); err != nil {
			return nil, err
		}
	}
	if cred.SeedEnc == nil {
		// The agent generated this key itself and holds the seed.
		return nil, rotatord.ErrNotModified
	}
	creds, e, err := s.credsFile(g, presented, r, cred, ap)
	if err != nil {
		return nil, err
	}
	if err := s.audit(ctx, Actor(e.Actor), e.Action, *e); err != nil {
		return nil, err
	}
	return creds, nil
}

// credsFile opens the seed of cred, the new credential of r, and returns
// the creds file and the audit event of its fetch.
func (s *Service) credsFile(g *rotatord.Agent, presented *rotatord.Credential, r *rotatord.Rotation, cred *rotatord.Credential,
	ap *AgentProof) ([]byte, *rotatord.AuditEvent, error) {
	seed, err := s.sealer.Open(cred.SeedEnc, []byte(cred.PublicKey))
	if err != nil {
		return nil, nil, fmt.Errorf("open seed of %s: %w", cred.PublicKey, err)
	}
	creds, err := jwtissue.Creds(cred.JWT, seed)
	if err != nil {
		return nil, nil, err
	}
	return creds, &rotatord.AuditEvent{Actor: "agent:" + g.Name, Action: "credential.fetch", Account: g.Account, Agent: g.Name,
		PublicKey: cred.PublicKey, Rotation: r.ID, Details: map[string]any{"source": ap.Source, "proof_key": presented.PublicKey}}, nil
}

// AgentKeyResult is what an agent gets back for a key it generated.
type AgentKeyResult struct {
	Rotation   *rotatord.Rotation
	Credential *rotatord.Credential
	// Repeated is true when the key was the one of the agent's rotation in
	// flight already (a retry after a lost answer): nothing new started.
	Repeated bool
}

// AgentKey starts a rotation from a key pair the agent generated itself
// (pub, whose key proof CheckKeyProof accepted): rotatord issues a JWT for
// it and the seed never leaves the agent. The key of the agent's rotation
// in flight sent again gets that rotation back. Errors: the refusals of
// authenticateAgent; ETOOMANYREQUESTS (a *rotatord.RetryError) within the
// agent rotate interval of the agent's last own-key rotation; ECONFLICT for
// a key used before or while another rotation is in flight.
func (s *Service) AgentKey(ctx context.Context, ap *AgentProof, pub string) (*AgentKeyResult, error) {
	k, err := s.authenticateAgent(ctx, ap)
	if err != nil {
		return nil, err
	}
	g, presented := k.Agent, k.Presented
	if r := k.InFlight; r != nil && r.NewKey == pub && r.Trigger == rotatord.TriggerAgent {
		cred := k.Next
		if cred == nil {
			if cred, err = s.store.FindCredential(ctx, r.NewCredentialID); err != nil {
				return nil, err
			}
		}
		return &AgentKeyResult{Rotation: r, Credential: cred, Repeated: true}, nil
	}
	if _, err := s.store.FindCredentialByPublicKey(ctx, pub); err == nil {
		return nil, rotatord.Errorf(rotatord.ECONFLICT, "public key was used before: generate a new key pair")
	} else if !errors.Is(err, rotatord.ErrNotFound) {
		return nil, err
	}
	r, err := s.startRotation(ctx, Actor("agent:"+g.Name), g.Name, rotatord.TriggerAgent, pub)
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
	s.log.Info("agent sent its own key", "agent", g.Name, "key", pub, "rotation", r.ID, "proof_key", presented.PublicKey)
	return &AgentKeyResult{Rotation: r, Credential: cred}, nil
}

// Now is the service's clock (the one proofs are checked against).
func (s *Service) Now() time.Time { return s.now() }
