package rotate

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/jwtissue"
)

// KeyRotationStore is what signing-key rotations need from the registry.
type KeyRotationStore interface {
	OperatorSeed(ctx context.Context) ([]byte, error)
	UpdateOperator(ctx context.Context, op *rotatord.Operator) error
	AddStagedSigningKey(ctx context.Context, accountID int64, pub string, seedEnc []byte) error
	ActivateSigningKey(ctx context.Context, pub string) error
	RetireOperatorSigningKeys(ctx context.Context, keep string) ([]string, error)
	CreateKeyRotation(ctx context.Context, k *rotatord.KeyRotation) error
	UpdateKeyRotation(ctx context.Context, k *rotatord.KeyRotation) error
	FindKeyRotation(ctx context.Context, id string) (*rotatord.KeyRotation, error)
	LockKeyRotation(ctx context.Context, id string) (*rotatord.KeyRotation, bool, error)
	KeyRotationsInFlight(ctx context.Context, kind string) ([]string, error)
}

// OperatorProber asks the nats-servers which operators they trust
// ($SYS.REQ.SERVER.PING.VARZ). resolver.Pusher implements it.
type OperatorProber interface {
	TrustedOperators(ctx context.Context, wait time.Duration) ([]rotatord.ServerTrust, error)
}

// DefaultKeyRotationServerLive is Config.KeyRotationServerLive's default:
// how long an operator key rotation waits for a server that stopped
// answering before it goes on without it. A server restarts in seconds;
// this leaves time to edit its configuration in between.
const DefaultKeyRotationServerLive = 5 * time.Minute

// varzWait bounds one round of VARZ answers.
const varzWait = 2 * time.Second

// resignBudget bounds the re-signing one step does while it holds the key
// rotation's lock; the next step goes on where it stopped.
const resignBudget = 10 * time.Second

// The instructions an operator key rotation gives while it waits.
const (
	pasteBlock     = "paste the block from `rotatord nats-config` into the servers' configuration and restart them one by one"
	noNATS         = "rotatord is not connected to NATS: it cannot ask the servers which operator JWT they run"
	noServerAnswer = "no nats-server answered: rotatord asks every server of the cluster for its VARZ"
)

// StartOperatorKeyRotation starts the rotation of the operator's signing
// key: a new key is added to the operator JWT (both keys valid). The
// rotation then waits until every nats-server runs that JWT (VARZ reports
// it), re-signs every account with the new key and pushes it, removes the
// old keys from the operator JWT and waits again until every server runs
// that one; RunKeyRotations drives it. Errors: EUNSUPPORTED without NATS,
// or for an operator imported without its identity seed (which alone
// signs the operator JWT); ECONFLICT while one is in flight.
func (s *Service) StartOperatorKeyRotation(ctx context.Context, actor Actor) (*rotatord.KeyRotation, error) {
	if s.opProber == nil {
		return nil, rotatord.Errorf(rotatord.EUNSUPPORTED,
			"rotating the operator signing key needs rotatord's NATS connection (ROTATORD_NATS_URL): it asks every nats-server which operator JWT it runs before each step")
	}
	kp, err := jwtissue.NewKey(nkeys.PrefixByteOperator)
	if err != nil {
		return nil, err
	}
	kr := &rotatord.KeyRotation{Kind: rotatord.KeyRotationOperator, State: rotatord.KeyRotationAddingKey,
		NewKey: jwtissue.Public(kp), Actor: string(actor), Waiting: noServerAnswer + "; " + pasteBlock}
	var opKey string
	err = s.inTx(ctx, func(ctx context.Context) error {
		if err := s.store.LockOperator(ctx); err != nil {
			return err
		}
		ids, err := s.store.KeyRotationsInFlight(ctx, rotatord.KeyRotationOperator)
		if err != nil {
			return err
		}
		if len(ids) > 0 {
			return rotatord.Errorf(rotatord.ECONFLICT, "operator signing-key rotation %s is in flight: see GET /v1/key-rotations/%s", ids[0], ids[0])
		}
		op, oc, identity, err := s.operatorForSigning(ctx)
		if err != nil {
			return err
		}
		opKey = op.PublicKey
		kr.OldKeys = slices.Clone([]string(oc.SigningKeys))
		oc.SigningKeys.Add(kr.NewKey)
		if op.JWT, err = oc.Encode(identity); err != nil {
			return fmt.Errorf("sign operator jwt: %w", err)
		}
		if err := s.store.UpdateOperator(ctx, op); err != nil {
			return err
		}
		if err := s.store.AddStagedSigningKey(ctx, 0, kr.NewKey, s.seal(kp)); err != nil {
			return err
		}
		if err := s.store.CreateKeyRotation(ctx, kr); err != nil {
			return err
		}
		return s.audit(ctx, actor, "operator.signing_key.rotate", rotatord.AuditEvent{PublicKey: op.PublicKey,
			Details: map[string]any{"key_rotation": kr.ID, "new_key": kr.NewKey, "old_keys": kr.OldKeys}})
	})
	if err != nil {
		return nil, fmt.Errorf("start operator signing-key rotation: %w", err)
	}
	s.changed(ctx, opKey)
	s.log.Info("operator signing-key rotation started", "key_rotation", kr.ID, "key", kr.NewKey)
	kick(s.keyKick)
	return kr, nil
}

