package rotatord

import (
	"context"
	"time"
)

// Server is a nats-server of the cluster as rotatord knows it: heard from
// through its STATSZ heartbeats, its answers to $SYS.REQ.SERVER.PING, and
// its replies to pushes. A nats-server gets a new ID at every start, so a
// restarted server is a new Server.
type Server struct {
	ID        string
	Name      string
	Cluster   string
	FirstSeen time.Time
	LastSeen  time.Time
	// MissedAt is set when the server did not answer a push it was waited
	// for and has not been heard from since; pushes do not wait for it
	// until it is.
	MissedAt *time.Time
}

// Answering reports whether a push should wait for s at now: it was heard
// from within live and has not missed a push since.
func (s Server) Answering(now time.Time, live time.Duration) bool {
	return s.Live(now, live) && (s.MissedAt == nil || s.LastSeen.After(*s.MissedAt))
}

// Live reports whether s was heard from within live before now.
func (s Server) Live(now time.Time, live time.Duration) bool {
	return !s.LastSeen.Before(now.Add(-live))
}

// What a server holds of an account's JWT (AccountServer.Status).
const (
	ServerUpdated   = "updated"    // it answered "jwt updated": it holds Version
	ServerSkipped   = "skipped"    // it had not loaded the account: it loads the stored JWT when it needs it
	ServerVerified  = "verified"   // ACCOUNTZ showed it holds Version
	ServerNotLoaded = "not_loaded" // ACCOUNTZ showed it has not loaded the account
	ServerFailed    = "failed"     // it refused the JWT
	ServerMissed    = "missed"     // it did not answer a push of a newer version
	ServerStale     = "stale"      // ACCOUNTZ showed it holds an older JWT
)

// AccountServer is one server's state for one account: the newest version
// of the account's JWT it acknowledged (0 for none), and since when it is
// known to be behind the stored one.
type AccountServer struct {
	Server
	AccountID   int64
	Version     int64
	Status      string
	AckedAt     *time.Time
	BehindSince *time.Time
}

// Holds reports whether the server holds version (or newer) of the
// account's JWT, or will load the stored one when it needs the account.
func (a AccountServer) Holds(version int64) bool {
	return a.Version >= version && a.BehindSince == nil
}

// ServerCheck is a (server, account) pair to check: what the server is
// known to hold of the account, and the account's stored JWT.
type ServerCheck struct {
	AccountServer
	AccountName string
	AccountKey  string
	JWT         string
	JWTVersion  int64
}

// RetiredKey is the old key of a confirmed rotation, whose revocation is
// recorded and waits to be carried by a stored account JWT.
type RetiredKey struct {
	Rotation  string
	PublicKey string
	IssuedAt  time.Time // of the old key's JWT
	ExpiresAt time.Time
}

type storeDeadlineKey struct{}

// WithStoreDeadline returns ctx carrying a deadline for the database work
// done on its behalf: every query the store runs with it ends by t at the
// latest, while ctx itself (and work outside the database, such as a push
// to NATS) is not cut short. The HTTP API gives each request one.
func WithStoreDeadline(ctx context.Context, t time.Time) context.Context {
	return context.WithValue(ctx, storeDeadlineKey{}, t)
}

// StoreDeadline returns the database deadline set by WithStoreDeadline.
func StoreDeadline(ctx context.Context) (time.Time, bool) {
	t, ok := ctx.Value(storeDeadlineKey{}).(time.Time)
	return t, ok
}
