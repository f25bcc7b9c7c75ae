package doctor

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/auditchain"
)

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func key(t *testing.T, create func() (nkeys.KeyPair, error)) string {
	t.Helper()
	kp, err := create()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	return pub
}

// operator returns rotatord's operator and the claims a server trusting it
// holds.
func operator(t *testing.T) (Operator, *jwt.OperatorClaims) {
	op := Operator{Name: "acme", PublicKey: key(t, nkeys.CreateOperator), SigningKey: key(t, nkeys.CreateOperator),
		SystemAccount: key(t, nkeys.CreateAccount)}
	oc := jwt.NewOperatorClaims(op.PublicKey)
	oc.Name = op.Name
	oc.SigningKeys.Add(op.SigningKey)
	oc.SystemAccount = op.SystemAccount
	return op, oc
}

func want(t *testing.T, r Result, status Status, msg ...string) {
	t.Helper()
	if r.Status != status {
		t.Errorf("%s %s = %s %q, want %s", r.Check, r.Subject, r.Status, r.Message, status)
	}
	for _, m := range msg {
		if !strings.Contains(r.Message+" fix: "+r.Fix, m) {
			t.Errorf("%s %s: %q (fix %q) lacks %q", r.Check, r.Subject, r.Message, r.Fix, m)
		}
	}
	if status == StatusFail && r.Fix == "" && r.Check != "servers" && r.Check != "server varz" {
		t.Errorf("%s failed without saying what to fix: %q", r.Check, r.Message)
	}
}

func TestTrust(t *testing.T) {
	op, oc := operator(t)
	s := Server{ID: "NSRV", Name: "n1", SystemAccount: op.SystemAccount, TrustedOperators: []*jwt.OperatorClaims{oc}}
	want(t, Trust(s, op), StatusOK, "trusts operator acme")

	// A server of another operator.
	other := jwt.NewOperatorClaims(key(t, nkeys.CreateOperator))
	other.Name = "legacy"
	wrong := s
	wrong.TrustedOperators = []*jwt.OperatorClaims{other}
	want(t, Trust(wrong, op), StatusFail, "trusts operator legacy", "not rotatord's operator acme ("+op.PublicKey+")", "rotatord nats-config", "n1")

	// Both: fine, and said.
	both := s
	both.TrustedOperators = []*jwt.OperatorClaims{other, oc}
	want(t, Trust(both, op), StatusOK, "and also legacy")

	// rotatord's operator, but a JWT from before its current signing key.
	stale := jwt.NewOperatorClaims(op.PublicKey)
	stale.Name = op.Name
	old := s
	old.TrustedOperators = []*jwt.OperatorClaims{stale}
	want(t, Trust(old, op), StatusFail, "without rotatord's signing key "+op.SigningKey)

	sys := s
	sys.SystemAccount = key(t, nkeys.CreateAccount)
	want(t, Trust(sys, op), StatusFail, "its system account is "+sys.SystemAccount)

	none := s
	none.TrustedOperators = nil
	want(t, Trust(none, op), StatusFail, "trusts no operator")
}

// The skew is the server's time against the midpoint of the request; half
// the round trip is the uncertainty.
func TestClock(t *testing.T) {
	s := Server{ID: "NSRV", Name: "n1"}
	rtt := 20 * time.Millisecond
	for _, c := range []struct {
		skew   time.Duration
		rtt    time.Duration
		status Status
		msg    string
	}{
		{0, rtt, StatusOK, "agrees with rotatord's within 1ms"},
		{300 * time.Millisecond, rtt, StatusOK, "300ms ahead of rotatord's (±10ms)"},
		{-5 * time.Second, rtt, StatusWarn, "5s behind rotatord's"},
		{2 * time.Minute, rtt, StatusFail, "2m0s ahead of rotatord's"},
		{-time.Hour, rtt, StatusFail, "1h0m0s behind"},
		// A slow round trip is no skew: 1.5 s off, ±2 s.
		{1500 * time.Millisecond, 4 * time.Second, StatusOK, "1.5s ahead of rotatord's (±2s)"},
	} {
		sent := t0
		received := sent.Add(c.rtt)
		serverNow := sent.Add(c.rtt / 2).Add(c.skew)
		r := Clock(s, serverNow, sent, received)
		want(t, r, c.status, c.msg)
		if c.status != StatusOK && !strings.Contains(r.Fix, "NTP") {
			t.Errorf("clock fix = %q", r.Fix)
		}
	}
	want(t, Clock(s, time.Time{}, t0, t0), StatusWarn, "no time")
}

