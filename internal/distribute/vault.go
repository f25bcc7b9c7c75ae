package distribute

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/rotatord/rotatord"
)

// Defaults of VaultConfig.
const (
	DefaultVaultMount        = "secret"
	DefaultVaultPathTemplate = "nats/{account}/{agent}"
	// DefaultVaultTimeout bounds each Vault request when the client has no
	// timeout of its own: deliveries run inside a database transaction.
	DefaultVaultTimeout = 10 * time.Second
)

// Fields of a delivered secret, as agents read them.
const (
	FieldCreds     = "creds"      // the NATS creds file (JWT and seed); absent when the agent holds its own seed
	FieldJWT       = "jwt"        // the user JWT
	FieldSeed      = "seed"       // the user seed; absent when the agent generated its own key
	FieldPublicKey = "public_key" // the user public key
	FieldRotation  = "rotation_id"
	FieldIssuedAt  = "issued_at"  // RFC 3339
	FieldExpiresAt = "expires_at" // RFC 3339
)

// VaultConfig configures a Vault distributor.
type VaultConfig struct {
	// Client talks to Vault, already authenticated (see NewVaultClient).
	// When it has no request timeout, NewVault sets DefaultVaultTimeout.
	Client *vaultapi.Client
	// Mount is the path of the KV version 2 engine; default "secret".
	Mount string
	// PathTemplate is the secret's path below the mount; {account} and
	// {agent} are replaced. Default "nats/{account}/{agent}".
	PathTemplate string
	// Log receives delivery and restore events; default: discarded.
	Log *slog.Logger
}

// Vault delivers credentials into Vault KV version 2, one secret per agent,
// each delivery a new version written with check-and-set so that a
// concurrent or newer write is never overwritten. The token needs, on
// <mount>/data/<path>: read, create, update; on <mount>/delete/<path>:
// update (for Restore after a first delivery).
type Vault struct {
	client *vaultapi.Client
	kv     *vaultapi.KVv2
	mount  string
	tmpl   string
	log    *slog.Logger
}

var (
	placeholderRE = regexp.MustCompile(`\{[^{}]*\}`)
	pathPartRE    = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
)