// operatorForSigning returns the operator, its JWT's claims and its
// identity key, which signs the operator JWT. EUNSUPPORTED for an operator
// imported without its identity seed.
func (s *Service) operatorForSigning(ctx context.Context) (*rotatord.Operator, *jwt.OperatorClaims, nkeys.KeyPair, error) {
	op, err := s.store.Operator(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	enc, err := s.store.OperatorSeed(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	if enc == nil {
		return nil, nil, nil, rotatord.Errorf(rotatord.EUNSUPPORTED,
			"operator %s was imported without its identity seed, which alone signs the operator JWT, so rotatord cannot add or remove its signing keys: import it again, with a keystore that holds its identity seed (nsc's keys folder), into a new rotatord database", op.Name)
	}
	seed, err := s.sealer.Open(enc, []byte(op.PublicKey))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("open operator identity seed: %w", err)
	}
	defer clear(seed)
	identity, err := jwtissue.FromSeed(seed, nkeys.PrefixByteOperator)
	if err != nil {
		return nil, nil, nil, err
	}
	oc, err := jwt.DecodeOperatorClaims(op.JWT)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("decode operator jwt: %w", err)
	}
	return op, oc, identity, nil
}

// RunKeyRotations moves operator signing-key rotations along every
// interval, and at once after one starts on this replica, until ctx ends.
func (s *Service) RunKeyRotations(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.keyKick:
		}
		if _, err := s.AdvanceKeyRotations(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("advance key rotations", "err", err)
		}
	}
}

// AdvanceKeyRotations moves every operator signing-key rotation in flight
// as far as it goes now (those another replica is moving are skipped), and
// returns how many steps it took.
func (s *Service) AdvanceKeyRotations(ctx context.Context) (int, error) {
	ids, err := s.store.KeyRotationsInFlight(ctx, rotatord.KeyRotationOperator)
	if err != nil {
		return 0, err
	}
	steps := 0
	var errs []error
	for _, id := range ids {
		for ctx.Err() == nil {
			moved, again, err := s.advanceOperatorKey(ctx, id)
			if err != nil {
				errs = append(errs, fmt.Errorf("key rotation %s: %w", id, err))
				break
			}
			if moved {
				steps++
			}
			if !moved && !again {
				break
			}
		}
	}
	return steps, errors.Join(errs...)
}

// advanceOperatorKey takes one step of an operator key rotation if it can,
// holding its row lock so that one replica at a time moves it. It reports
// whether the state changed, and whether to go on at once although it did
// not (re-signing stopped at its time budget).
func (s *Service) advanceOperatorKey(ctx context.Context, id string) (moved, again bool, err error) {
	var opKey string
	// Work that needs no lock of its own (asking the servers, re-signing
	// accounts in their own transactions) runs on outer, which carries no
	// transaction.
	outer := ctx
	err = s.inTx(ctx, func(ctx context.Context) error {
		kr, ok, err := s.store.LockKeyRotation(ctx, id)
		if err != nil || !ok {
			return err
		}
		op, err := s.store.Operator(ctx)
		if err != nil {
			return err
		}
		opKey = op.PublicKey
		from := kr.State
		switch kr.State {
		case rotatord.KeyRotationAddingKey, rotatord.KeyRotationRemovingKey:
			ready, err := s.checkServers(outer, kr, op.PublicKey)
			if err != nil {
				return err
			}
			if !ready {
				break
			}
			if kr.State == rotatord.KeyRotationAddingKey {
				// Every server trusts the new key: it signs from now on,
				// on every replica (signer reads the live key each time).
				if err := s.store.ActivateSigningKey(ctx, kr.NewKey); err != nil {
					return err
				}
				kr.State, kr.Waiting = rotatord.KeyRotationResigning, "re-signing the accounts with the new key"
				break
			}
			// A JWT signed by an old key before the switch must not be left.
			if notYet, owed, err := s.resignWithKey(outer, kr); err != nil || notYet+owed > 0 {
				again = notYet > 0
				return err
			}
			// Waiting keeps checkServers' note of servers not waited for.
			kr.State = rotatord.KeyRotationCompleted
		case rotatord.KeyRotationResigning:
			notYet, owed, err := s.resignWithKey(outer, kr)
			if err != nil {
				return err
			}
			if notYet+owed > 0 {
				// Stopped at the budget (go on at once), or pushes are owed
				// (RunPushRetry sends them; the next round looks again).
				again = notYet > 0
				break
			}
			if err := s.removeOldOperatorKeys(ctx, kr); err != nil {
				return err
			}
			kr.State = rotatord.KeyRotationRemovingKey
			kr.Waiting = "waiting for the nats-servers to run the operator JWT without the old signing key (they trust it until then): " + pasteBlock
		}
		if err := s.store.UpdateKeyRotation(ctx, kr); err != nil {
			return err
		}
		if moved = kr.State != from; moved {
			s.log.Info("operator signing-key rotation step", "key_rotation", kr.ID, "state", kr.State, "from", from)
			return s.audit(ctx, SystemActor, "operator.signing_key."+kr.State, rotatord.AuditEvent{PublicKey: op.PublicKey,
				Details: map[string]any{"key_rotation": kr.ID, "new_key": kr.NewKey, "old_keys": kr.OldKeys, "servers": serverNames(kr.Servers)}})
		}
		return nil
	})
	if err != nil {
		return false, false, err
	}
	if moved {
		s.changed(ctx, opKey)
	}
	return moved, again, nil
}

