package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/auditchain"
	"github.com/rotatord/rotatord/internal/doctor"
	"github.com/rotatord/rotatord/internal/registry"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/internal/seal"
)

// doctorOptions are doctor's own flags.
type doctorOptions struct {
	asJSON     bool
	timeout    time.Duration
	caFile     string
	maxJWT     int
	stuckAfter time.Duration
	rollbacks  time.Duration
	// now is rotatord's clock (tests skew it).
	now func() time.Time
}

// runDoctor is `rotatord doctor`: it checks the deployment that the
// configuration describes, end to end, and says what to fix. It reads and
// changes nothing (no migrations, no sealing). Exit 0: all is well; 1: a
// check failed; 2: only warnings.
func runDoctor(ctx context.Context, cfg Config, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("doctor", stderr)
	o := doctorOptions{now: time.Now}
	fs.BoolVar(&o.asJSON, "json", false, "print the report as JSON")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Second, "how long each probe (a connection, a request) may take")
	fs.StringVar(&o.caFile, "ca-file", os.Getenv("ROTATORD_CA_FILE"), "PEM CA(s) that signed rotatord's HTTPS certificate, for the resolver check (env ROTATORD_CA_FILE)")
	fs.DurationVar(&o.stuckAfter, "stuck-after", time.Minute, "a rotation past its deadline by more than this is stuck")
	fs.DurationVar(&o.rollbacks, "rollbacks-within", 24*time.Hour, "rollbacks this recent are reported")
	// The guard on account JWT sizes is serve's: the same variable and flag.
	cfg.bind(fs, "database-url", "master-key-file", "nats-url", "public-url", "listen",
		"nats-ca-file", "nats-cert-file", "nats-key-file", "tls-cert-file", "max-account-jwt-bytes", "log-level", "log-format")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o.maxJWT = int(cfg.MaxAccountJWTBytes)
	if fs.NArg() > 0 {
		return fmt.Errorf("doctor: unexpected argument %q", fs.Arg(0))
	}
	if o.maxJWT <= 0 || o.timeout <= 0 || o.stuckAfter <= 0 || o.rollbacks <= 0 {
		return fmt.Errorf("--max-account-jwt-bytes, --timeout, --stuck-after and --rollbacks-within must be positive")
	}
	rep := diagnose(ctx, cfg, o)
	if err := printReport(stdout, rep, o.asJSON); err != nil {
		return err
	}
	switch rep.Status {
	case doctor.StatusFail:
		n, _ := rep.Counts()
		return &exitError{code: 1, msg: fmt.Sprintf("doctor: %d checks failed", n)}
	case doctor.StatusWarn:
		_, n := rep.Counts()
		return &exitError{code: 2, msg: fmt.Sprintf("doctor: %d warnings", n)}
	}
	return nil
}