// NewVault returns a Vault distributor. It fails with rotatord.ErrInvalid
// when the client is missing or the mount or path template is not usable:
// the template must contain {agent}, may contain {account}, and otherwise
// only letters, digits, '.', '_', '-' and '/' between non-empty segments.
func NewVault(cfg VaultConfig) (*Vault, error) {
	if cfg.Client == nil {
		return nil, rotatord.Errorf(rotatord.EINVALID, "vault delivery needs a vault client")
	}
	mount := strings.Trim(cfg.Mount, "/")
	if mount == "" {
		mount = DefaultVaultMount
	}
	for _, seg := range strings.Split(mount, "/") {
		if !pathPartRE.MatchString(seg) || seg == "." || seg == ".." {
			return nil, rotatord.Errorf(rotatord.EINVALID, "vault mount %q is invalid", cfg.Mount)
		}
	}
	tmpl := cfg.PathTemplate
	if tmpl == "" {
		tmpl = DefaultVaultPathTemplate
	}
	if err := checkTemplate(tmpl); err != nil {
		return nil, err
	}
	if cfg.Client.ClientTimeout() <= 0 {
		cfg.Client.SetClientTimeout(DefaultVaultTimeout)
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Vault{client: cfg.Client, kv: cfg.Client.KVv2(mount), mount: mount, tmpl: tmpl, log: log}, nil
}

func checkTemplate(tmpl string) error {
	bad := func(why string) error {
		return rotatord.Errorf(rotatord.EINVALID, "vault path template %q is invalid: %s", tmpl, why)
	}
	if !strings.Contains(tmpl, "{agent}") {
		return bad("it must contain {agent}, or every agent would share one secret")
	}
	for _, p := range placeholderRE.FindAllString(tmpl, -1) {
		if p != "{agent}" && p != "{account}" {
			return bad("unknown placeholder " + p + " (use {account} and {agent})")
		}
	}
	// Placeholders stand for valid names; check what surrounds them.
	probe := strings.NewReplacer("{account}", "a", "{agent}", "a").Replace(tmpl)
	for _, seg := range strings.Split(probe, "/") {
		if seg == "" {
			return bad("empty path segment (leading, trailing or double '/')")
		}
		if seg == "." || seg == ".." || !pathPartRE.MatchString(seg) {
			return bad(fmt.Sprintf("segment %q: use letters, digits, '.', '_' and '-'", seg))
		}
	}
	return nil
}

// Path returns the secret's path below the mount for an agent, the
// template with {account} and {agent} replaced. It does not check the
// names; Deliver and Restore do.
func (v *Vault) Path(account, agent string) string {
	return strings.NewReplacer("{account}", account, "{agent}", agent).Replace(v.tmpl)
}

// Mount returns the KV v2 mount the secrets are written to.
func (v *Vault) Mount() string { return v.mount }

func (v *Vault) where(path string) string { return v.mount + "/" + path }

// Deliver writes h as a new version of the agent's secret and returns a
// reference "v<written>:prev<previous>" for Restore (prev0: there was no
// secret). The write uses check-and-set on the version read just before,
// so it never replaces a version written meanwhile; it also refuses to
// replace a secret that already holds newer credentials (a later
// issued_at). A retry for the same delivery (same rotation ID and public
// key as the current version) writes nothing and returns the same
// reference.
//
// Errors: rotatord.ErrInvalid for names that would escape the path;
// rotatord.ErrConflict when a newer version is in the way; and errors
// matching rotatord.ErrUnavailable when Vault is sealed ("vault is
// sealed"), unreachable, slow, failing ("vault unavailable: ...") or
// refusing the token ("vault refused: permission denied (403)"). No error
// contains a seed, creds or token.
func (v *Vault) Deliver(ctx context.Context, h rotatord.Handoff) (string, error) {
	if err := checkNames(h.Account, h.Agent); err != nil {
		return "", err
	}
	ref, err := v.deliver(ctx, h)
	return ref, scrub(err, string(h.Seed), string(h.Creds), v.client.Token())
}

func (v *Vault) deliver(ctx context.Context, h rotatord.Handoff) (string, error) {
	path := v.Path(h.Account, h.Agent)
	cur, err := v.latest(ctx, path)
	if err != nil {
		return "", fmt.Errorf("read vault secret %s: %w", v.where(path), err)
	}
	if cur.data != nil && str(cur.data, FieldPublicKey) == h.PublicKey && str(cur.data, FieldRotation) == h.RotationID {
		v.log.Info("credentials already in vault", "account", h.Account, "agent", h.Agent,
			"rotation", h.RotationID, "path", v.where(path), "version", cur.version)
		return formatRef(cur.version, cur.version-1), nil
	}
	if cur.data != nil && str(cur.data, FieldPublicKey) != h.PublicKey {
		if at, err := time.Parse(time.RFC3339, str(cur.data, FieldIssuedAt)); err == nil &&
			at.After(h.IssuedAt.Truncate(time.Second)) {
			return "", rotatord.Errorf(rotatord.ECONFLICT,
				"vault secret %s version %d holds newer credentials (issued %s) than these (issued %s); not overwriting",
				v.where(path), cur.version, at.Format(time.RFC3339), h.IssuedAt.UTC().Format(time.RFC3339))
		}
	}
	written, err := v.kv.Put(ctx, path, secretData(h), vaultapi.WithCheckAndSet(cur.version))
	if err != nil {
		err = vaultFail(err)
		if errors.Is(err, rotatord.ErrConflict) {
			return "", fmt.Errorf("write vault secret %s (check-and-set on version %d): %w", v.where(path), cur.version, err)
		}
		return "", fmt.Errorf("write vault secret %s: %w", v.where(path), err)
	}
	if written.VersionMetadata == nil {
		return "", rotatord.Errorf(rotatord.EINTERNAL, "write vault secret %s: vault answered without a version", v.where(path))
	}
	n := written.VersionMetadata.Version
	v.log.Info("credentials written to vault", "account", h.Account, "agent", h.Agent, "rotation", h.RotationID,
		"key", h.PublicKey, "path", v.where(path), "version", n, "previous", cur.version)
	return formatRef(n, cur.version), nil
}

// Restore undoes the delivery that returned ref, so that the agent finds
// what it had before: it writes the previous version's data again as a new
// version (check-and-set on the version Deliver wrote) or, when there was
// no previous version, soft-deletes the version Deliver wrote. When the
// secret has changed since (a newer version, a deletion, other
// credentials), Restore leaves it alone, logs why and returns nil.
//
// Errors: rotatord.ErrInvalid for a malformed ref or names; otherwise the
// same Vault errors as Deliver.
func (v *Vault) Restore(ctx context.Context, h rotatord.Handoff, ref string) error {
	if err := checkNames(h.Account, h.Agent); err != nil {
		return err
	}
	return scrub(v.restore(ctx, h, ref), string(h.Seed), string(h.Creds), v.client.Token())
}

func (v *Vault) restore(ctx context.Context, h rotatord.Handoff, ref string) error {
	written, prev, err := parseRef(ref)
	if err != nil {
		return err
	}
	path := v.Path(h.Account, h.Agent)
	log := v.log.With("account", h.Account, "agent", h.Agent, "rotation", h.RotationID, "path", v.where(path),
		"version", written)
	cur, err := v.latest(ctx, path)
	if err != nil {
		return fmt.Errorf("read vault secret %s: %w", v.where(path), err)
	}
	switch {
	case cur.version != written:
		log.Info("vault secret changed since delivery; not restoring", "current", cur.version)
		return nil
	case cur.data == nil:
		log.Info("delivered vault version is already deleted; nothing to restore")
		return nil
	case str(cur.data, FieldPublicKey) != h.PublicKey:
		log.Warn("delivered vault version holds other credentials; not restoring", "key", h.PublicKey)
		return nil
	}

	var before map[string]any
	if prev > 0 {
		old, err := v.kv.GetVersion(ctx, path, prev)
		switch {
		case errors.Is(err, vaultapi.ErrSecretNotFound):
		case err != nil:
			return fmt.Errorf("read vault secret %s version %d: %w", v.where(path), prev, vaultFail(err))
		default:
			before = old.Data
		}
	}
	if before == nil {
		// The agent had nothing readable before: take the new creds away
		// (they are being revoked) rather than leave a dead key in place.
		// Deleting the exact version cannot hit a newer write.
		if err := v.kv.DeleteVersions(ctx, path, []int{written}); err != nil {
			return fmt.Errorf("delete vault secret %s version %d: %w", v.where(path), written, vaultFail(err))
		}
		log.Info("vault secret deleted: there was no previous version to restore", "previous", prev)
		return nil
	}
	put, err := v.kv.Put(ctx, path, before, vaultapi.WithCheckAndSet(written))
	if err != nil {
		err = vaultFail(err)
		if errors.Is(err, rotatord.ErrConflict) {
			log.Info("vault secret changed while restoring; not restoring")
			return nil
		}
		return fmt.Errorf("restore vault secret %s version %d: %w", v.where(path), prev, err)
	}
	n := 0
	if put.VersionMetadata != nil {
		n = put.VersionMetadata.Version
	}
	log.Info("previous credentials restored in vault", "previous", prev, "restored_as", n,
		"restored_key", str(before, FieldPublicKey))
	return nil
}

// Check reports whether Vault can take deliveries, for readiness: nil when
// it answers sys/health initialized and unsealed; otherwise an error
// matching rotatord.ErrUnavailable ("vault is sealed", "vault unavailable:
// ...").
func (v *Vault) Check(ctx context.Context) error {
	health, err := v.client.Sys().HealthWithContext(ctx)
	if err != nil {
		return fmt.Errorf("check vault health: %w", vaultFail(err))
	}
	switch {
	case !health.Initialized:
		return rotatord.Errorf(rotatord.EUNAVAILABLE, "vault is not initialized")
	case health.Sealed:
		return rotatord.Errorf(rotatord.EUNAVAILABLE, "vault is sealed")
	}
	return nil
}

// current is the latest version of a secret: version 0 when there is
// none, data nil when that version is deleted or destroyed.
type current struct {
	version int
	data    map[string]any
}

// latest reads the secret's latest version. Reading data rather than
// metadata gives the version number too (Vault answers a deleted version
// with its metadata) and needs no metadata policy.
func (v *Vault) latest(ctx context.Context, path string) (current, error) {
	s, err := v.kv.Get(ctx, path)
	switch {
	case errors.Is(err, vaultapi.ErrSecretNotFound):
		return current{}, nil
	case err != nil:
		return current{}, vaultFail(err)
	case s.VersionMetadata == nil:
		return current{}, rotatord.Errorf(rotatord.EINTERNAL, "vault answered without version metadata")
	}
	return current{version: s.VersionMetadata.Version, data: s.Data}, nil
}

func secretData(h rotatord.Handoff) map[string]any {
	d := map[string]any{
		FieldJWT:       h.JWT,
		FieldPublicKey: h.PublicKey,
		FieldRotation:  h.RotationID,
		FieldIssuedAt:  h.IssuedAt.UTC().Format(time.RFC3339),
	}
	if !h.ExpiresAt.IsZero() {
		d[FieldExpiresAt] = h.ExpiresAt.UTC().Format(time.RFC3339)
	}
	if h.Seed != nil {
		d[FieldSeed] = string(h.Seed)
	}
	if h.Creds != nil {
		d[FieldCreds] = string(h.Creds)
	}
	return d
}

func str(m map[string]any, k string) string {
	s, _ := m[k].(string)
	return s
}

func formatRef(written, prev int) string { return fmt.Sprintf("v%d:prev%d", written, prev) }

func parseRef(ref string) (written, prev int, err error) {
	w, p, ok := strings.Cut(ref, ":")
	w, okW := strings.CutPrefix(w, "v")
	p, okP := strings.CutPrefix(p, "prev")
	if ok && okW && okP {
		written, errW := strconv.Atoi(w)
		prev, errP := strconv.Atoi(p)
		if errW == nil && errP == nil && written > 0 && prev >= 0 && prev < written {
			return written, prev, nil
		}
	}
	return 0, 0, rotatord.Errorf(rotatord.EINVALID, "invalid vault delivery reference %q: want v<version>:prev<version>", ref)
}

// checkNames refuses account and agent names that could leave the agent's
// own path or file.
func checkNames(account, agent string) error {
	for _, n := range []struct{ kind, name string }{{"account", account}, {"agent", agent}} {
		if n.name == "" || n.name == "." || strings.Contains(n.name, "..") || strings.ContainsAny(n.name, `/\`) ||
			strings.ContainsFunc(n.name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return rotatord.Errorf(rotatord.EINVALID, "%s name %q cannot be used in a delivery path", n.kind, n.name)
		}
	}
	return nil
}