// checkServers asks the servers which operator JWT they run, merges their
// answers into kr.Servers (by name: a restarted server has a new ID) and
// sets kr.Waiting. It reports whether every server the rotation waits for
// runs an operator JWT that lets it past its state. The servers it knows
// are those that answered it once, and those the cluster tracking heard
// from lately (nats_servers) that did not answer yet. It waits for servers
// that are behind, and for those behind that stopped answering less than
// the server live time ago (restarting, most likely); a server silent for
// longer is not waited for. At least one server must answer.
func (s *Service) checkServers(ctx context.Context, kr *rotatord.KeyRotation, opKey string) (bool, error) {
	trusts, err := s.opProber.TrustedOperators(ctx, varzWait)
	if err != nil {
		kr.Waiting = noNATS
		s.log.Info("operator key rotation: cannot ask the servers", "key_rotation", kr.ID, "err", err)
		return false, nil
	}
	known, err := s.store.Servers(ctx)
	if err != nil {
		return false, err
	}
	now := s.now()
	byName := map[string]rotatord.KeyServer{}
	for _, ks := range kr.Servers {
		byName[ks.Name] = ks
	}
	for _, t := range trusts {
		ks := rotatord.KeyServer{Name: t.ServerName, ID: t.ServerID, TrustsNew: t.Trusts(opKey, kr.NewKey), LastSeen: now}
		for _, old := range kr.OldKeys {
			ks.TrustsOld = ks.TrustsOld || t.Trusts(opKey, old)
		}
		byName[ks.Name] = ks
	}
	for _, srv := range known {
		name := cmp.Or(srv.Name, srv.ID)
		if _, ok := byName[name]; !ok && srv.Live(now, s.cluster.Live) {
			// Heard from, but its VARZ is not known yet: behind until it answers.
			byName[name] = rotatord.KeyServer{Name: name, ID: srv.ID, LastSeen: srv.LastSeen}
		}
	}
	kr.Servers = kr.Servers[:0]
	for _, ks := range byName {
		kr.Servers = append(kr.Servers, ks)
	}
	sort.Slice(kr.Servers, func(i, j int) bool { return kr.Servers[i].Name < kr.Servers[j].Name })

	var behind, gone []string
	for _, ks := range kr.Behind() {
		if now.Sub(ks.LastSeen) > s.serverLive {
			gone = append(gone, ks.Name)
			continue
		}
		behind = append(behind, ks.Name)
	}
	what := "the operator JWT with the new signing key"
	if kr.State == rotatord.KeyRotationRemovingKey {
		what = "the operator JWT without the old signing key (they trust it until then)"
	}
	switch {
	case len(trusts) == 0:
		kr.Waiting = noServerAnswer + "; " + pasteBlock
	case len(behind) > 0:
		kr.Waiting = fmt.Sprintf("waiting for %s to run %s: %s", strings.Join(behind, ", "), what, pasteBlock)
	default:
		kr.Waiting = ""
	}
	if len(gone) > 0 {
		note := fmt.Sprintf("not waiting for %s, silent for more than %s", strings.Join(gone, ", "), s.serverLive)
		if kr.Waiting == "" {
			kr.Waiting = note
		} else {
			kr.Waiting += "; " + note
		}
	}
	return len(trusts) > 0 && len(behind) == 0, nil
}

