package distribute

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"
	"github.com/hashicorp/vault/api/auth/kubernetes"

	"github.com/rotatord/rotatord"
)

// Vault auth methods of VaultAuth.Method.
const (
	VaultAuthToken      = "token"
	VaultAuthAppRole    = "approle"
	VaultAuthKubernetes = "kubernetes"
)

// DefaultK8sTokenPath is where Kubernetes mounts a pod's service account
// token.
const DefaultK8sTokenPath = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// VaultAuth says where Vault is and how rotatord logs in to it.
type VaultAuth struct {
	// Addr is Vault's address; default VAULT_ADDR (then Vault's default,
	// https://127.0.0.1:8200). The other VAULT_* client variables
	// (VAULT_CACERT, VAULT_CLIENT_TIMEOUT, ...) apply too.
	Addr string
	// Method is "token" (default), "approle" or "kubernetes".
	Method string
	// Token is the token of method "token"; default VAULT_TOKEN.
	Token string
	// RoleID and SecretIDFile are the AppRole credentials; the file is read
	// at every login, so it can be replaced.
	RoleID, SecretIDFile string
	// K8sRole is the Vault role of method "kubernetes"; K8sTokenPath is the
	// service account token, default DefaultK8sTokenPath, read at every
	// login (projected tokens rotate).
	K8sRole, K8sTokenPath string
	// Mount overrides the auth method's mount path (default "approle" or
	// "kubernetes").
	Mount string
}

// NewVaultClient returns a Vault client logged in as auth says, and keeps
// its token alive until ctx ends: a LifetimeWatcher renews it; when it can
// no longer be renewed (maximum TTL reached, renewal refused), methods
// approle and kubernetes log in again, retrying with backoff, and method
// token logs an error, since a static token cannot be replaced. Renewal
// and login failures are logged, never their secrets.
//
// When Vault cannot be reached or is sealed at start, NewVaultClient still
// returns the client, logs a warning and keeps trying in the background:
// rotatord must serve (above all the resolver) while Vault is away, and
// deliveries fail with "vault unavailable" or "permission denied" until the
// login works. Each request times out after VAULT_CLIENT_TIMEOUT, or
// DefaultVaultTimeout when that is not set.
//
// Errors: rotatord.ErrInvalid for a bad configuration (unknown method,
// missing token, role, secret ID or token file that cannot be read);
// otherwise Vault refusing the login or the token ("vault login (approle):
// vault refused: invalid role or secret ID (400)", "look up vault token:
// vault refused: permission denied (403)").
func NewVaultClient(ctx context.Context, auth VaultAuth, log *slog.Logger) (*vaultapi.Client, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg := vaultapi.DefaultConfig()
	if cfg.Error != nil {
		return nil, rotatord.Errorf(rotatord.EINVALID, "vault client configuration: %v", cfg.Error)
	}
	if auth.Addr != "" {
		cfg.Address = auth.Addr
	}
	if os.Getenv(vaultapi.EnvVaultClientTimeout) == "" {
		cfg.Timeout = DefaultVaultTimeout
	}
	client, err := vaultapi.NewClient(cfg)
	if err != nil {
		return nil, rotatord.Errorf(rotatord.EINVALID, "vault client: %v", err)
	}
	log = log.With("vault", client.Address())

	method := strings.ToLower(strings.TrimSpace(auth.Method))
	var login func(context.Context) (*vaultapi.Secret, error)
	switch method {
	case "", VaultAuthToken:
		method = VaultAuthToken
		if auth.Token != "" {
			client.SetToken(auth.Token)
		}
		if client.Token() == "" {
			return nil, rotatord.Errorf(rotatord.EINVALID, "vault token auth needs a token: set VAULT_TOKEN")
		}
	case VaultAuthAppRole:
		if auth.RoleID == "" || auth.SecretIDFile == "" {
			return nil, rotatord.Errorf(rotatord.EINVALID, "vault approle auth needs a role ID and a secret ID file")
		}
		login = func(ctx context.Context) (*vaultapi.Secret, error) {
			opts := []approle.LoginOption{}
			if auth.Mount != "" {
				opts = append(opts, approle.WithMountPath(strings.Trim(auth.Mount, "/")))
			}
			m, err := approle.NewAppRoleAuth(auth.RoleID, &approle.SecretID{FromFile: auth.SecretIDFile}, opts...)
			if err != nil {
				return nil, err
			}
			return loginWith(ctx, client, m)
		}
	case VaultAuthKubernetes:
		if auth.K8sRole == "" {
			return nil, rotatord.Errorf(rotatord.EINVALID, "vault kubernetes auth needs a role")
		}
		path := auth.K8sTokenPath
		if path == "" {
			path = DefaultK8sTokenPath
		}
		login = func(ctx context.Context) (*vaultapi.Secret, error) {
			opts := []kubernetes.LoginOption{kubernetes.WithServiceAccountTokenPath(path)}
			if auth.Mount != "" {
				opts = append(opts, kubernetes.WithMountPath(strings.Trim(auth.Mount, "/")))
			}
			m, err := kubernetes.NewKubernetesAuth(auth.K8sRole, opts...)
			if err != nil {
				return nil, err
			}
			return loginWith(ctx, client, m)
		}
	default:
		return nil, rotatord.Errorf(rotatord.EINVALID, "unknown vault auth method %q: use token, approle or kubernetes", auth.Method)
	}

	k := &keeper{client: client, login: login, method: method, log: log}
	if login != nil {
		// Until the login works, no VAULT_TOKEN from the environment.
		client.ClearToken()
	}
	secret, err := k.acquire(ctx)
	if err != nil {
		if !transient(err) || ctx.Err() != nil {
			return nil, err
		}
		// rotatord (and the resolver nats-server needs) must start while
		// Vault is down or sealed; deliveries fail until it is back.
		log.Warn("vault is not reachable; logging in in the background", "method", method, "err", err)
		secret = nil
	} else if login != nil {
		log.Info("logged in to vault", "method", method, "ttl", leaseOf(secret))
	}
	go k.run(ctx, secret)
	return client, nil
}

