package rotate

// The account JWT size guard.
//
// Each revocation entry adds about 94 bytes to an account JWT, and a
// nats-server refuses a push larger than its max payload (1 MiB by
// default). rotatord never stores an account JWT larger than the guard
// (Config.MaxAccountJWTBytes, ROTATORD_MAX_ACCOUNT_JWT_BYTES, 512 KiB by
// default), and it never refuses or delays a revocation because of it. Room
// is made in three steps, cheapest first:
//
//  1. Prune and fold (pruneRevocations, at each re-sign of a queued account
//     and at the sweep every minute): entries whose revoked JWT has expired
//     go, and entries whose revoked JWT was issued before every credential
//     still in use fold into one '*' entry, which refuses nothing in use.
//     This is all a healthy account ever needs.
//  2. Rotate early (makeRoom): past half the guard (when the
//     account_jwt_large alert goes out, once a day), the agents whose
//     credentials in use are older than the oldest entries are made due
//     now, enough of them that folding the entries behind their
//     credentials brings the JWT back to a quarter of the guard. Their
//     rotations move the oldest credential in use forward; their old keys'
//     entries are behind it too, and the next sweep folds them all.
//  3. Fold even so (foldToFit): when a revocation would take the JWT past
//     the guard before step 2 is done, the oldest entries (by the iat of the
//     JWT they revoke) are folded into '*' all the same, as few as make the
//     JWT fit. '*' then also refuses the credentials in use issued at or
//     before it: those agents are made due at once (they fetch new
//     credentials with their current key, which rotatord still accepts),
//     and an account_jwt_full alert (critical) says how many.
//
// An account with keep_revocations (imported; rotatord may not know all its
// users) skips steps 1 and 2: folding would refuse JWTs rotatord never saw.
// Its rotations that would take the JWT past the guard are refused instead
// (each adds one entry when it ends), with ErrJWTFull and an alert. Its
// revocations are still never refused: if they alone cross the guard, step
// 3 folds even there, and the alert says that JWTs issued elsewhere before
// the '*' time are refused too.
//
// Only if folding every entry still does not fit (the account's claims
// alone exceed the guard, possible only after the guard was lowered) is a
// revocation stored above the guard, with a critical alert: a revocation
// always lands.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/nats-io/jwt/v2"

	"github.com/rotatord/rotatord"
)

// MinMaxAccountJWTBytes is the smallest guard rotatord accepts: an account
// JWT without any revocation entry is about 1 KiB.
const MinMaxAccountJWTBytes = 4 << 10

// revocationEntryBytes is about what one revocation entry adds to an
// account JWT: `"<56-character key>":<10-digit time>,` is 70 bytes of
// JSON, 94 once base64url-encoded.
const revocationEntryBytes = 94

const (
	// jwtLargeAlertEvery spaces account_jwt_large alerts of one account.
	jwtLargeAlertEvery = 24 * time.Hour
	// jwtFullAlertEvery spaces account_jwt_full alerts of one account.
	jwtFullAlertEvery = time.Hour
	// roomRetry is when a scheduled rotation refused for want of room is
	// tried again; entries expire meanwhile.
	roomRetry = 15 * time.Minute
)

// Alert kinds of the guard.
const (
	AlertJWTLarge = "account_jwt_large"
	AlertJWTFull  = "account_jwt_full"
)

// checkJWTSize refuses an account JWT above the guard with ErrJWTFull.
func (s *Service) checkJWTSize(acc *rotatord.Account, token string) error {
	if len(token) <= s.maxJWT {
		return nil
	}
	return rotatord.Errorf(rotatord.EJWTFULL,
		"account %q: its JWT would be %d bytes, over the %d-byte limit (ROTATORD_MAX_ACCOUNT_JWT_BYTES); the change is refused: raise the limit, or wait for revocation entries to expire or fold",
		acc.Name, len(token), s.maxJWT)
}

// resignRevoking re-signs the locked account, like resignAccount, for a
// change that revokes: it always lands, making room under the guard
// however it must (see the top of this file).
func (s *Service) resignRevoking(ctx context.Context, acc *rotatord.Account) error {
	return s.resign(ctx, acc, true)
}

