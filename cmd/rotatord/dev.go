package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/natsrun"
	"github.com/rotatord/rotatord/internal/pglocal"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/internal/seal"
)

// runDev runs everything on this machine for a first try: a PostgreSQL
// cluster in a data folder (unless ROTATORD_DATABASE_URL is set), rotatord,
// an in-process nats-server in operator mode using rotatord's resolver, and
// a demo agent whose creds file it prints.
func runDev(ctx context.Context, cfg Config, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("dev", stderr)
	dir := fs.String("dir", ".rotatord-dev", "data folder for PostgreSQL, the master key, creds and the admin token")
	natsPort := fs.Int("nats-port", 4222, "client port of the in-process nats-server")
	if cfg.Listen == DefaultConfig().Listen {
		cfg.Listen = "127.0.0.1:8080"
	}
	if os.Getenv(envNames["log-format"]) == "" {
		cfg.LogFormat = "text"
	}
	cfg.bind(fs, "listen", "log-level", "log-format")
	if err := fs.Parse(args); err != nil {
		return err
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return fmt.Errorf("data folder: %w", err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return fmt.Errorf("create data folder: %w", err)
	}
	log := cfg.logger()

	if cfg.DatabaseURL == "" {
		pg, err := pglocal.Start(ctx, pglocal.Options{Dir: filepath.Join(abs, "pg"), Logger: log})
		if err != nil {
			return fmt.Errorf("start local postgresql: %w", err)
		}
		defer pg.Stop() //nolint:errcheck // logged by pglocal
		if err := pg.CreateDatabase(ctx, "rotatord"); err != nil {
			return err
		}
		cfg.DatabaseURL = pg.URL("rotatord")
		log.Info("local postgresql running", "dir", pg.Dir())
	}
	if cfg.MasterKeyFile == "" {
		cfg.MasterKeyFile = filepath.Join(abs, "master.key")
		if wrote, err := seal.WriteNewKeyFile(cfg.MasterKeyFile); err != nil {
			return err
		} else if wrote {
			log.Info("wrote a new master key", "file", cfg.MasterKeyFile)
		}
	}
	cfg.NATSURL = fmt.Sprintf("nats://127.0.0.1:%d", *natsPort)

	store, svc, err := openService(ctx, cfg, true)
	if err != nil {
		return err
	}
	op, _, err := svc.Init(ctx, "dev", "dev")
	store.Close()
	if err != nil {
		return err
	}

	m := NewMain()
	m.Config, m.Log = cfg, log
	if err := m.Run(ctx); err != nil {
		return err
	}
	defer m.Close()

	ns, err := natsrun.Start(natsrun.Options{
		OperatorJWT: op.JWT, SystemAccount: op.SystemAccount, Port: *natsPort, Name: "rotatord-dev",
		ResolverURL: m.URL() + "/jwt/v1/accounts/",
	})
	if err != nil {
		return fmt.Errorf("start nats-server: %w", err)
	}
	defer ns.Shutdown()

	credsPath, tokenPath, err := devDemo(ctx, m.Service, abs, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, `
rotatord dev is running.
  API and resolver: %[1]s   (admin token in %[3]s)
  nats-server:      %[2]s
  demo agent creds: %[4]s

Try it:
  nats --creds %[4]s -s %[2]s pub demo.hello "hi"
  curl -H "Authorization: Bearer $(cat %[3]s)" %[1]s/v1/agents
  curl -X POST -H "Authorization: Bearer $(cat %[3]s)" %[1]s/v1/agents/demo-agent/revoke

Ctrl-C stops everything; data stays in %[5]s.
`, m.URL(), ns.ClientURL(), tokenPath, credsPath, abs)
	<-ctx.Done()
	log.Info("shutting down")
	return nil
}

// devDemo makes sure the demo account, agent and admin token exist, and
// returns the paths of the agent's creds file and the token file.
func devDemo(ctx context.Context, svc *rotate.Service, dir string, log *slog.Logger) (string, string, error) {
	const actor = rotate.Actor("dev")
	tokenPath := filepath.Join(dir, "admin.token")
	if _, err := os.Stat(tokenPath); errors.Is(err, os.ErrNotExist) {
		name := "dev-admin-" + randSuffix()
		secret, _, err := svc.CreateToken(ctx, actor, name, rotatord.ScopeAdmin)
		if err != nil {
			return "", "", err
		}
		if err := writeSecretFile(tokenPath, []byte(secret+"\n")); err != nil {
			return "", "", err
		}
	}
	if _, err := svc.Account(ctx, "demo"); errors.Is(err, rotatord.ErrNotFound) {
		if _, err := svc.CreateAccount(ctx, actor, rotate.AccountInput{Name: "demo", Description: "created by rotatord dev"}); err != nil {
			return "", "", err
		}
	} else if err != nil {
		return "", "", err
	}
	credsPath := filepath.Join(dir, "demo-agent.creds")
	g, err := svc.Agent(ctx, "demo-agent")
	if err == nil {
		if _, statErr := os.Stat(credsPath); statErr == nil && g.State == rotatord.AgentActive {
			return credsPath, tokenPath, nil
		}
		// The creds were lost or revoked: start the demo agent afresh.
		if err := svc.DeleteAgent(ctx, actor, "demo-agent"); err != nil {
			return "", "", err
		}
	} else if !errors.Is(err, rotatord.ErrNotFound) {
		return "", "", err
	}
	_, creds, err := svc.CreateAgent(ctx, actor, rotate.AgentInput{
		Name: "demo-agent", Account: "demo",
		Permissions: rotatord.Permissions{
			Pub: rotatord.PermissionList{Allow: []string{"demo.>", "_INBOX.>"}},
			Sub: rotatord.PermissionList{Allow: []string{"demo.>", "_INBOX.>"}},
		},
	})
	if err != nil {
		return "", "", err
	}
	if err := writeSecretFile(credsPath, creds); err != nil {
		return "", "", err
	}
	log.Info("created demo agent", "agent", "demo-agent", "creds_file", credsPath)
	return credsPath, tokenPath, nil
}

// writeSecretFile writes data with mode 0600 through a temporary file and a
// rename, so a reader never sees half a file.
func writeSecretFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func randSuffix() string { return strings.ToLower(rand.Text()[:8]) }
