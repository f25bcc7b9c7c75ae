package rotate

import (
	"context"
	"fmt"
	"sync"

	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord/internal/jwtissue"
)

// Opened signing keys are kept in memory by public key (signing is
// rotatord's job; their seeds stay sealed in the database). Which key signs
// is always read from the database, so a replica never signs with a key
// another replica rotated out; the opened key pair of a retired key is
// dropped from memory at once on the replica that retired it, and by every
// other replica at its next Tick (sweepSigners checks the cached keys
// against the database).

// openSigner returns the cached key pair of pub, or opens enc (sealed to
// pub) and caches it.
func (s *Service) openSigner(pub string, enc []byte, kind nkeys.PrefixByte) (nkeys.KeyPair, error) {
	if kp, ok := s.signers.Load(pub); ok {
		return kp.(nkeys.KeyPair), nil
	}
	seed, err := s.sealer.Open(enc, []byte(pub))
	if err != nil {
		return nil, fmt.Errorf("open signing key %s: %w", pub, err)
	}
	kp, err := jwtissue.FromSeed(seed, kind)
	if err != nil {
		return nil, fmt.Errorf("open signing key %s: %w", pub, err)
	}
	if got := jwtissue.Public(kp); got != pub {
		return nil, fmt.Errorf("open signing key %s: the seed is of key %s", pub, got)
	}
	s.signers.Store(pub, kp)
	return kp, nil
}

// dropSigners forgets the opened key pairs of keys.
func (s *Service) dropSigners(keys []string) {
	for _, k := range keys {
		s.signers.Delete(k)
	}
}

// cachedSigners returns the public keys of the opened key pairs.
func (s *Service) cachedSigners() []string {
	var keys []string
	s.signers.Range(func(k, _ any) bool {
		keys = append(keys, k.(string))
		return true
	})
	return keys
}

// sweepSigners drops the opened key pairs of keys that are no longer live
// signing keys (retired by a key rotation on any replica, or deleted with
// their role or account).
func (s *Service) sweepSigners(ctx context.Context) error {
	keys := s.cachedSigners()
	if len(keys) == 0 {
		return nil
	}
	live, err := s.store.LiveSigningKeys(ctx, keys)
	if err != nil {
		return fmt.Errorf("check cached signing keys: %w", err)
	}
	for _, k := range keys {
		if !live[k] {
			s.signers.Delete(k)
			s.log.Info("dropped a retired signing key from memory", "key", k)
		}
	}
	return nil
}

// signerMemo remembers, for one transaction that issues many credentials,
// the signing keys it read (and locked) already: a batch of 64 rotations
// reads its account's key once.
type signerMemo struct {
	mu       sync.Mutex
	accounts map[int64]nkeys.KeyPair
	keys     map[string]nkeys.KeyPair
}

type signerMemoKey struct{}

// withSignerMemo returns ctx with a memo for the signing keys of one
// transaction; use it only inside that transaction.
func withSignerMemo(ctx context.Context) context.Context {
	return context.WithValue(ctx, signerMemoKey{}, &signerMemo{accounts: map[int64]nkeys.KeyPair{}, keys: map[string]nkeys.KeyPair{}})
}

// memoOf returns ctx's memo, or nil (whose methods do nothing).
func memoOf(ctx context.Context) *signerMemo {
	m, _ := ctx.Value(signerMemoKey{}).(*signerMemo)
	return m
}

func (m *signerMemo) account(id int64) nkeys.KeyPair {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.accounts[id]
}

func (m *signerMemo) setAccount(id int64, kp nkeys.KeyPair) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.accounts[id] = kp
	m.mu.Unlock()
}

func (m *signerMemo) key(pub string) nkeys.KeyPair {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.keys[pub]
}

func (m *signerMemo) setKey(pub string, kp nkeys.KeyPair) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.keys[pub] = kp
	m.mu.Unlock()
}