// resign re-signs the locked account from what the store holds and stores
// it. Over the guard it prunes and folds what no credential in use needs;
// if that is not enough, a revocation (land) folds even so, and any other
// change fails with ErrJWTFull.
func (s *Service) resign(ctx context.Context, acc *rotatord.Account, land bool) error {
	keys, err := s.store.SigningKeys(ctx, acc.ID)
	if err != nil {
		return err
	}
	acc.SigningKeys = keys
	revs, err := s.store.Revocations(ctx, acc.ID)
	if err != nil {
		return err
	}
	err = s.signAccount(ctx, acc, revs)
	if errors.Is(err, rotatord.ErrJWTFull) {
		if err := s.pruneRevocations(ctx, acc); err != nil {
			return err
		}
		if revs, err = s.store.Revocations(ctx, acc.ID); err != nil {
			return err
		}
		err = s.signAccount(ctx, acc, revs)
	}
	if errors.Is(err, rotatord.ErrJWTFull) && land {
		revs, err = s.foldToFit(ctx, acc, revs)
	}
	if err != nil {
		return err
	}
	acc.Revocations = len(revs)
	if err := s.store.UpdateAccount(ctx, acc); err != nil {
		return err
	}
	if err := s.stampResigned(ctx, acc); err != nil {
		return err
	}
	return s.watchSize(ctx, acc, revs)
}

// foldToFit folds the fewest oldest entries into '*' that make the JWT
// fit under the guard, signs it into acc, and rotates at once the agents
// whose credentials in use the '*' entry now refuses. Entries are taken in
// the order of the iat of the JWT they revoke: the fewer are folded, the
// earlier '*' lands and the fewer credentials in use it refuses. It leaves
// a little room (a 64th of the guard) when it can, so that the next
// revocations do not each have to fold again.
func (s *Service) foldToFit(ctx context.Context, acc *rotatord.Account, revs []rotatord.Revocation) ([]rotatord.Revocation, error) {
	now := s.now()
	var star time.Time
	var cands []rotatord.Revocation
	for _, r := range revs {
		switch {
		case r.PublicKey == jwt.All:
			star = r.RevokedAt
		case !r.IssuedAt.After(now):
			// Entries of JWTs issued after now (by a replica whose clock
			// is ahead) cannot fold without refusing what is issued next.
			cands = append(cands, r)
		}
	}
	slices.SortFunc(cands, func(a, b rotatord.Revocation) int { return a.IssuedAt.Compare(b.IssuedAt) })
	cutoff := func(k int) time.Time {
		return latest(cands[k-1].IssuedAt.Truncate(time.Second), star)
	}
	// The least k whose JWT is at most limit bytes (len(cands)+1 if none):
	// folding more entries never makes the JWT larger.
	least := func(limit int) (int, error) {
		var encErr error
		k := 1 + sort.Search(len(cands), func(i int) bool {
			if encErr != nil {
				return true
			}
			token, _, err := s.encodeAccount(ctx, acc, foldAt(revs, cutoff(i+1)))
			encErr = err
			return err == nil && len(token) <= limit
		})
		return k, encErr
	}
	k, err := least(s.maxJWT - s.maxJWT/64)
	if err == nil && k > len(cands) {
		k, err = least(s.maxJWT)
	}
	if err != nil {
		return nil, err
	}
	fits := k <= len(cands)
	k = min(k, len(cands))

	var folded, holders, moved int64
	var t time.Time
	if k > 0 {
		t = cutoff(k)
		if folded, err = s.store.CompactRevocations(ctx, acc.ID, t, now.Add(maxCredentialLifetime)); err != nil {
			return nil, err
		}
		if revs, err = s.store.Revocations(ctx, acc.ID); err != nil {
			return nil, err
		}
	}
	if err := s.signAccount(ctx, acc, revs); errors.Is(err, rotatord.ErrJWTFull) {
		// The account's claims alone exceed the guard. The revocation lands
		// all the same: the limit protects pushes, and refusing the
		// revocation would leave the agent connected.
		token, id, err := s.encodeAccount(ctx, acc, revs)
		if err != nil {
			return nil, err
		}
		acc.JWT, acc.JWTID = token, id
		fits = false
	} else if err != nil {
		return nil, err
	}

	if k > 0 {
		if holders, moved, err = s.store.HastenRotations(ctx, acc.ID, t, now, true); err != nil {
			return nil, err
		}
		if err := s.audit(ctx, SystemActor, "revocations.fold", rotatord.AuditEvent{Account: acc.Name, PublicKey: acc.PublicKey,
			Details: map[string]any{"cutoff": t, "entries": folded, "agents_refused": holders, "agents_made_due": moved,
				"jwt_bytes": len(acc.JWT), "reason": "a revocation would take the account JWT past the limit"}}); err != nil {
			return nil, err
		}
	}
	reason := fmt.Sprintf("a revocation would take the account JWT past the %d-byte limit (ROTATORD_MAX_ACCOUNT_JWT_BYTES) before early rotations made room: "+
		"%d revocation entries were folded into '*' at %s, which also refuses the credentials in use of %d agents, issued until then; they are being rotated now",
		s.maxJWT, folded, t.UTC().Format(time.RFC3339), holders)
	if acc.KeepRevocations {
		reason += "; the account keeps its revocation entries (keep_revocations), so JWTs rotatord did not issue are refused too if issued until then"
	}
	if !fits {
		reason = fmt.Sprintf("the account JWT is %d bytes with every revocation entry that can be folded folded, over the %d-byte limit (ROTATORD_MAX_ACCOUNT_JWT_BYTES): "+
			"it was stored and pushed all the same, since the revocation must land; raise the limit above what the account's claims need", len(acc.JWT), s.maxJWT)
	}
	s.log.Error("account jwt at its size limit: folded revocations early", "account", acc.Name, "jwt_bytes", len(acc.JWT),
		"limit", s.maxJWT, "folded", folded, "cutoff", t, "agents_refused", holders)
	if err := s.alertOnce(ctx, acc, AlertJWTFull, rotatord.SeverityCritical, reason, "fold", jwtFullAlertEvery); err != nil {
		return nil, err
	}
	return revs, nil
}

