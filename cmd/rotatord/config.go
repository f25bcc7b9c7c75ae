package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/httpapi"
	"github.com/rotatord/rotatord/internal/ratelimit"
	"github.com/rotatord/rotatord/internal/rotate"
)

// Config is rotatord's configuration: DefaultConfig, then ROTATORD_*
// environment variables, then flags, then Validate.
type Config struct {
	DatabaseURL   string
	Listen        string
	PublicURL     string
	NATSURL       string
	MasterKeyFile string
	AlertWebhook  string
	NoMigrate     bool
	// Vault delivery: on when VAULT_ADDR is set (Vault's own variables,
	// VAULT_TOKEN among them, are read by its client).
	VaultAddr         string
	VaultAuth         string // token (default), approle, kubernetes
	VaultRoleID       string
	VaultSecretIDFile string
	VaultK8sRole      string
	VaultMount        string
	VaultPath         string
	// FileDeliveryDir turns on file delivery into that folder.
	FileDeliveryDir string
	LogLevel        string
	LogFormat       string
	MaxBody         int64
	PushTimeout     time.Duration
	ShutdownWait    time.Duration
	// An alert goes out when a source address or an agent has more than
	// AuthFailThreshold NATS authentication failures within AuthFailWindow.
	AuthFailThreshold int
	AuthFailWindow    time.Duration
	// The agent API's limits: refused requests per source address,
	// authenticated requests per agent, and the least time between two
	// rotations an agent starts itself.
	AgentFailRate          ratelimit.Rate
	AgentRate              ratelimit.Rate
	AgentRotateMinInterval time.Duration
	// AgentReconnectRate paces the reconnects of agents handed new creds
	// (past its burst); off with AgentReconnectOff.
	AgentReconnectRate ratelimit.Rate
	AgentReconnectOff  bool
	// TickSpec is the robfig/cron schedule of the rotation scheduler's tick;
	// empty turns the scheduler off (tests drive Tick themselves).
	TickSpec string
	// NoJitter and ResignDelay are for tests.
	NoJitter    bool
	ResignDelay time.Duration
	// Now is the clock of rotation decisions; time.Now when nil (tests move it).
	Now func() time.Time
	// envErrs are environment values that did not parse; Validate reports them.
	envErrs []error

	// TLS of the HTTP listener: HTTPS when TLSCertFile and TLSKeyFile are
	// set (both are re-read when they change). TLSClientCAFile turns on
	// mTLS for the token-authenticated admin API: the listener asks for
	// client certificates and those routes need one verified by this CA.
	TLSCertFile     string
	TLSKeyFile      string
	TLSClientCAFile string
	// TLSClientAllowed lists, comma-separated, the client certificate
	// identities (DNS or URI SANs, or CNs) allowed on that API; required
	// with TLSClientCAFile, so that not every certificate of the CA gets in.
	TLSClientAllowed string
	// TLS of rotatord's own NATS connection: NATSCAFile verifies the
	// servers; NATSCertFile and NATSKeyFile are its client certificate for
	// servers that require one (tls { verify: true }).
	NATSCAFile   string
	NATSCertFile string
	NATSKeyFile  string

	// MaxControlLine is the servers' max_control_line: no agent gets a
	// user JWT whose CONNECT line would be longer.
	MaxControlLine int
	// MaxAccountJWTBytes is the guard account JWTs stay under
	// (ROTATORD_MAX_ACCOUNT_JWT_BYTES, default 512 KiB); the console and
	// GET /v1/accounts show each JWT's size against it.
	MaxAccountJWTBytes int64
	// Propagation and outages. DBTimeout is the deadline of each API
	// request's database work (past it: 503 unavailable).
	// ServerForgetAfter is how long a silent nats-server is remembered (and
	// counted behind when it missed a push).
	DBTimeout         time.Duration
	ServerForgetAfter time.Duration
	// AlertRetention is how long alerts are kept.
	AlertRetention time.Duration
	// ResignEvery and Cluster tune re-signs and the tracking of the
	// cluster's servers (tests shorten them).
	ResignEvery time.Duration
	Cluster     rotate.ClusterConfig
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Listen:    ":8080",
		LogLevel:  "info",
		LogFormat: "json",
		MaxBody:   64 << 10,
		// A server that has many users of the account re-verifies each before
		// it answers a push (10,000 take about a second on a busy core).
		PushTimeout:  5 * time.Second,
		ShutdownWait: 10 * time.Second,
		TickSpec:     "@every 1s",

		AuthFailThreshold: 10,
		AuthFailWindow:    5 * time.Minute,

		AgentFailRate:          httpapi.DefaultAgentFailRate,
		AgentRate:              httpapi.DefaultAgentRate,
		AgentRotateMinInterval: rotate.DefaultAgentRotateMinInterval,
		AgentReconnectRate:     httpapi.DefaultAgentReconnectRate,
		MaxControlLine:         4096, // nats-server's default
		MaxAccountJWTBytes:     rotatord.DefaultMaxAccountJWTBytes,
		DBTimeout:              httpapi.DefaultDBTimeout,
		ServerForgetAfter:      rotate.DefaultServerForgetAfter,
		AlertRetention:         rotate.DefaultAlertRetention,
	}
}

