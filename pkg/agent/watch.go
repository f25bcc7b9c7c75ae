package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/nats-io/jwt/v2"

	"github.com/rotatord/rotatord/internal/jwtissue"
)

// WatchFile reads the creds file at path every interval until ctx ends
// (a mounted secret that some other process replaces) and switches to it
// (Use) when its content changed. Like Run, it reads at once when the
// servers refuse the key in use, and quickly while they refuse every key. A file that cannot be read or does not
// parse yet (half written) is logged once and read again at the next
// interval; so are creds the servers refused a moment ago (ErrRefused).
func (c *Client) WatchFile(ctx context.Context, path string, interval time.Duration) {
	var seen []byte
	p := problems{c: c, source: "file", where: path}
	c.poll(ctx, interval, func() {
		data, err := os.ReadFile(path)
		if err != nil {
			p.report(fmt.Errorf("read creds file: %w", err))
			return
		}
		if seen != nil && bytes.Equal(data, seen) {
			return
		}
		if _, err := parseCreds(data); err != nil {
			p.report(fmt.Errorf("creds file unreadable or half written, will read it again: %w", err))
			return
		}
		if _, err := c.use(data, 0); err != nil {
			p.report(err)
			if errors.Is(err, ErrRefused) {
				return // try the same content again later
			}
		} else {
			p.clear()
		}
		seen = data
	})
}

// WatchVault reads a Vault KV v2 secret (mount, path) every interval until
// ctx ends and switches to the creds it holds (Use) when its public_key
// differs from the key in use. Like Run, it reads at once when the servers
// refuse the key in use, and quickly while they refuse every key. rotatord's Vault delivery writes it to mount
// "secret", path "nats/{account}/{agent}" unless configured otherwise. The
// secret holds the creds file in field "creds" (or fields "jwt" and
// "seed"); for a key the agent generated itself (RotateOwnKey) it holds
// only "jwt" (and "public_key"), which is combined with that key pair's
// seed if this client still holds it, and ignored otherwise. Failures
// (Vault unreachable, no secret yet, a secret without usable creds) are
// logged once and retried at the next interval.
func (c *Client) WatchVault(ctx context.Context, client *vaultapi.Client, mount, path string, interval time.Duration) {
	kv := client.KVv2(mount)
	seen := -1 // version handled last
	p := problems{c: c, source: "vault", where: mount + "/" + path}
	c.poll(ctx, interval, func() {
		s, err := kv.Get(ctx, path)
		if err != nil {
			if ctx.Err() == nil {
				p.report(err)
			}
			return
		}
		version := 0
		if s.VersionMetadata != nil {
			version = s.VersionMetadata.Version
		}
		if version != 0 && version == seen {
			return
		}
		file, pub, err := c.vaultCreds(s.Data)
		if err != nil {
			p.report(err)
			seen = version
			return
		}
		if pub == c.PublicKey() {
			p.clear()
			seen = version
			return
		}
		if _, err := c.use(file, 0); err != nil {
			p.report(err)
			if errors.Is(err, ErrRefused) {
				return
			}
		} else {
			p.clear()
		}
		seen = version
	})
}

// errNoSeed: a JWT-only delivery for a key pair this client does not hold.
var errNoSeed = errors.New("secret holds a jwt for a key pair this client does not hold; ignored")

// vaultCreds returns the creds file a secret's fields make, and its key.
func (c *Client) vaultCreds(data map[string]any) ([]byte, string, error) {
	str := func(k string) string {
		s, _ := data[k].(string)
		return s
	}
	if data == nil {
		return nil, "", errors.New("secret version is deleted")
	}
	if f := str("creds"); f != "" {
		k, err := parseCreds([]byte(f))
		if err != nil {
			return nil, "", fmt.Errorf("secret field creds: %w", err)
		}
		return k.file, k.pub, nil
	}
	token := str("jwt")
	if token == "" {
		return nil, "", errors.New("secret has neither a creds nor a jwt field")
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return nil, "", fmt.Errorf("secret field jwt: %w", err)
	}
	if pk := str("public_key"); pk != "" && pk != uc.Subject {
		return nil, "", fmt.Errorf("secret's public_key %s and jwt subject %s differ", pk, uc.Subject)
	}
	if uc.Subject == c.PublicKey() {
		return nil, uc.Subject, nil // nothing to do; no seed needed
	}
	if seed := str("seed"); seed != "" {
		// parseCreds checks that the seed is the JWT subject's key.
		file, err := jwtissue.Creds(token, []byte(seed))
		if err != nil {
			return nil, "", fmt.Errorf("secret fields jwt and seed: %w", err)
		}
		k, err := parseCreds(file)
		if err != nil {
			return nil, "", fmt.Errorf("secret fields jwt and seed: %w", err)
		}
		return k.file, k.pub, nil
	}
	c.mu.Lock()
	kp := c.pending
	c.mu.Unlock()
	if kp == nil {
		return nil, uc.Subject, errNoSeed
	}
	if pub, err := kp.PublicKey(); err != nil || pub != uc.Subject {
		return nil, uc.Subject, errNoSeed
	}
	file, err := ownCreds(kp, token)
	if err != nil {
		return nil, uc.Subject, err
	}
	return file, uc.Subject, nil
}

// problems logs a watcher's failures once each, not at every interval.
type problems struct {
	c             *Client
	source, where string
	last          string
}

func (p *problems) report(err error) {
	if err.Error() == p.last {
		return
	}
	p.last = err.Error()
	p.c.cfg.Log.Warn("watch creds", "agent", p.c.cfg.Name, "source", p.source, "path", p.where, "err", err)
}

func (p *problems) clear() { p.last = "" }