// foldAt returns revs with every entry whose revoked JWT was issued at or
// before t replaced by one '*' entry at t.
func foldAt(revs []rotatord.Revocation, t time.Time) []rotatord.Revocation {
	out := []rotatord.Revocation{{PublicKey: jwt.All, RevokedAt: t, IssuedAt: t}}
	for _, r := range revs {
		if r.PublicKey != jwt.All && r.IssuedAt.After(t) {
			out = append(out, r)
		}
	}
	return out
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// watchSize runs after every re-sign: past half the guard it raises
// account_jwt_large (once a day per account, whichever replica gets there
// first) and rotates early the agents that keep entries from folding.
func (s *Service) watchSize(ctx context.Context, acc *rotatord.Account, revs []rotatord.Revocation) error {
	size := len(acc.JWT)
	if 2*size <= s.maxJWT {
		return nil
	}
	now := s.now()
	what := "rotatord is rotating early the agents whose credentials keep older entries from folding into '*'"
	if acc.KeepRevocations {
		what = "the account keeps its revocation entries (keep_revocations), so rotations that would take it past the limit are refused: " +
			"set keep_revocations to false once rotatord manages every user of the account"
	}
	reason := fmt.Sprintf("the account JWT is %d bytes with %d revocation entries, past half of the %d-byte limit (ROTATORD_MAX_ACCOUNT_JWT_BYTES); %s",
		size, len(revs), s.maxJWT, what)
	if err := s.alertOnce(ctx, acc, AlertJWTLarge, rotatord.SeverityWarning, reason, "", jwtLargeAlertEvery); err != nil {
		return err
	}
	if acc.KeepRevocations {
		return nil
	}
	return s.makeRoom(ctx, acc, revs, now)
}

// makeRoom makes due now the agents whose credentials in use are older
// than the entries that must fold to bring the JWT to a quarter of the
// guard. Entries younger than the compaction margin cannot fold yet
// whatever rotates, so they are not counted on.
func (s *Service) makeRoom(ctx context.Context, acc *rotatord.Account, revs []rotatord.Revocation, now time.Time) error {
	need := (len(acc.JWT) - s.maxJWT/4 + revocationEntryBytes - 1) / revocationEntryBytes
	foldable := now.Add(-compactionMargin)
	var issued []time.Time
	for _, r := range revs {
		if r.PublicKey != jwt.All && !r.IssuedAt.After(foldable) {
			issued = append(issued, r.IssuedAt)
		}
	}
	if need <= 0 || len(issued) == 0 {
		return nil
	}
	slices.SortFunc(issued, time.Time.Compare)
	t := issued[min(need, len(issued))-1]
	_, moved, err := s.store.HastenRotations(ctx, acc.ID, t, now, false)
	if err != nil || moved == 0 {
		return err
	}
	s.log.Info("rotating agents early to make room in the account jwt", "account", acc.Name, "agents", moved,
		"jwt_bytes", len(acc.JWT), "issued_by", t)
	return s.audit(ctx, SystemActor, "account.make_room", rotatord.AuditEvent{Account: acc.Name, PublicKey: acc.PublicKey,
		Details: map[string]any{"agents": moved, "issued_by": t, "jwt_bytes": len(acc.JWT), "entries": len(revs)}})
}

// alertOnce raises an alert of kind for the account unless one (with the
// same sub-key) went out within every, from any replica.
func (s *Service) alertOnce(ctx context.Context, acc *rotatord.Account, kind, severity, reason, sub string, every time.Duration) error {
	now := s.now()
	key := acc.PublicKey
	if sub != "" {
		key += "/" + sub
	}
	wrote, err := s.store.AddAlertOnce(ctx, &rotatord.Alert{Kind: kind, Severity: severity, Account: acc.Name, Reason: reason},
		key, now, now.Add(every))
	if err != nil {
		return err
	}
	if wrote {
		s.kickAlerts() // the dispatcher also polls, for when this kick comes before the commit
	}
	return nil
}

// refusal is a rotation refused for want of room in its account's JWT.
type refusal struct {
	g   *rotatord.Agent
	err error
}

// roomFor checks that the rotations of gs (locked agents) fit in their
// accounts' JWTs: only accounts that keep their revocation entries can run
// out, since each rotation adds an entry that can never fold. It locks
// such accounts (agents, then account: the usual order) so that replicas
// starting rotations at once count each other's, and returns the agents
// that may rotate and those refused.
func (s *Service) roomFor(ctx context.Context, gs []*rotatord.Agent) (ok []*rotatord.Agent, refused []refusal, err error) {
	byAccount := map[int64][]*rotatord.Agent{}
	var accounts []int64
	for _, g := range gs {
		if byAccount[g.AccountID] == nil {
			accounts = append(accounts, g.AccountID)
		}
		byAccount[g.AccountID] = append(byAccount[g.AccountID], g)
	}
	slices.Sort(accounts)
	for _, id := range accounts {
		members := byAccount[id]
		keep, _, _, err := s.store.RevocationRoom(ctx, id)
		if err != nil {
			return nil, nil, err
		}
		if !keep {
			ok = append(ok, members...)
			continue
		}
		acc, err := s.store.LockAccount(ctx, id)
		if err != nil {
			return nil, nil, err
		}
		_, entries, inFlight, err := s.store.RevocationRoom(ctx, id)
		if err != nil {
			return nil, nil, err
		}
		// Entries recorded but not re-signed yet, and one for each rotation
		// in flight, will be in the JWT too.
		signed := 0
		if ac, err := jwt.DecodeAccountClaims(acc.JWT); err == nil {
			signed = len(ac.Revocations)
		}
		projected := len(acc.JWT) + revocationEntryBytes*(entries-signed+inFlight)
		room := max(0, (s.maxJWT-projected)/revocationEntryBytes)
		if room >= len(members) {
			ok = append(ok, members...)
			continue
		}
		ok = append(ok, members[:room]...)
		why := rotatord.Errorf(rotatord.EJWTFULL,
			"account %q keeps its revocation entries (keep_revocations), and its JWT (%d bytes with %d entries, %d more to come from rotations in flight) has no room under the %d-byte limit (ROTATORD_MAX_ACCOUNT_JWT_BYTES) for the entry a rotation adds: "+
				"set keep_revocations to false once rotatord manages every user of the account (PATCH /v1/accounts/%s), raise the limit, or wait for entries to expire",
			acc.Name, len(acc.JWT), entries, inFlight, s.maxJWT, acc.Name)
		for _, g := range members[room:] {
			refused = append(refused, refusal{g, why})
		}
		if err := s.alertOnce(ctx, acc, AlertJWTFull, rotatord.SeverityCritical,
			"rotations are refused: "+why.Message+"; agents whose rotations are refused keep their credentials until these expire", "refuse", jwtFullAlertEvery); err != nil {
			return nil, nil, err
		}
	}
	return ok, refused, nil
}

// postpone moves refused scheduled rotations roomRetry later, so that the
// scheduler does not retry them every tick.
func (s *Service) postpone(ctx context.Context, refused []refusal, now time.Time) error {
	if len(refused) == 0 {
		return nil
	}
	gs := make([]*rotatord.Agent, len(refused))
	retry := now.Add(roomRetry)
	for i, r := range refused {
		r.g.NextRotationAt = &retry
		gs[i] = r.g
		s.log.Warn("rotation refused: no room in the account jwt", "agent", r.g.Name, "account", r.g.Account, "retry_at", retry)
	}
	return s.store.SetSchedules(ctx, gs)
}
