package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rotatord/rotatord"
)

// claimsArg stores nil claims as NULL.
func claimsArg(c *rotatord.AccountClaims) any {
	if c == nil {
		return nil
	}
	b, err := json.Marshal(c)
	if err != nil {
		// Every field of AccountClaims marshals.
		panic(fmt.Sprintf("registry: marshal account claims: %v", err))
	}
	return b
}

// accountGraphLock is the advisory lock that serializes changes of
// accounts' exports and imports across replicas.
const accountGraphLock = 0x726f7461_67726168 // "rotagrah"

// LockAccountGraph takes, until the transaction in ctx ends, the lock that
// every change of an account's exports or imports holds: such a change
// checks other accounts' exports and imports, which must not change
// meanwhile.
func (s *Store) LockAccountGraph(ctx context.Context) error {
	if err := needTx(ctx, "lock account graph"); err != nil {
		return err
	}
	if _, err := s.q(ctx).Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(accountGraphLock)); err != nil {
		return mapErr(fmt.Errorf("lock account graph: %w", err))
	}
	return nil
}

// FindAccountByRef returns the account with that name or, failing that,
// that public key, without its revocation and agent counts; ENOTFOUND when
// there is none.
func (s *Store) FindAccountByRef(ctx context.Context, ref string) (*rotatord.Account, error) {
	a, err := scanAccount(s.q(ctx).QueryRow(ctx, `SELECT `+lockedAccountCols+` FROM accounts a
		WHERE a.name = $1 OR a.public_key = $1 ORDER BY a.name = $1 DESC LIMIT 1`, ref))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("account", ref)
	}
	if err != nil {
		return nil, mapErr(fmt.Errorf("find account %.64s: %w", ref, err))
	}
	return a, nil
}

// ImportersOf returns the accounts that import from the account of that
// name and public key (naming it either way), ordered by ID, without their
// revocation and agent counts. Accounts imported before rotatord modeled
// imports are found through their base claims.
func (s *Store) ImportersOf(ctx context.Context, name, pub string) ([]*rotatord.Account, error) {
	byName, _ := json.Marshal([]map[string]string{{"account": name}})
	byKey, _ := json.Marshal([]map[string]string{{"account": pub}})
	rows, err := s.q(ctx).Query(ctx, `SELECT `+lockedAccountCols+` FROM accounts a
		WHERE a.public_key <> $3 AND (
			(a.claims IS NOT NULL AND (a.claims -> 'imports' @> $1::jsonb OR a.claims -> 'imports' @> $2::jsonb))
			OR (a.claims IS NULL AND a.base_claims -> 'imports' @> $2::jsonb))
		ORDER BY a.id`, byName, byKey, pub)
	if err != nil {
		return nil, mapErr(fmt.Errorf("find importers of %s: %w", name, err))
	}
	return collect(rows, "importers", scanAccount)
}

// Activations returns the activation tokens minted for the imports of the
// account with that public key.
func (s *Store) Activations(ctx context.Context, importer string) ([]rotatord.Activation, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT importer_key, exporter_key, subject, kind, token, signer, expires_at
		FROM activations WHERE importer_key = $1 ORDER BY exporter_key, subject, kind`, importer)
	if err != nil {
		return nil, mapErr(fmt.Errorf("list activations of %s: %w", importer, err))
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[rotatord.Activation])
	if err != nil {
		return nil, mapErr(fmt.Errorf("list activations of %s: %w", importer, err))
	}
	return out, nil
}

// ReplaceActivations makes acts the activation tokens of the account with
// that public key. Call it with the account locked.
func (s *Store) ReplaceActivations(ctx context.Context, importer string, acts []rotatord.Activation) error {
	if _, err := s.q(ctx).Exec(ctx, `DELETE FROM activations WHERE importer_key = $1`, importer); err != nil {
		return mapErr(fmt.Errorf("replace activations of %s: %w", importer, err))
	}
	if len(acts) == 0 {
		return nil
	}
	n := len(acts)
	exporters, subjects, kinds, tokens, signers := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	expires := make([]time.Time, n)
	for i, a := range acts {
		exporters[i], subjects[i], kinds[i], tokens[i], signers[i] = a.Exporter, a.Subject, a.Type, a.Token, a.Signer
		expires[i] = dbTime(a.ExpiresAt)
	}
	_, err := s.q(ctx).Exec(ctx, `
		INSERT INTO activations (importer_key, exporter_key, subject, kind, token, signer, expires_at)
		SELECT $1, e, s, k, t, g, x
		FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[]) AS v(e, s, k, t, g, x)`,
		importer, exporters, subjects, kinds, tokens, signers, expires)
	if err != nil {
		return mapErr(fmt.Errorf("store %d activations of %s: %w", n, importer, err))
	}
	return nil
}

// ClaimActivationRenewal locks, until the transaction in ctx ends, an
// account that holds an activation token expiring before t, and returns its
// ID; 0 when there is none (or other replicas hold them all).
func (s *Store) ClaimActivationRenewal(ctx context.Context, t time.Time) (int64, error) {
	if err := needTx(ctx, "claim activation renewal"); err != nil {
		return 0, err
	}
	var id int64
	err := s.q(ctx).QueryRow(ctx, `SELECT a.id FROM accounts a
		WHERE EXISTS (SELECT 1 FROM activations t WHERE t.importer_key = a.public_key AND t.expires_at < $1)
		ORDER BY a.id LIMIT 1 FOR NO KEY UPDATE OF a SKIP LOCKED`, dbTime(t)).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, mapErr(fmt.Errorf("claim activation renewal: %w", err))
	}
	return id, nil
}