// env variables, each mirrored by a flag.
var envNames = map[string]string{
	"database-url":         "ROTATORD_DATABASE_URL",
	"listen":               "ROTATORD_LISTEN",
	"public-url":           "ROTATORD_PUBLIC_URL",
	"nats-url":             "ROTATORD_NATS_URL",
	"master-key-file":      "ROTATORD_MASTER_KEY_FILE",
	"alert-webhook":        "ROTATORD_ALERT_WEBHOOK",
	"log-level":            "ROTATORD_LOG_LEVEL",
	"log-format":           "ROTATORD_LOG_FORMAT",
	"vault-auth":           "ROTATORD_VAULT_AUTH",
	"vault-role-id":        "ROTATORD_VAULT_ROLE_ID",
	"vault-secret-id-file": "ROTATORD_VAULT_SECRET_ID_FILE",
	"vault-k8s-role":       "ROTATORD_VAULT_K8S_ROLE",
	"vault-mount":          "ROTATORD_VAULT_MOUNT",
	"vault-path":           "ROTATORD_VAULT_PATH",
	"file-delivery-dir":    "ROTATORD_FILE_DELIVERY_DIR",
	"auth-fail-threshold":  "ROTATORD_AUTH_FAIL_THRESHOLD",
	"auth-fail-window":     "ROTATORD_AUTH_FAIL_WINDOW",
	"tls-cert-file":        "ROTATORD_TLS_CERT_FILE",
	"tls-key-file":         "ROTATORD_TLS_KEY_FILE",
	"tls-client-ca-file":   "ROTATORD_TLS_CLIENT_CA_FILE",
	"tls-client-allowed":   "ROTATORD_TLS_CLIENT_ALLOWED",
	"nats-ca-file":         "ROTATORD_NATS_CA_FILE",
	"nats-cert-file":       "ROTATORD_NATS_CERT_FILE",
	"nats-key-file":        "ROTATORD_NATS_KEY_FILE",
	// The agent API's limits.
	"agent-fail-rate":           "ROTATORD_AGENT_FAIL_RATE",
	"agent-rate":                "ROTATORD_AGENT_RATE",
	"agent-rotate-min-interval": "ROTATORD_AGENT_ROTATE_MIN_INTERVAL",
	"agent-reconnect-rate":      "ROTATORD_AGENT_RECONNECT_RATE",
	"max-control-line":          "ROTATORD_MAX_CONTROL_LINE",
	// The account JWT guard.
	"max-account-jwt-bytes": "ROTATORD_MAX_ACCOUNT_JWT_BYTES",
	"db-timeout":            "ROTATORD_DB_TIMEOUT",
	"server-forget-after":   "ROTATORD_SERVER_FORGET_AFTER",
	"alert-retention":       "ROTATORD_ALERT_RETENTION",
}