func TestResolver(t *testing.T) {
	base := "http://rotatord:8080/jwt/v1/accounts/"
	good := ResolverProbe{URL: base, BaseStatus: 200, Account: "ASYS", AccountStatus: 200, AccountJWT: "jwt", Elapsed: 3 * time.Millisecond}
	want(t, Resolver(good, "jwt"), StatusOK, "answers in 3ms")

	down := ResolverProbe{URL: base, Err: errors.New("dial tcp 10.0.0.9:8080: connect: connection refused")}
	want(t, Resolver(down, "jwt"), StatusFail, "does not answer: dial tcp", "ROTATORD_PUBLIC_URL")

	notFound := good
	notFound.BaseStatus = 404
	want(t, Resolver(notFound, "jwt"), StatusFail, "answered 404", "refuses to start")

	slow := good
	slow.Elapsed = 2500 * time.Millisecond
	want(t, Resolver(slow, "jwt"), StatusFail, "after 2.5s", "1.9s")

	behind := good
	behind.AccountJWT = "older"
	want(t, Resolver(behind, "jwt"), StatusWarn, "other than the stored one")

	missing := good
	missing.AccountStatus = 404
	want(t, Resolver(missing, "jwt"), StatusFail, "ASYS answered 404")
}

func TestAccountJWTs(t *testing.T) {
	rs := AccountJWTs([]AccountSize{{"small", 900}, {"big", 2000}}, 10000, 0)
	if len(rs) != 1 {
		t.Fatalf("results = %+v, want one ok", rs)
	}
	want(t, rs[0], StatusOK, "2 accounts", "the largest, big, has 2000")

	rs = AccountJWTs([]AccountSize{{"small", 900}, {"near", 8500}, {"over", 10001}}, 10000, 0)
	if len(rs) != 2 {
		t.Fatalf("results = %+v, want near and over", rs)
	}
	want(t, rs[0], StatusWarn, "8500 bytes, 85% of the guard of 10000")
	want(t, rs[1], StatusFail, "above the guard of 10000", "ROTATORD_MAX_ACCOUNT_JWT_BYTES")

	rs = AccountJWTs([]AccountSize{{"fat", 5000}}, 10000, 4096)
	want(t, rs[0], StatusFail, "more than the servers' max_payload of 4096")
}

func TestRotations(t *testing.T) {
	deadline := t0.Add(-10 * time.Minute)
	stuck := []*rotatord.Rotation{{ID: "r1", Agent: "kate", State: "distributed", Deadline: &deadline}}
	rolled := []*rotatord.Rotation{{ID: "r2", Agent: "lee", State: "rolled_back", Reason: "the agent did not reconnect"}}
	rs := Rotations(stuck, 7, rolled, 1, 24*time.Hour)
	want(t, rs[0], StatusFail, "7 rotations in flight", "kate (r1, distributed, deadline 2026-11-23T11:50:00Z)", "and 6 more")
	want(t, rs[1], StatusWarn, "1 rotations rolled back in the last 24h", "lee (r2, the agent did not reconnect)")
	rs = Rotations(nil, 0, nil, 0, time.Hour)
	want(t, rs[0], StatusOK, "none")
	want(t, rs[1], StatusOK, "none in the last 1h")
}

func TestDatabaseMasterKeyAudit(t *testing.T) {
	want(t, Database(nil, 8, 8), StatusOK, "version 8, the latest")
	want(t, Database(nil, 7, 8), StatusFail, "version 7", "needs 8", "rotatord migrate")
	want(t, Database(nil, 9, 8), StatusWarn, "newer")
	want(t, Database(errors.New("cannot connect to PostgreSQL"), 0, 0), StatusFail, "cannot connect", "ROTATORD_DATABASE_URL")

	want(t, MasterKey(nil, 3, nil), StatusOK, "operator and 2 accounts")
	want(t, MasterKey(errors.New("master key file: no such file"), 0, nil), StatusFail, "no such file", "ROTATORD_MASTER_KEY_FILE")
	want(t, MasterKey(nil, 3, []KeyProblem{{Owner: "fleet", Key: "AKEY", Err: "message authentication failed"}}), StatusFail,
		"1 of 3", "fleet (AKEY): message authentication failed")

	head := auditchain.Head{Seq: 12, Hash: "ab12"}
	want(t, Audit(&auditchain.Report{Events: 12, Head: head}, nil, 0), StatusOK, "12 events verify; head 12:ab12")
	want(t, Audit(&auditchain.Report{Events: 12, Head: head}, nil, 2), StatusWarn, "2 events older than 5m are not sealed")
	bad := &auditchain.Report{Events: 12, Head: head, Problems: []auditchain.Problem{{Kind: "changed", Message: "event 4 was changed"}}}
	want(t, Audit(bad, nil, 0), StatusFail, "1 problems in 12 events", "event 4 was changed")
}