// resignWithKey re-signs, with the live operator signing key, every account
// whose JWT is not signed by it, and pushes each, for at most resignBudget.
// It returns how many accounts are not re-signed yet and how many pushes
// are owed; kr.Waiting says so.
func (s *Service) resignWithKey(ctx context.Context, kr *rotatord.KeyRotation) (notYet, owed int, err error) {
	accs, err := s.store.ListAccounts(ctx)
	if err != nil {
		return 0, 0, err
	}
	resigned := 0
	until := time.Now().Add(resignBudget)
	for _, a := range accs {
		if issuer(a.JWT) != kr.NewKey && time.Now().After(until) {
			notYet++
			continue
		}
		if issuer(a.JWT) != kr.NewKey {
			err := s.store.InTx(ctx, func(ctx context.Context) error {
				acc, err := s.store.LockAccount(ctx, a.ID)
				if err != nil || issuer(acc.JWT) == kr.NewKey {
					return err
				}
				return s.resignAccount(ctx, acc)
			})
			if errors.Is(err, rotatord.ErrNotFound) {
				continue // deleted meanwhile
			}
			if err != nil {
				return 0, 0, fmt.Errorf("re-sign account %s with the new operator key: %w", a.Name, err)
			}
			resigned++
			s.changed(ctx, a.PublicKey)
			if _, err := s.PushAccount(ctx, a.ID); err != nil {
				owed++ // logged by PushAccount; RunPushRetry retries it
			}
		} else if a.PushedVersion < a.JWTVersion {
			if _, err := s.PushAccount(ctx, a.ID); err != nil {
				owed++
			}
		}
	}
	if resigned > 0 {
		s.log.Info("accounts re-signed with the new operator signing key", "key_rotation", kr.ID, "accounts", resigned, "push_owed", owed)
	}
	switch {
	case notYet > 0:
		kr.Waiting = fmt.Sprintf("re-signing the accounts with the new key: %d left", notYet)
	case owed > 0:
		kr.Waiting = fmt.Sprintf("%d account JWT(s) signed by the new key wait to be pushed to the nats-servers", owed)
	}
	return notYet, owed, nil
}

// issuer is the key that signed a JWT, "" when it does not decode.
func issuer(token string) string {
	c, err := jwt.Decode(token)
	if err != nil {
		return ""
	}
	return c.Claims().Issuer
}

// removeOldOperatorKeys re-signs the operator JWT without the rotation's
// old keys and retires them (and any other operator key but the new one).
func (s *Service) removeOldOperatorKeys(ctx context.Context, kr *rotatord.KeyRotation) error {
	if err := s.store.LockOperator(ctx); err != nil {
		return err
	}
	op, oc, identity, err := s.operatorForSigning(ctx)
	if err != nil {
		return err
	}
	oc.SigningKeys.Remove(kr.OldKeys...)
	oc.SigningKeys.Add(kr.NewKey)
	if op.JWT, err = oc.Encode(identity); err != nil {
		return fmt.Errorf("sign operator jwt: %w", err)
	}
	if err := s.store.UpdateOperator(ctx, op); err != nil {
		return err
	}
	_, err = s.store.RetireOperatorSigningKeys(ctx, kr.NewKey)
	return err
}

func serverNames(servers []rotatord.KeyServer) []string {
	out := make([]string, len(servers))
	for i, s := range servers {
		out[i] = s.Name
	}
	return out
}

// opSigner is the opened operator signing key, kept while it is the live
// one.
type opSigner struct {
	mu  sync.Mutex
	pub string
	kp  nkeys.KeyPair
}

// operatorSigner returns the operator's live signing key: the database
// says which one it is (a rotation switches it for every replica in one
// commit), the opened key pair is kept while it stays the same.
func (s *Service) operatorSigner(ctx context.Context) (nkeys.KeyPair, error) {
	pub, enc, err := s.store.SigningKey(ctx, 0)
	if err != nil {
		return nil, fmt.Errorf("load signing key: %w", err)
	}
	c := &s.opSigner
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pub == pub {
		return c.kp, nil
	}
	seed, err := s.sealer.Open(enc, []byte(pub))
	if err != nil {
		return nil, fmt.Errorf("open signing key %s: %w", pub, err)
	}
	defer clear(seed)
	kp, err := jwtissue.FromSeed(seed, nkeys.PrefixByteOperator)
	if err != nil {
		return nil, err
	}
	c.pub, c.kp = pub, kp
	return kp, nil
}

// SetOperatorProber sets the prober of operator key rotations (see
// Config.OperatorProber); call it before the service is used.
func (s *Service) SetOperatorProber(p OperatorProber) { s.opProber = p }
