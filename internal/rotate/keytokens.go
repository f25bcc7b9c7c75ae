package rotate

import (
	"context"
	"sync"
	"time"

	"github.com/rotatord/rotatord"
)

// Activation tokens across a rotation of an exporter's signing key. The
// account's signing key signs the activation tokens of the imports other
// accounts make of its token-required exports (accountclaims.go), and
// nats-server accepts a token only while the exporter's JWT lists its
// signer: removing the old key would break those imports. So:
//
//   - when the new key starts signing (a staged rotation leaving adding, an
//     emergency one at its start), the accounts holding tokens of the old
//     keys are re-signed in the same transaction: buildImports mints their
//     tokens with the signing key of the moment;
//   - a staged rotation removes its old keys only once the servers
//     acknowledged the JWT of every account holding tokens of the exporter
//     (tokensReady);
//   - every removal re-signs, in its own transaction, an account still
//     holding a token of an old key.
//
// An emergency rotation has no time for the staged order: its old key
// leaves the exporter's JWT in the transaction that re-signs the importers.
// Their JWTs are pushed first (pushTokenHoldersFirst). nats-server then
// cannot verify their new tokens (the exporter's JWT it holds does not list
// the new key yet) and marks the imports incomplete; the exporter's push
// right after makes it retry them, which re-attaches the subscriptions of
// the importers' connected clients. Pushed the other way round, the
// imports would go invalid and come back without the clients' existing
// stream subscriptions (nats-server compares an import's subjects, not its
// token, before re-processing them), and those clients would receive
// nothing until they subscribe again.
//
// A role's scoped key signs no tokens.
//
// Lock order: the account graph's lock (taken first, as every change of
// exports and imports does), the exporter, then the holders by ID, all
// before an old key is retired: an importer's re-sign locks the importer,
// then takes KEY SHARE on the exporter's signing key, which a retirement
// holds FOR UPDATE.

// signsTokens reports whether k's keys sign activation tokens (an
// account's signing key, not a role's).
func signsTokens(k *rotatord.KeyRotation) bool {
	return k.Kind == rotatord.KeyKindAccount
}

// lockTokenHolders locks, ordered by ID, the accounts holding activation
// tokens for imports of acc's exports that one of k's old keys signed.
func (s *Service) lockTokenHolders(ctx context.Context, k *rotatord.KeyRotation, acc *rotatord.Account) ([]*rotatord.Account, error) {
	if !signsTokens(k) {
		return nil, nil
	}
	hs, err := s.store.ActivationHolders(ctx, acc.PublicKey, k.OldKeys)
	if err != nil {
		return nil, err
	}
	out := make([]*rotatord.Account, 0, len(hs))
	for _, h := range hs {
		a, err := s.store.LockAccount(ctx, h.ID)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// resignTokenHolders re-signs the locked holders: each gets tokens signed
// by the exporter's signing key of the moment.
func (s *Service) resignTokenHolders(ctx context.Context, holders []*rotatord.Account) error {
	for _, a := range holders {
		if err := s.resignAccount(ctx, a); err != nil {
			return err
		}
	}
	return nil
}

// moveTokens locks and re-signs the holders of tokens of k's old keys.
func (s *Service) moveTokens(ctx context.Context, k *rotatord.KeyRotation, acc *rotatord.Account) ([]*rotatord.Account, error) {
	holders, err := s.lockTokenHolders(ctx, k, acc)
	if err != nil {
		return nil, err
	}
	return holders, s.resignTokenHolders(ctx, holders)
}

// tokensReady reports whether the servers acknowledged the current JWT of
// every account holding activation tokens of acc (tokens of the new key,
// since it signs), naming those they did not; it re-signs those still
// holding one of an old key (returned, to push).
func (s *Service) tokensReady(ctx context.Context, k *rotatord.KeyRotation, acc *rotatord.Account) (ready bool, waiting []string, resigned []*rotatord.Account, err error) {
	if !signsTokens(k) {
		return true, nil, nil, nil
	}
	if resigned, err = s.moveTokens(ctx, k, acc); err != nil || len(resigned) > 0 {
		for _, a := range resigned {
			waiting = append(waiting, a.Name)
		}
		return false, waiting, resigned, err
	}
	hs, err := s.store.ActivationHolders(ctx, acc.PublicKey, nil)
	if err != nil {
		return false, nil, nil, err
	}
	for _, h := range hs {
		if !s.pushed(h, h.JWTVersion) {
			waiting = append(waiting, h.Name)
		}
	}
	return len(waiting) == 0, waiting, nil, nil
}

// tokenHoldersFirst bounds how long the push of an exporter's JWT without
// its leaked key waits for the pushes of its importers.
const tokenHoldersFirst = 2 * time.Second

// pushTokenHoldersFirst pushes the accounts an emergency rotation re-signed
// for their tokens, waiting for them (at most tokenHoldersFirst), before
// the exporter's own push.
func (s *Service) pushTokenHoldersFirst(ctx context.Context, accs []*rotatord.Account) {
	if len(accs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, tokenHoldersFirst)
	defer cancel()
	var wg sync.WaitGroup
	for _, a := range accs {
		s.changed(ctx, a.PublicKey)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.PushAccount(ctx, a.ID); err != nil {
				s.log.Warn("push of an importer before its exporter's", "account", a.Name, "err", err)
			}
		}()
	}
	wg.Wait()
}

// pushResigned follows the commit of accounts re-signed for their tokens.
func (s *Service) pushResigned(ctx context.Context, accs []*rotatord.Account) {
	for _, a := range accs {
		s.changed(ctx, a.PublicKey)
		s.pushSoon(a.ID)
	}
}

func accountNames(accs []*rotatord.Account) []string {
	names := make([]string, 0, len(accs))
	for _, a := range accs {
		names = append(names, a.Name)
	}
	return names
}
