package httpapi

import (
	"time"

	"github.com/rotatord/rotatord"
)

// What each nats-server holds of an account's JWT, in GET /v1/accounts/{name}.
type accountServerJSON struct {
	ID       string     `json:"id"`
	Name     string     `json:"name"`
	Cluster  string     `json:"cluster,omitempty"`
	Version  int64      `json:"version"`
	Current  bool       `json:"current"`
	State    string     `json:"state"`
	LastSeen time.Time  `json:"last_seen"`
	AckedAt  *time.Time `json:"acked_at"`
	// BehindSince is when the server was first known not to hold the
	// account's current JWT.
	BehindSince *time.Time `json:"behind_since"`
}

// Server states for one account.
const (
	serverCurrent = "current" // holds the stored version, or has not loaded the account and loads it from the resolver
	serverPending = "pending" // holds an older version; the push of the stored one is on its way
	serverBehind  = "behind"  // missed or refused the push of the stored version; rotatord brings it up to date when it answers
	serverUnknown = "unknown" // has not answered for this account yet
)

func toAccountServersJSON(acc *rotatord.Account, list []rotatord.AccountServer) []accountServerJSON {
	out := make([]accountServerJSON, 0, len(list))
	for _, sv := range list {
		j := accountServerJSON{ID: sv.ID, Name: sv.Name, Cluster: sv.Cluster, Version: sv.Version,
			LastSeen: sv.LastSeen.UTC(), AckedAt: utcPtr(sv.AckedAt), BehindSince: utcPtr(sv.BehindSince)}
		switch {
		case sv.Status == "":
			j.State = serverUnknown
		case sv.BehindSince != nil:
			j.State = serverBehind
		case sv.Holds(acc.JWTVersion):
			j.State, j.Current = serverCurrent, true
		default:
			j.State = serverPending
		}
		out = append(out, j)
	}
	return out
}