// fromEnv applies the environment to c.
func (c *Config) fromEnv(getenv func(string) string) {
	set := func(flagName string, dst *string) {
		if v := getenv(envNames[flagName]); v != "" {
			*dst = v
		}
	}
	set("database-url", &c.DatabaseURL)
	set("listen", &c.Listen)
	set("public-url", &c.PublicURL)
	set("nats-url", &c.NATSURL)
	set("master-key-file", &c.MasterKeyFile)
	set("alert-webhook", &c.AlertWebhook)
	set("log-level", &c.LogLevel)
	set("log-format", &c.LogFormat)
	set("vault-auth", &c.VaultAuth)
	set("vault-role-id", &c.VaultRoleID)
	set("vault-secret-id-file", &c.VaultSecretIDFile)
	set("vault-k8s-role", &c.VaultK8sRole)
	set("vault-mount", &c.VaultMount)
	set("vault-path", &c.VaultPath)
	set("file-delivery-dir", &c.FileDeliveryDir)
	set("tls-cert-file", &c.TLSCertFile)
	set("tls-key-file", &c.TLSKeyFile)
	set("tls-client-ca-file", &c.TLSClientCAFile)
	set("tls-client-allowed", &c.TLSClientAllowed)
	set("nats-ca-file", &c.NATSCAFile)
	set("nats-cert-file", &c.NATSCertFile)
	set("nats-key-file", &c.NATSKeyFile)
	if v := getenv(envNames["auth-fail-threshold"]); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			c.envErrs = append(c.envErrs, fmt.Errorf("%s=%q is not a whole number", envNames["auth-fail-threshold"], v))
		} else {
			c.AuthFailThreshold = n
		}
	}
	if v := getenv(envNames["auth-fail-window"]); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			c.envErrs = append(c.envErrs, fmt.Errorf("%s=%q is not a duration such as 5m", envNames["auth-fail-window"], v))
		} else {
			c.AuthFailWindow = d
		}
	}
	c.agentFromEnv(getenv)
	if v := getenv(envNames["max-control-line"]); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			c.envErrs = append(c.envErrs, fmt.Errorf("%s=%q is not a whole number of bytes", envNames["max-control-line"], v))
		} else {
			c.MaxControlLine = n
		}
	}
	if v := getenv(envNames["max-account-jwt-bytes"]); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			c.envErrs = append(c.envErrs, fmt.Errorf("%s=%q is not a number of bytes", envNames["max-account-jwt-bytes"], v))
		} else {
			c.MaxAccountJWTBytes = n
		}
	}
	c.durationFromEnv(getenv, "db-timeout", &c.DBTimeout, "5s")
	c.durationFromEnv(getenv, "server-forget-after", &c.ServerForgetAfter, "15m")
	c.durationFromEnv(getenv, "alert-retention", &c.AlertRetention, "720h")
	c.VaultAddr = getenv("VAULT_ADDR")
	if v := getenv("ROTATORD_NO_MIGRATE"); v == "1" || v == "true" {
		c.NoMigrate = true
	}
}

