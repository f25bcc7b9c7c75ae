// Package registry is rotatord's PostgreSQL store (pgx/v5): the operator,
// accounts and their signing keys, agents, credentials, revocations,
// rotations, the audit trail and API tokens. It maps PostgreSQL errors to
// the domain errors of package rotatord.
//
// Methods run in the transaction carried by ctx when InTx started one, and
// on the pool otherwise, so callers compose several calls into one commit.
package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/migrations"
)

// AccountsChannel is the LISTEN/NOTIFY channel on which every change of an
// account JWT is announced; the payload is the account public key.
const AccountsChannel = "rotatord_accounts"

// DefaultMaxConns is the pool size unless the URL sets pool_max_conns.
const DefaultMaxConns = 32

// DefaultOpTimeout bounds each database operation that runs without a
// deadline of its own (rotatord.WithStoreDeadline): background work (the
// scheduler, the re-signer, pushes) never waits forever on a PostgreSQL that
// stopped answering, and recovers when it answers again.
const DefaultOpTimeout = time.Minute

// rollbackTimeout bounds the rollback of a failed transaction: on a
// PostgreSQL that does not answer, the connection is closed instead.
const rollbackTimeout = 2 * time.Second

// Store is the PostgreSQL registry. It is safe for concurrent use.
type Store struct {
	pool      *pgxpool.Pool
	opTimeout time.Duration
}

// SetOpTimeout changes the bound on operations without a deadline of their
// own (DefaultOpTimeout); 0 removes it. Call it before using the store.
func (s *Store) SetOpTimeout(d time.Duration) { s.opTimeout = d }

// Open connects to the database at url. It does not migrate.
// A URL that does not parse is refused with the URL as given (password
// hidden) and the form expected.
func Open(ctx context.Context, url string) (*Store, error) {
	if err := checkURL(url); err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, parseError(url, err)
	}
	if !strings.Contains(url, "pool_max_conns") {
		// pgx defaults to max(4, CPUs): too few for the rotation workers,
		// the watcher and the API at once.
		cfg.MaxConns = DefaultMaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	return &Store{pool: pool, opTimeout: DefaultOpTimeout}, nil
}

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }

// Pool returns the underlying pool, for LISTEN and tests.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping database: %w", connectError(err))
	}
	return nil
}

// Migrate applies the embedded migrations and returns how many ran.
func (s *Store) Migrate(ctx context.Context) (int, error) {
	db := stdlib.OpenDBFromPool(s.pool)
	defer db.Close()
	n, err := migrations.Up(ctx, db)
	return n, connectError(err)
}

type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

type (
	txKey   struct{}
	connKey struct{}
)

// q returns what a method runs its statements on: the transaction in ctx,
// else the connection WithAccountLock holds, else the pool; every statement
// gets the deadline opContext gives it.
func (s *Store) q(ctx context.Context) querier {
	return bounded{q: s.raw(ctx), timeout: s.opTimeout}
}

func (s *Store) raw(ctx context.Context) querier {
	if tx, ok := ctx.Value(txKey{}).(pgx.Tx); ok {
		return tx
	}
	if c, ok := ctx.Value(connKey{}).(*pgxpool.Conn); ok {
		return c
	}
	return s.pool
}

// opContext bounds one database operation: by the request's deadline
// (rotatord.WithStoreDeadline) when ctx has one, else by timeout.
func opContext(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	if t, ok := rotatord.StoreDeadline(ctx); ok {
		return context.WithDeadline(ctx, t)
	}
	if timeout > 0 {
		return context.WithTimeout(ctx, timeout)
	}
	return ctx, func() {}
}

// bounded runs each statement under opContext. Rows and rows read later
// keep the deadline until they are read or closed.
type bounded struct {
	q       querier
	timeout time.Duration
}

func (b bounded) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	ctx, cancel := opContext(ctx, b.timeout)
	defer cancel()
	return b.q.Exec(ctx, sql, args...)
}

func (b bounded) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	ctx, cancel := opContext(ctx, b.timeout)
	rows, err := b.q.Query(ctx, sql, args...)
	if err != nil {
		cancel()
		return nil, err
	}
	return &boundedRows{Rows: rows, cancel: cancel}, nil
}

func (b bounded) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	ctx, cancel := opContext(ctx, b.timeout)
	return boundedRow{row: b.q.QueryRow(ctx, sql, args...), cancel: cancel}
}

// SendBatch sends b in one round trip under opContext's deadline, which
// ends when the results are closed.
func (b bounded) SendBatch(ctx context.Context, batch *pgx.Batch) pgx.BatchResults {
	ctx, cancel := opContext(ctx, b.timeout)
	return boundedBatch{BatchResults: b.q.SendBatch(ctx, batch), cancel: cancel}
}

type boundedBatch struct {
	pgx.BatchResults
	cancel context.CancelFunc
}

func (r boundedBatch) Close() error {
	defer r.cancel()
	return r.BatchResults.Close()
}

type boundedRows struct {
	pgx.Rows
	cancel context.CancelFunc
}

func (r *boundedRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.cancel()
	return false
}

func (r *boundedRows) Close() {
	r.Rows.Close()
	r.cancel()
}

type boundedRow struct {
	row    pgx.Row
	cancel context.CancelFunc
}

func (r boundedRow) Scan(dest ...any) error {
	defer r.cancel()
	return r.row.Scan(dest...)
}

