package httpapi

import (
	"net/http"
	"time"

	"github.com/rotatord/rotatord"
)

// DefaultDBTimeout is the default deadline of a request's database work.
const DefaultDBTimeout = 5 * time.Second

// storeDeadline gives each API request's database work one deadline
// (Config.DBTimeout from its start), token authentication and the agent
// API included: a PostgreSQL that does not answer makes the request fail
// with 503 unavailable within it, instead of holding it until the write
// timeout cuts it off without an answer. Work outside the database (a push
// to NATS) is not bound by it.
func (s *Server) storeDeadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := rotatord.WithStoreDeadline(r.Context(), time.Now().Add(s.dbTimeout))
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}