func TestNATS(t *testing.T) {
	op, oc := operator(t)
	good := Server{ID: "N1", Name: "n1", SystemAccount: op.SystemAccount, TrustedOperators: []*jwt.OperatorClaims{oc},
		Sent: t0, Received: t0.Add(2 * time.Millisecond), Now: t0.Add(time.Millisecond), MaxPayload: 1 << 20}
	p := NATSProbe{Connected: true, URLs: []URLProbe{{URL: "nats://n1:4222"},
		{URL: "nats://n2:4222", Err: errors.New("nats: authorization violation")},
		{URL: "nats://n3:4222", Err: errors.New("dial tcp: connection refused")}},
		Servers: []Server{good, {ID: "N4", Err: nats.ErrTimeout}}}
	rs := NATS(p, op)
	byKey := map[string]Result{}
	for _, r := range rs {
		byKey[r.Check+" "+r.Subject] = r
	}
	want(t, byKey["nats nats://n1:4222"], StatusOK, "connects")
	want(t, byKey["nats nats://n2:4222"], StatusFail, "refuses rotatord's system user", "does not trust operator acme")
	want(t, byKey["nats nats://n3:4222"], StatusFail, "cannot connect")
	want(t, byKey["servers "], StatusOK, "2 answered")
	want(t, byKey["server trust n1"], StatusOK)
	want(t, byKey["clock n1"], StatusOK)
	want(t, byKey["server varz N4"], StatusFail, "timeout")
	if got := p.MaxPayload(); got != 1<<20 {
		t.Errorf("MaxPayload = %d", got)
	}
	rs = NATS(NATSProbe{Connected: true}, op)
	want(t, rs[0], StatusFail, "no server answered $SYS.REQ.SERVER.PING")
}

// Run skips what depends on a failed check and reports the worst status.
func TestRunSkipsWhatNeedsTheDatabase(t *testing.T) {
	called := false
	src := Sources{
		Database: func(context.Context) (int64, int64, error) { return 0, 0, errors.New("cannot connect to PostgreSQL") },
		MasterKey: func(context.Context) (int, []KeyProblem, error, error) {
			called = true
			return 0, nil, nil, nil
		},
		Operator: func(context.Context) (Operator, error) { called = true; return Operator{}, nil },
		NATS:     func(context.Context) NATSProbe { called = true; return NATSProbe{} },
		Resolver: func(context.Context) ResolverProbe {
			return ResolverProbe{URL: "u", BaseStatus: 200}
		},
		Accounts: func(context.Context) ([]AccountSize, error) { called = true; return nil, nil },
		Audit:    func(context.Context) (*auditchain.Report, int, error) { called = true; return nil, 0, nil },
	}
	rep := Run(context.Background(), src)
	if called {
		t.Error("a check that needs the database ran without it")
	}
	if rep.Status != StatusFail {
		t.Errorf("status = %s, want fail", rep.Status)
	}
	var skipped []string
	for _, r := range rep.Results {
		if r.Status == StatusSkip {
			skipped = append(skipped, r.Check)
		}
	}
	if strings.Join(skipped, ",") != "master key,nats,account jwt,audit chain" {
		t.Errorf("skipped %v", skipped)
	}

	ok := Run(context.Background(), Sources{
		Database: func(context.Context) (int64, int64, error) { return 8, 8, nil },
		Resolver: func(context.Context) ResolverProbe {
			return ResolverProbe{URL: "u", BaseStatus: 200, Elapsed: time.Millisecond}
		},
	})
	if ok.Status != StatusOK {
		t.Errorf("status = %s (%+v), want ok", ok.Status, ok.Results)
	}
}

func TestSealedValues(t *testing.T) {
	want(t, SealedValues(nil, nil), StatusOK, "every sealed value")
	want(t, SealedValues(nil, []string{"3 value(s) are sealed in the first format"}), StatusOK, "first format")
	want(t, SealedValues([]string{"1 signing key seed(s) sealed by master key 1a2b, which no live replica holds"}, nil), StatusFail,
		"master key 1a2b", "ROTATORD_MASTER_KEY_FILE", "rotatord master-key status")

	// Skipped without the database, failed when it cannot be read.
	rep := Run(context.Background(), Sources{
		Database: func(context.Context) (int64, int64, error) { return 0, 0, errors.New("down") },
		Sealed: func(context.Context) ([]string, []string, error) {
			t.Error("ran without the database")
			return nil, nil, nil
		},
	})
	if rep.Results[1].Check != "sealed values" || rep.Results[1].Status != StatusSkip {
		t.Errorf("without the database: %+v", rep.Results)
	}
	rep = Run(context.Background(), Sources{
		Database: func(context.Context) (int64, int64, error) { return 8, 8, nil },
		Sealed:   func(context.Context) ([]string, []string, error) { return nil, nil, errors.New("permission denied") },
	})
	want(t, rep.Results[1], StatusFail, "cannot read the sealed values")
}