// InTx runs fn in one transaction, committed when fn returns nil and rolled
// back otherwise. Inside fn, pass the ctx it receives to the Store's methods.
// A nested InTx joins the outer transaction.
func (s *Store) InTx(ctx context.Context, fn func(ctx context.Context) error) error {
	if _, ok := ctx.Value(txKey{}).(pgx.Tx); ok {
		return fn(ctx)
	}
	bctx, cancel := opContext(ctx, s.opTimeout)
	tx, err := s.beginner(ctx).Begin(bctx)
	cancel()
	if err != nil {
		return mapErr(fmt.Errorf("begin transaction: %w", err))
	}
	defer func() {
		// A no-op after Commit. After a failure, PostgreSQL may not answer
		// at all: then the connection is closed, not waited on.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
		tx.Rollback(rctx) //nolint:errcheck // nothing more to do
		cancel()
	}()
	if err := fn(context.WithValue(ctx, txKey{}, tx)); err != nil {
		return mapErr(err)
	}
	cctx, cancel := opContext(ctx, s.opTimeout)
	defer cancel()
	if err := tx.Commit(cctx); err != nil {
		return mapErr(fmt.Errorf("commit: %w", err))
	}
	return nil
}

// beginner is where InTx begins: the connection WithAccountLock holds, or
// the pool.
func (s *Store) beginner(ctx context.Context) interface {
	Begin(ctx context.Context) (pgx.Tx, error)
} {
	if c, ok := ctx.Value(connKey{}).(*pgxpool.Conn); ok {
		return c
	}
	return s.pool
}

// mapErr turns PostgreSQL errors into domain errors where the caller can act
// on them; the original stays in the chain for logs. An error that already
// carries a domain code is returned as it is.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	var de *rotatord.Error
	if errors.As(err, &de) {
		return err
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "23505": // unique_violation
			return &wrapped{code: rotatord.ECONFLICT, msg: conflictMessage(pgErr), err: err}
		case "23503": // foreign_key_violation
			return &wrapped{code: rotatord.ECONFLICT, msg: "still referenced by other records", err: err}
		}
	}
	if unavailable(err) {
		return &wrapped{code: rotatord.EUNAVAILABLE, msg: "database unavailable", err: err}
	}
	return err
}

// unavailable reports whether err means that PostgreSQL could not be
// reached or stopped answering, rather than that the statement was wrong:
// a refused or timed-out connection, a pooled connection that broke (the
// server restarted or went away: EOF, reset), a server shutting down or
// out of connections, a statement cancelled at its deadline.
func unavailable(err error) bool {
	var (
		ce     *pgconn.ConnectError
		pgErr  *pgconn.PgError
		netErr net.Error
	)
	switch {
	case pgconn.SafeToRetry(err), pgconn.Timeout(err), errors.As(err, &ce):
		return true
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, pgconn.ErrConnClosed):
		return true
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return true
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EPIPE),
		errors.Is(err, syscall.ECONNABORTED), errors.Is(err, net.ErrClosed):
		return true
	case errors.As(err, &netErr):
		return true
	case errors.As(err, &pgErr):
		switch {
		case strings.HasPrefix(pgErr.Code, "08"): // connection_exception
			return true
		case pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03": // admin/crash shutdown, cannot connect now
			return true
		case pgErr.Code == "53300": // too_many_connections
			return true
		case pgErr.Code == "57014": // query_canceled: a statement cut at its deadline
			return true
		}
	}
	return false
}

func conflictMessage(e *pgconn.PgError) string {
	switch e.ConstraintName {
	case "accounts_name_key":
		return "an account with this name exists"
	case "roles_account_name_key":
		return "a role with this name exists in the account"
	case "agents_name_key":
		return "an agent with this name exists"
	case "api_tokens_name_key":
		return "a token with this name exists"
	case "rotations_one_in_flight":
		return "a rotation of this agent is in flight"
	case "credentials_public_key_key":
		return "this public key is already in use"
	case "fleet_rotations_one_per_account":
		return "a fleet rotation of this account is in flight"
	case "key_rotations_one_per_account":
		return "a signing-key rotation of this account is in flight"
	}
	return "conflicts with an existing record"
}

// wrapped carries a domain error code and message while keeping the
// PostgreSQL error in the chain for logs.
type wrapped struct {
	code, msg string
	err       error
}

func (w *wrapped) Error() string { return w.msg + ": " + w.err.Error() }
func (w *wrapped) Unwrap() []error {
	return []error{&rotatord.Error{Code: w.code, Message: w.msg}, w.err}
}

func notFound(kind, name string) error {
	return rotatord.Errorf(rotatord.ENOTFOUND, "%s %q not found", kind, name)
}

func redact(msg, secret string) string {
	if secret == "" {
		return msg
	}
	return strings.ReplaceAll(msg, secret, "<url>")
}

// collect scans every row with scan; what names the rows in errors.
func collect[T any](rows pgx.Rows, what string, scan func(pgx.Row) (T, error)) ([]T, error) {
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (T, error) { return scan(row) })
	if err != nil {
		return nil, mapErr(fmt.Errorf("read %s: %w", what, err))
	}
	return out, nil
}

// dbTime truncates t to what PostgreSQL stores, so round trips compare
// equal. Decisions use the callers' injected clock, never the database's.
func dbTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// needTx refuses to lock rows outside a transaction, where the lock would
// end with the statement.
func needTx(ctx context.Context, what string) error {
	if _, ok := ctx.Value(txKey{}).(pgx.Tx); !ok {
		return errors.New(what + ": not in a transaction")
	}
	return nil
}

func idPtr(id int64) *int64 {
	if id == 0 {
		return nil
	}
	return &id
}

func timePtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := dbTime(*t)
	return &u
}