// diagnose gathers the facts of the deployment cfg describes and checks
// them.
func diagnose(ctx context.Context, cfg Config, o doctorOptions) *doctor.Report {
	log := cfg.logger()
	var store *registry.Store
	var svc *rotate.Service
	var sealer *seal.Sealer
	src := doctor.Sources{Now: o.now, MaxAccountJWTBytes: o.maxJWT, RollbacksWithin: o.rollbacks}
	src.Database = func(ctx context.Context) (int64, int64, error) {
		if err := cfg.Validate("database-url"); err != nil {
			return 0, 0, err
		}
		var err error
		if store, err = registry.Open(ctx, cfg.DatabaseURL); err != nil {
			return 0, 0, err
		}
		pctx, cancel := context.WithTimeout(ctx, o.timeout)
		defer cancel()
		if err := store.Ping(pctx); err != nil {
			return 0, 0, err
		}
		return store.SchemaVersion(pctx)
	}
	defer func() {
		if store != nil {
			store.Close()
		}
	}()
	src.MasterKey = func(ctx context.Context) (int, []doctor.KeyProblem, error, error) {
		if err := cfg.Validate("master-key-file"); err != nil {
			return 0, nil, err, nil
		}
		var err error
		if sealer, err = seal.LoadFile(cfg.MasterKeyFile); err != nil {
			return 0, nil, err, nil
		}
		svc = rotate.New(rotate.Config{Store: store, Sealer: sealer, Log: log, PublicURL: cfg.publicURL(), Now: o.now})
		checked, problems, err := svc.CheckSigningKeys(ctx)
		out := make([]doctor.KeyProblem, len(problems))
		for i, p := range problems {
			out[i] = doctor.KeyProblem{Owner: p.Owner, Key: p.Key, Err: rotatord.ErrorMessage(p.Err)}
			if rotatord.ErrorCode(p.Err) == rotatord.EINTERNAL {
				out[i].Err = p.Err.Error() // a failed decryption: ours to show
			}
		}
		return checked, out, nil, err
	}
	// Runs after MasterKey: the local key file, when it loaded, checks the
	// values that do not name their key.
	src.Sealed = func(ctx context.Context) ([]string, []string, error) {
		st, err := rotate.New(rotate.Config{Store: store, Sealer: sealer, Log: log}).MasterKeyStatus(ctx)
		if err != nil {
			return nil, nil, err
		}
		return st.Problems, st.Notes, nil
	}
	var sysAccount string
	src.Operator = func(ctx context.Context) (doctor.Operator, error) {
		op, err := store.Operator(ctx)
		if err != nil {
			return doctor.Operator{}, err
		}
		signer, _, err := store.SigningKey(ctx, 0)
		if err != nil {
			return doctor.Operator{}, fmt.Errorf("operator signing key: %w", err)
		}
		sysAccount = op.SystemAccount
		return doctor.Operator{Name: op.Name, PublicKey: op.PublicKey, SigningKey: signer, SystemAccount: op.SystemAccount}, nil
	}
	src.SystemAccountJWT = func(ctx context.Context) (string, error) {
		a, err := store.FindAccountByPublicKey(ctx, sysAccount)
		if err != nil {
			return "", err
		}
		return a.JWT, nil
	}
	if cfg.NATSURL != "" {
		src.NATS = func(ctx context.Context) doctor.NATSProbe {
			tlsOpts, err := natsTLSOptions(&cfg, log)
			if err != nil {
				return doctor.NATSProbe{URLs: []doctor.URLProbe{{URL: redactURL(cfg.NATSURL), Err: err}}}
			}
			connect := func(url string) (*nats.Conn, error) {
				var kp nkeys.KeyPair
				opts := append([]nats.Option{
					nats.Name("rotatord-doctor"), nats.Timeout(o.timeout), nats.MaxReconnects(0), nats.NoReconnect(),
					nats.UserJWT(func() (string, error) {
						mctx, cancel := context.WithTimeout(ctx, o.timeout)
						defer cancel()
						token, k, err := svc.MintSystemUser(mctx)
						kp = k
						return token, err
					}, func(nonce []byte) ([]byte, error) { return kp.Sign(nonce) }),
				}, tlsOpts...)
				return nats.Connect(url, opts...)
			}
			p := doctor.ProbeNATS(ctx, cfg.NATSURL, connect, o.now, o.timeout)
			for i := range p.URLs {
				p.URLs[i].URL = redactURL(p.URLs[i].URL)
			}
			return p
		}
	}
	src.Resolver = func(ctx context.Context) doctor.ResolverProbe {
		base := cfg.publicURL() + "/jwt/v1/accounts/"
		client, err := resolverClient(o)
		if err != nil {
			return doctor.ResolverProbe{URL: base, Err: err}
		}
		return doctor.ProbeResolver(ctx, client, base, sysAccount, o.now)
	}
	src.Accounts = func(ctx context.Context) ([]doctor.AccountSize, error) {
		accounts, err := store.ListAccounts(ctx)
		if err != nil {
			return nil, err
		}
		out := make([]doctor.AccountSize, len(accounts))
		for i, a := range accounts {
			out[i] = doctor.AccountSize{Name: a.Name, Bytes: len(a.JWT)}
		}
		return out, nil
	}
	src.Rotations = func(ctx context.Context, now time.Time) ([]*rotatord.Rotation, int, []*rotatord.Rotation, int, error) {
		stuck, nStuck, err := store.StuckRotations(ctx, now.Add(-o.stuckAfter), o.stuckAfter, 5)
		if err != nil {
			return nil, 0, nil, 0, err
		}
		rolled, nRolled, err := store.RollbacksSince(ctx, now.Add(-o.rollbacks), 5)
		return stuck, nStuck, rolled, nRolled, err
	}
	src.Audit = func(ctx context.Context) (*auditchain.Report, int, error) {
		r, err := store.VerifyAudit(ctx, registry.VerifyAuditOptions{UnsealedAge: registry.DefaultUnsealedAge})
		if err != nil {
			return nil, 0, err
		}
		return r, int(r.Unsealed), nil
	}
	return doctor.Run(ctx, src)
}

// resolverClient is an HTTP client that verifies rotatord's certificate
// with --ca-file, when given, and follows no redirect (nats-server does
// not either).
func resolverClient(o doctorOptions) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if o.caFile != "" {
		pool, err := loadCA(o.caFile)
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	}
	return &http.Client{Transport: tr, Timeout: o.timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}, nil
}

// printReport writes the report: one line per check (and its fix), or JSON.
func printReport(w io.Writer, rep *doctor.Report, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		if err := enc.Encode(rep); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, r := range rep.Results {
		name := r.Check
		if r.Subject != "" {
			name += " " + r.Subject
		}
		status := string(r.Status)
		if r.Status == doctor.StatusFail {
			status = "FAIL"
		}
		// Names and messages may quote what servers said: printable only.
		fmt.Fprintf(tw, "%s\t%s\t%s\n", status, cell(name), cell(r.Message))
		if r.Fix != "" {
			fmt.Fprintf(tw, "\t\tfix: %s\n", cell(r.Fix))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fails, warns := rep.Counts()
	switch {
	case fails > 0:
		_, err := fmt.Fprintf(w, "\n%d failed, %d warnings: fix what FAIL says first.\n", fails, warns)
		return err
	case warns > 0:
		_, err := fmt.Fprintf(w, "\n%d warnings; nothing failed.\n", warns)
		return err
	}
	_, err := fmt.Fprintln(w, "\nall is well.")
	return err
}