// bind registers the flags of the given names on fs.
func (c *Config) bind(fs *flag.FlagSet, names ...string) {
	for _, n := range names {
		help := "(env " + envNames[n] + ")"
		switch n {
		case "database-url":
			fs.StringVar(&c.DatabaseURL, n, c.DatabaseURL, "PostgreSQL URL "+help)
		case "listen":
			fs.StringVar(&c.Listen, n, c.Listen, "HTTP listen address "+help)
		case "public-url":
			fs.StringVar(&c.PublicURL, n, c.PublicURL, "URL where nats-servers reach rotatord "+help)
		case "nats-url":
			fs.StringVar(&c.NATSURL, n, c.NATSURL, "NATS URL(s), comma-separated; empty runs without NATS "+help)
		case "master-key-file":
			fs.StringVar(&c.MasterKeyFile, n, c.MasterKeyFile, "file with the base64 256-bit master key "+help)
		case "alert-webhook":
			fs.StringVar(&c.AlertWebhook, n, c.AlertWebhook, "URL that receives alerts as JSON "+help)
		case "log-level":
			fs.StringVar(&c.LogLevel, n, c.LogLevel, "debug, info, warn or error "+help)
		case "log-format":
			fs.StringVar(&c.LogFormat, n, c.LogFormat, "json or text "+help)
		case "vault-auth":
			fs.StringVar(&c.VaultAuth, n, c.VaultAuth, "Vault auth method: token, approle or kubernetes "+help)
		case "vault-role-id":
			fs.StringVar(&c.VaultRoleID, n, c.VaultRoleID, "AppRole role ID "+help)
		case "vault-secret-id-file":
			fs.StringVar(&c.VaultSecretIDFile, n, c.VaultSecretIDFile, "file with the AppRole secret ID "+help)
		case "vault-k8s-role":
			fs.StringVar(&c.VaultK8sRole, n, c.VaultK8sRole, "Vault Kubernetes auth role "+help)
		case "vault-mount":
			fs.StringVar(&c.VaultMount, n, c.VaultMount, "KV v2 mount for agent creds (default secret) "+help)
		case "vault-path":
			fs.StringVar(&c.VaultPath, n, c.VaultPath, "path template with {account} and {agent} (default nats/{account}/{agent}) "+help)
		case "file-delivery-dir":
			fs.StringVar(&c.FileDeliveryDir, n, c.FileDeliveryDir, "folder for delivery \"file\" "+help)
		case "tls-cert-file":
			fs.StringVar(&c.TLSCertFile, n, c.TLSCertFile, "PEM certificate (chain) of the HTTPS listener; with --tls-key-file turns HTTPS on "+help)
		case "tls-key-file":
			fs.StringVar(&c.TLSKeyFile, n, c.TLSKeyFile, "PEM private key of the HTTPS listener "+help)
		case "tls-client-ca-file":
			fs.StringVar(&c.TLSClientCAFile, n, c.TLSClientCAFile, "PEM CA(s) whose client certificates the admin API requires (mTLS) "+help)
		case "tls-client-allowed":
			fs.StringVar(&c.TLSClientAllowed, n, c.TLSClientAllowed, "client certificate identities (DNS or URI SANs, or CNs), comma-separated, allowed on the admin API; required with --tls-client-ca-file "+help)
		case "nats-ca-file":
			fs.StringVar(&c.NATSCAFile, n, c.NATSCAFile, "PEM CA(s) that sign the NATS servers' certificates "+help)
		case "nats-cert-file":
			fs.StringVar(&c.NATSCertFile, n, c.NATSCertFile, "PEM client certificate for NATS (mTLS) "+help)
		case "nats-key-file":
			fs.StringVar(&c.NATSKeyFile, n, c.NATSKeyFile, "PEM private key of the NATS client certificate "+help)
		case "auth-fail-threshold":
			fs.IntVar(&c.AuthFailThreshold, n, c.AuthFailThreshold, "alert when a source or agent has more NATS auth failures than this within --auth-fail-window "+help)
		case "auth-fail-window":
			fs.DurationVar(&c.AuthFailWindow, n, c.AuthFailWindow, "sliding window of the auth failure threshold "+help)
		case "agent-fail-rate":
			fs.Var(&c.AgentFailRate, n, "refused agent API requests allowed per source address, RATE/UNIT[:BURST] "+help)
		case "agent-rate":
			fs.Var(&c.AgentRate, n, "authenticated agent API requests allowed per agent, RATE/UNIT[:BURST] "+help)
		case "agent-reconnect-rate":
			fs.Var(reconnectRate{c}, n, "reconnects of agents handed new creds, RATE/UNIT[:BURST] per replica, or off "+help)
		case "agent-rotate-min-interval":
			fs.DurationVar(&c.AgentRotateMinInterval, n, c.AgentRotateMinInterval, "least time between two rotations an agent starts itself "+help)
		case "max-control-line":
			fs.IntVar(&c.MaxControlLine, n, c.MaxControlLine, "the nats-servers' max_control_line: agents whose CONNECT line would be longer are refused "+help)
		case "max-account-jwt-bytes":
			fs.Int64Var(&c.MaxAccountJWTBytes, n, c.MaxAccountJWTBytes, "largest account JWT rotatord stores or pushes, in bytes "+help)
		case "db-timeout":
			fs.DurationVar(&c.DBTimeout, n, c.DBTimeout, "deadline of each API request's database work; past it the request answers 503 "+help)
		case "server-forget-after":
			fs.DurationVar(&c.ServerForgetAfter, n, c.ServerForgetAfter, "forget a nats-server not heard from for this long "+help)
		case "alert-retention":
			fs.DurationVar(&c.AlertRetention, n, c.AlertRetention, "delete alerts raised longer ago than this "+help)
		case "no-migrate":
			fs.BoolVar(&c.NoMigrate, n, c.NoMigrate, "do not apply migrations at start (env ROTATORD_NO_MIGRATE=1)")
		}
	}
}

