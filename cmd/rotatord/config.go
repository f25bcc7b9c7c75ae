package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"
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
	// TickSpec is the robfig/cron schedule of the rotation scheduler's tick;
	// empty turns the scheduler off (tests drive Tick themselves).
	TickSpec string
	// NoJitter and ResignDelay are for tests.
	NoJitter    bool
	ResignDelay time.Duration
	// Now is the clock of rotation decisions; time.Now when nil (tests move it).
	Now func() time.Time
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
		case "no-migrate":
			fs.BoolVar(&c.NoMigrate, n, c.NoMigrate, "do not apply migrations at start (env ROTATORD_NO_MIGRATE=1)")
		}
	}
}

// publicURL returns the configured public URL, or one derived from the
// listen address.
func (c *Config) publicURL() string {
	if c.PublicURL != "" {
		return strings.TrimSuffix(c.PublicURL, "/")
	}
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return "http://127.0.0.1:8080"
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
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
		}
	}
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