// loginWith logs in with m on a token-less copy of client (neither an
// expired token nor VAULT_TOKEN rides along on the login) and gives client
// the new token.
func loginWith(ctx context.Context, client *vaultapi.Client, m vaultapi.AuthMethod) (*vaultapi.Secret, error) {
	c, err := client.Clone()
	if err != nil {
		return nil, err
	}
	c.ClearToken()
	s, err := m.Login(ctx, c)
	if err != nil {
		return nil, err
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return nil, errors.New("vault answered the login without a client token")
	}
	client.SetToken(s.Auth.ClientToken)
	return s, nil
}

// tokenSecret looks the static token up and returns it in the shape a
// LifetimeWatcher renews.
func tokenSecret(ctx context.Context, client *vaultapi.Client) (*vaultapi.Secret, error) {
	s, err := client.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("look up vault token: %w", vaultFail(err))
	}
	renewable, _ := s.TokenIsRenewable()
	ttl, _ := s.TokenTTL()
	return &vaultapi.Secret{Auth: &vaultapi.SecretAuth{ClientToken: client.Token(), Renewable: renewable,
		LeaseDuration: int(ttl / time.Second)}}, nil
}

func loginError(method string, err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		// The secret ID or service account token file could not be read;
		// the message names the file, never its content.
		return rotatord.Errorf(rotatord.EINVALID, "vault login (%s): read %s: %v", method, pe.Path, pe.Err)
	}
	return fmt.Errorf("vault login (%s): %w", method, vaultFail(err))
}

func leaseOf(s *vaultapi.Secret) time.Duration {
	if s == nil || s.Auth == nil {
		return 0
	}
	return time.Duration(s.Auth.LeaseDuration) * time.Second
}

// keeper keeps a client's token alive.
type keeper struct {
	client *vaultapi.Client
	login  func(context.Context) (*vaultapi.Secret, error) // nil for a static token
	method string
	log    *slog.Logger
}

func (k *keeper) run(ctx context.Context, secret *vaultapi.Secret) {
	for {
		if secret == nil {
			var ok bool
			if secret, ok = k.retry(ctx); !ok {
				return
			}
		}
		if !k.watch(ctx, secret) {
			return
		}
		if k.login == nil {
			k.log.Error("vault token can no longer be renewed and a static token cannot log in again; " +
				"deliveries will fail once it expires: give rotatord a new VAULT_TOKEN or use approle or kubernetes auth")
			return
		}
		secret = nil
	}
}

// acquire logs in, or for a static token looks it up.
func (k *keeper) acquire(ctx context.Context) (*vaultapi.Secret, error) {
	if k.login == nil {
		return tokenSecret(ctx, k.client)
	}
	s, err := k.login(ctx)
	if err != nil {
		return nil, loginError(k.method, err)
	}
	return s, nil
}

// watch renews the token until it can no longer be renewed (true) or ctx
// ends (false).
func (k *keeper) watch(ctx context.Context, secret *vaultapi.Secret) bool {
	if secret.Auth == nil || secret.Auth.LeaseDuration <= 0 {
		k.log.Info("vault token does not expire; no renewal needed", "method", k.method)
		<-ctx.Done()
		return false
	}
	if !secret.Auth.Renewable {
		// Not renewable: use it until shortly before it expires.
		ttl := leaseOf(secret)
		k.log.Warn("vault token is not renewable", "ttl", ttl)
		t := time.NewTimer(ttl * 9 / 10)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	w, err := k.client.NewLifetimeWatcher(&vaultapi.LifetimeWatcherInput{Secret: secret})
	if err != nil {
		k.log.Error("vault token renewal cannot start", "err", err)
		return true
	}
	go w.Start()
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case err := <-w.DoneCh():
			if err != nil {
				k.log.Warn("vault token renewal failed", "method", k.method, "err", vaultFail(err))
			} else {
				k.log.Info("vault token reached its maximum TTL or can no longer be renewed", "method", k.method)
			}
			return true
		case r := <-w.RenewCh():
			k.log.Debug("vault token renewed", "ttl", leaseOf(r.Secret))
		}
	}
}

// retry logs in (or looks the token up) until it works (true) or ctx ends
// (false), with backoff.
func (k *keeper) retry(ctx context.Context) (*vaultapi.Secret, bool) {
	wait := 500 * time.Millisecond
	for {
		s, err := k.acquire(ctx)
		if err == nil {
			k.log.Info("logged in to vault", "method", k.method, "ttl", leaseOf(s))
			return s, true
		}
		if ctx.Err() != nil {
			return nil, false
		}
		k.log.Error("vault login failed", "method", k.method, "err", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, false
		case <-t.C:
		}
		wait = min(wait*2, time.Minute)
	}
}