// publicURL returns the configured public URL, or one derived from the
// listen address (https when the listener serves TLS).
func (c *Config) publicURL() string {
	if c.PublicURL != "" {
		return strings.TrimSuffix(c.PublicURL, "/")
	}
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return c.scheme() + "://127.0.0.1:8080"
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return c.scheme() + "://" + net.JoinHostPort(host, port)
}

// scheme is the HTTP listener's URL scheme.
func (c *Config) scheme() string {
	if c.TLSCertFile != "" {
		return "https"
	}
	return "http"
}

// Validate names every bad field at once. needs lists what the command uses.
func (c *Config) Validate(needs ...string) error {
	var errs []error
	for _, n := range needs {
		switch n {
		case "database-url":
			if c.DatabaseURL == "" {
				errs = append(errs, errors.New("database url is required (ROTATORD_DATABASE_URL or --database-url)"))
			}
		case "master-key-file":
			if c.MasterKeyFile == "" {
				errs = append(errs, errors.New("master key file is required (ROTATORD_MASTER_KEY_FILE or --master-key-file)"))
			}
		case "listen":
			if _, _, err := net.SplitHostPort(c.Listen); err != nil {
				errs = append(errs, fmt.Errorf("listen address %q: %w", c.Listen, err))
			}
		case "tls":
			// Load every file now, so that serve fails at start with the
			// variable to fix rather than at the first handshake.
			errs = append(errs, c.checkTLSFiles()...)
		}
	}
	errs = append(errs, c.checkTLSPairs()...)
	if c.PublicURL != "" {
		if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("public url %q must be an http(s) URL", c.PublicURL))
		}
	}
	if c.AlertWebhook != "" {
		if u, err := url.Parse(c.AlertWebhook); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, errors.New("alert webhook must be an http(s) URL"))
		}
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.envErrs...)
	if c.AuthFailThreshold < 1 || c.AuthFailThreshold > 1000 {
		errs = append(errs, fmt.Errorf("auth failure threshold %d must be between 1 and 1000", c.AuthFailThreshold))
	}
	if c.AuthFailWindow < time.Second {
		errs = append(errs, fmt.Errorf("auth failure window %s must be at least 1s", c.AuthFailWindow))
	}
	errs = append(errs, c.validateAgentLimits()...)
	if c.MaxControlLine < 1024 || c.MaxControlLine > 64<<20 {
		errs = append(errs, fmt.Errorf("max control line %d must be between 1024 and %d bytes, as the servers' max_control_line", c.MaxControlLine, 64<<20))
	}
	if c.MaxAccountJWTBytes < 4<<10 || c.MaxAccountJWTBytes > 64<<20 {
		errs = append(errs, fmt.Errorf("max account jwt bytes %d must be between 4096 and 67108864", c.MaxAccountJWTBytes))
	}
	if c.DBTimeout < 100*time.Millisecond || c.DBTimeout > 5*time.Minute {
		errs = append(errs, fmt.Errorf("database timeout %s must be between 100ms and 5m (%s)", c.DBTimeout, envNames["db-timeout"]))
	}
	if c.ServerForgetAfter < time.Minute {
		errs = append(errs, fmt.Errorf("server forget interval %s must be at least 1m (%s)", c.ServerForgetAfter, envNames["server-forget-after"]))
	}
	if c.AlertRetention < time.Hour {
		errs = append(errs, fmt.Errorf("alert retention %s must be at least 1h (%s)", c.AlertRetention, envNames["alert-retention"]))
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		errs = append(errs, fmt.Errorf("log format %q is not json or text", c.LogFormat))
	}
	return errors.Join(errs...)
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log level %q is not debug, info, warn or error", s)
	}
	return l, nil
}

