package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rotatord/rotatord"
)

// A PostgreSQL that went away or stopped answering is "unavailable" (503),
// whatever shape the error takes on the way; mistakes in statements are not.
func TestMapErrUnavailable(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want string
	}{
		{"broken pooled connection", fmt.Errorf("find token: %w", io.ErrUnexpectedEOF), rotatord.EUNAVAILABLE},
		{"closed by the server", fmt.Errorf("find token: %w", io.EOF), rotatord.EUNAVAILABLE},
		{"reset", &net.OpError{Op: "read", Net: "unix", Err: syscall.ECONNRESET}, rotatord.EUNAVAILABLE},
		{"broken pipe", fmt.Errorf("write: %w", syscall.EPIPE), rotatord.EUNAVAILABLE},
		{"refused", fmt.Errorf("dial: %w", syscall.ECONNREFUSED), rotatord.EUNAVAILABLE},
		{"deadline", fmt.Errorf("acquire: %w", context.DeadlineExceeded), rotatord.EUNAVAILABLE},
		{"conn closed", fmt.Errorf("exec: %w", pgconn.ErrConnClosed), rotatord.EUNAVAILABLE},
		{"admin shutdown", &pgconn.PgError{Severity: "FATAL", Code: "57P01"}, rotatord.EUNAVAILABLE},
		{"crash shutdown", &pgconn.PgError{Severity: "FATAL", Code: "57P02"}, rotatord.EUNAVAILABLE},
		{"starting up", &pgconn.PgError{Severity: "FATAL", Code: "57P03"}, rotatord.EUNAVAILABLE},
		{"too many connections", &pgconn.PgError{Severity: "FATAL", Code: "53300"}, rotatord.EUNAVAILABLE},
		{"connection failure", &pgconn.PgError{Severity: "FATAL", Code: "08006"}, rotatord.EUNAVAILABLE},
		{"statement cancelled", &pgconn.PgError{Severity: "ERROR", Code: "57014"}, rotatord.EUNAVAILABLE},
		{"unique", &pgconn.PgError{Code: "23505"}, rotatord.ECONFLICT},
		{"syntax", &pgconn.PgError{Code: "42601"}, rotatord.EINTERNAL},
		{"no rows", pgx.ErrNoRows, rotatord.EINTERNAL},
		{"cancelled by the caller", context.Canceled, rotatord.EINTERNAL},
		{"already a domain error", rotatord.Errorf(rotatord.ENOTFOUND, "agent %q not found", "kate"), rotatord.ENOTFOUND},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := mapErr(fmt.Errorf("authenticate: %w", c.err))
			if got := rotatord.ErrorCode(err); got != c.want {
				t.Fatalf("mapErr(%v) has code %s, want %s", c.err, got, c.want)
			}
			if c.want == rotatord.EUNAVAILABLE {
				if msg := rotatord.ErrorMessage(err); msg != "database unavailable" {
					t.Fatalf("message = %q, want no internals", msg)
				}
				if !errors.Is(err, c.err) {
					t.Fatal("the original error is not in the chain for the log")
				}
			}
		})
	}
}