// logger builds the structured logger on stderr.
func (c *Config) logger() *slog.Logger {
	level, _ := parseLevel(c.LogLevel)
	opts := &slog.HandlerOptions{Level: level}
	if c.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, opts))
}

// agentFromEnv reads the agent API's limits from the environment.
func (c *Config) agentFromEnv(getenv func(string) string) {
	for _, r := range []struct {
		name string
		dst  *ratelimit.Rate
	}{{"agent-fail-rate", &c.AgentFailRate}, {"agent-rate", &c.AgentRate}} {
		if v := getenv(envNames[r.name]); v != "" {
			if err := r.dst.Set(v); err != nil {
				c.envErrs = append(c.envErrs, fmt.Errorf("%s: %w", envNames[r.name], err))
			}
		}
	}
	if v := getenv(envNames["agent-reconnect-rate"]); v != "" {
		if err := (reconnectRate{c}).Set(v); err != nil {
			c.envErrs = append(c.envErrs, fmt.Errorf("%s: %w", envNames["agent-reconnect-rate"], err))
		}
	}
	if v := getenv(envNames["agent-rotate-min-interval"]); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			c.envErrs = append(c.envErrs, fmt.Errorf("%s=%q is not a duration such as 10m", envNames["agent-rotate-min-interval"], v))
		} else {
			c.AgentRotateMinInterval = d
		}
	}
}

// reconnectRate is the flag.Value of --agent-reconnect-rate: a rate, or off.
type reconnectRate struct{ c *Config }

func (r reconnectRate) String() string {
	if r.c == nil {
		return ""
	}
	if r.c.AgentReconnectOff {
		return "off"
	}
	return r.c.AgentReconnectRate.String()
}

func (r reconnectRate) Set(s string) error {
	if strings.TrimSpace(s) == "off" {
		r.c.AgentReconnectOff = true
		return nil
	}
	if err := r.c.AgentReconnectRate.Set(s); err != nil {
		return fmt.Errorf("%w, or off", err)
	}
	r.c.AgentReconnectOff = false
	return nil
}

// validateAgentLimits checks the agent API's limits.
func (c *Config) validateAgentLimits() []error {
	var errs []error
	if !c.AgentFailRate.Valid() {
		errs = append(errs, fmt.Errorf("agent fail rate %v is not a rate such as 10/s:20", c.AgentFailRate))
	}
	if !c.AgentRate.Valid() {
		errs = append(errs, fmt.Errorf("agent rate %v is not a rate such as 5/s:10", c.AgentRate))
	}
	if !c.AgentReconnectOff && !c.AgentReconnectRate.Valid() {
		errs = append(errs, fmt.Errorf("agent reconnect rate %v is not a rate such as 1000/s:1000, or off", c.AgentReconnectRate))
	}
	if c.AgentRotateMinInterval < time.Second || c.AgentRotateMinInterval > 30*24*time.Hour {
		errs = append(errs, fmt.Errorf("agent rotate min interval %s must be between 1s and 720h", c.AgentRotateMinInterval))
	}
	return errs
}

// durationFromEnv sets *dst from the environment variable of flag name,
// noting a value that does not parse for Validate.
func (c *Config) durationFromEnv(getenv func(string) string, name string, dst *time.Duration, example string) {
	v := getenv(envNames[name])
	if v == "" {
		return
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		c.envErrs = append(c.envErrs, fmt.Errorf("%s=%q is not a duration such as %s", envNames[name], v, example))
		return
	}
	*dst = d
}
