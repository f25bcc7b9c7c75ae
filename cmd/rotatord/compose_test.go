package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
	"go.yaml.in/yaml/v3"

	"github.com/rotatord/rotatord/internal/httpapi"
)

// The compose stack cannot run here (no Docker), so its files are checked
// for what makes it work: the services, their order, TLS with client
// certificates, and that nats-server itself accepts the mounted config.

// composeFile is the part of docker-compose.yml the checks read.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image       string            `yaml:"image"`
	Build       any               `yaml:"build"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
	Healthcheck *struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
	DependsOn map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
}

// mount returns the source mounted at target ("" when none).
func (s composeService) mount(target string) string {
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && parts[1] == target {
			return parts[0]
		}
	}
	return ""
}

// The secrets that may be written in docker-compose.yml: development ones,
// named in its header.
var devSecrets = []string{"rotatord", "dev-root-token"}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	raw, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f composeFile
	if err := yaml.Unmarshal(raw, &f); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return f
}

func TestComposeFile(t *testing.T) {
	t.Parallel()
	f := loadCompose(t)
	for _, name := range []string{"postgres", "vault", "nats", "rotatord", "rotatord-init"} {
		if _, ok := f.Services[name]; !ok {
			t.Fatalf("service %s is missing", name)
		}
	}
	nats, rot, rinit, pg := f.Services["nats"], f.Services["rotatord"], f.Services["rotatord-init"], f.Services["postgres"]

	t.Run("images", func(t *testing.T) {
		m := regexp.MustCompile(`^nats:(\d+)\.(\d+)`).FindStringSubmatch(nats.Image)
		if m == nil {
			t.Fatalf("nats image %q is not nats:MAJOR.MINOR...", nats.Image)
		}
		major, _ := strconv.Atoi(m[1])
		minor, _ := strconv.Atoi(m[2])
		if major < 2 || major == 2 && minor < 10 {
			t.Errorf("nats image %s: want 2.10 or newer", nats.Image)
		}
		if !regexp.MustCompile(`^postgres:\d+(\.\d+)?(-[a-z0-9.]+)?$`).MatchString(pg.Image) {
			t.Errorf("postgres image %q does not pin a major version", pg.Image)
		}
		for name, s := range f.Services {
			if s.Image != "" && (!strings.Contains(s.Image, ":") || strings.HasSuffix(s.Image, ":latest")) {
				t.Errorf("service %s: image %q is not pinned", name, s.Image)
			}
		}
	})

	t.Run("start order", func(t *testing.T) {
		cond := func(svc, on, want string) {
			t.Helper()
			if got := f.Services[svc].DependsOn[on].Condition; got != want {
				t.Errorf("%s depends on %s: condition %q, want %q", svc, on, got, want)
			}
		}
		// nats-server asks the resolver at start and refuses to start
		// unless it answers.
		cond("nats", "rotatord", "service_healthy")
		cond("rotatord", "rotatord-init", "service_completed_successfully")
		cond("rotatord-init", "postgres", "service_healthy")
		if rot.Healthcheck == nil || len(rot.Healthcheck.Test) < 2 {
			t.Fatal("rotatord has no healthcheck")
		}
		hc := strings.Join(rot.Healthcheck.Test, " ")
		// Not /readyz: it waits for NATS, which waits for this check.
		m := regexp.MustCompile(`https://127\.0\.0\.1:(\d+)(/healthz|/jwt/v1/accounts/)`).FindStringSubmatch(hc)
		if m == nil {
			t.Fatalf("rotatord healthcheck %q does not ask https://127.0.0.1:PORT/healthz or the resolver", hc)
		}
		if _, port, _ := net.SplitHostPort(rot.Environment["ROTATORD_LISTEN"]); port != m[1] {
			t.Errorf("healthcheck port %s, ROTATORD_LISTEN %q", m[1], rot.Environment["ROTATORD_LISTEN"])
		}
	})

	t.Run("rotatord tls", func(t *testing.T) {
		env := rot.Environment
		for _, k := range []string{"ROTATORD_TLS_CERT_FILE", "ROTATORD_TLS_KEY_FILE", "ROTATORD_TLS_CLIENT_CA_FILE",
			"ROTATORD_NATS_CA_FILE", "ROTATORD_NATS_CERT_FILE", "ROTATORD_NATS_KEY_FILE"} {
			if env[k] == "" {
				t.Errorf("rotatord: %s is not set", k)
			} else if !strings.HasPrefix(env[k], "/certs/") || rot.mount("/certs") == "" {
				t.Errorf("rotatord: %s=%s is not in the mounted /certs", k, env[k])
			}
		}
		if !strings.HasPrefix(env["ROTATORD_NATS_URL"], "tls://nats:") {
			t.Errorf("ROTATORD_NATS_URL = %q, want tls://nats:PORT", env["ROTATORD_NATS_URL"])
		}
		u, err := url.Parse(env["ROTATORD_DATABASE_URL"])
		if err != nil || u.Query().Get("sslmode") != "verify-full" || !strings.HasPrefix(u.Query().Get("sslrootcert"), "/certs/") {
			t.Errorf("ROTATORD_DATABASE_URL does not verify PostgreSQL's certificate (sslmode=verify-full, sslrootcert)")
		}
		// init writes the resolver URL nats-server uses: rotatord's HTTPS port.
		pub, err := url.Parse(rinit.Environment["ROTATORD_PUBLIC_URL"])
		if err != nil || pub.Scheme != "https" || pub.Hostname() != "rotatord" {
			t.Fatalf("rotatord-init ROTATORD_PUBLIC_URL = %q, want https://rotatord:PORT", rinit.Environment["ROTATORD_PUBLIC_URL"])
		}
		if _, port, _ := net.SplitHostPort(env["ROTATORD_LISTEN"]); pub.Port() != port {
			t.Errorf("public URL port %s, rotatord listens on %q", pub.Port(), env["ROTATORD_LISTEN"])
		}
	})

	t.Run("admin identity", func(t *testing.T) {
		// The development CA signs every certificate of the stack: only
		// the admin's may reach the admin API, on rotatord and on init
		// (whose configuration is validated the same way).
		for _, name := range []string{"rotatord", "rotatord-init"} {
			if f.Services[name].Environment["ROTATORD_TLS_CLIENT_ALLOWED"] == "" {
				t.Fatalf("%s: ROTATORD_TLS_CLIENT_ALLOWED is not set: every certificate of the CA reaches the admin API", name)
			}
		}
		allow := httpapi.NewClientAllowlist(strings.Split(rot.Environment["ROTATORD_TLS_CLIENT_ALLOWED"], ","))
		dir := t.TempDir()
		runDevCerts(t, dir)
		for name, want := range map[string]bool{"admin": true, "agent-kate": false, "resolver": false,
			"rotatord-client": false, "rotatord-server": false, "nats-server": false, "postgres": false} {
			pair, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key"))
			if err != nil {
				t.Fatal(err)
			}
			if got := allow.Allows(pair.Leaf); got != want {
				t.Errorf("%s.pem allowed on the admin API: %v, want %v", name, got, want)
			}
		}
	})

	t.Run("no secrets beyond the dev ones", func(t *testing.T) {
		secretName := regexp.MustCompile(`PASSWORD|TOKEN|SECRET|(^|_)KEY$`)
		for name, s := range f.Services {
			for k, v := range s.Environment {
				if secretName.MatchString(k) && !slices.Contains(devSecrets, v) {
					t.Errorf("service %s: %s holds a secret that is not a documented dev one", name, k)
				}
				if u, err := url.Parse(v); err == nil && u.User != nil {
					if p, _ := u.User.Password(); p != "" && !slices.Contains(devSecrets, p) {
						t.Errorf("service %s: %s carries a password that is not a documented dev one", name, k)
					}
				}
			}
			for _, arg := range s.Command {
				if _, v, ok := strings.Cut(arg, "token-id="); ok && !slices.Contains(devSecrets, v) {
					t.Errorf("service %s: command sets a token that is not a documented dev one", name)
				}
			}
		}
		raw, _ := os.ReadFile("../../docker-compose.yml")
		for _, re := range []string{`PRIVATE KEY`, `\bS[OAU][A-Z2-7]{56}\b`, `rtd_[A-Za-z0-9_-]{8,}`} {
			if regexp.MustCompile(re).Match(raw) {
				t.Errorf("docker-compose.yml holds key material (%s)", re)
			}
		}
	})

	t.Run("nats config", func(t *testing.T) {
		checkNATSConfig(t, f)
	})
}

// checkNATSConfig loads the nats-server config that compose mounts, with
// the block `rotatord init` writes and the certificates of
// scripts/dev-certs.sh, through nats-server's own config parser.
func checkNATSConfig(t *testing.T, f composeFile) {
	nats, rinit, certs := f.Services["nats"], f.Services["rotatord-init"], f.Services["certs"]
	i := slices.Index(nats.Command, "-c")
	if i < 0 || i+1 >= len(nats.Command) {
		t.Fatalf("nats command %q has no -c CONFIG", nats.Command)
	}
	confPath := nats.Command[i+1]
	confDir := filepath.Dir(confPath) // /etc/nats
	src := nats.mount(confPath)
	if src == "" {
		t.Fatalf("nothing is mounted at %s", confPath)
	}
	conf, err := os.ReadFile(filepath.Join("../..", src))
	if err != nil {
		t.Fatal(err)
	}

	// The generated block: rotatord-init writes it with --out into a
	// volume that nats mounts where the config includes it from.
	inc := regexp.MustCompile(`(?m)^include\s+"?([^"\s]+)"?`).FindSubmatch(conf)
	if inc == nil {
		t.Fatal("nats.conf includes no generated block")
	}
	out := slices.Index(rinit.Command, "--out")
	if out < 0 || out+1 >= len(rinit.Command) {
		t.Fatalf("rotatord-init command %q has no --out FILE", rinit.Command)
	}
	genFile := rinit.Command[out+1]
	vol := rinit.mount(filepath.Dir(genFile))
	if vol == "" || nats.mount(filepath.Dir(filepath.Join(confDir, string(inc[1])))) != vol {
		t.Fatalf("rotatord-init writes %s, nats includes %s: not the same volume", genFile, inc[1])
	}
	if filepath.Base(genFile) != filepath.Base(string(inc[1])) {
		t.Fatalf("rotatord-init writes %s, nats includes %s", genFile, inc[1])
	}

	// Files under /etc/nats/certs come from the certs volume, filled by
	// the certs service from deploy/certs; every one must be copied.
	certsDir := filepath.Join(confDir, "certs")
	if nats.mount(certsDir) != "certs" || certs.mount("/certs") != "certs" || certs.mount("/src") != "./deploy/certs" {
		t.Fatalf("nats %s, certs service /certs and /src: not the certs volume filled from ./deploy/certs", certsDir)
	}
	copied := strings.Join(certs.Command, " ")
	for _, m := range regexp.MustCompile(regexp.QuoteMeta(certsDir)+`/([\w.-]+)`).FindAllSubmatch(conf, -1) {
		if !strings.Contains(copied, string(m[1])) {
			t.Errorf("nats.conf uses %s, which the certs service does not copy", m[1])
		}
	}
	for k, v := range f.Services["rotatord"].Environment {
		if name, ok := strings.CutPrefix(v, "/certs/"); ok && !strings.Contains(copied, name) {
			t.Errorf("rotatord %s uses %s, which the certs service does not copy", k, v)
		}
	}

	// Lay the config out as in the container, under a temporary root.
	root := t.TempDir()
	etc := filepath.Join(root, strings.TrimPrefix(confDir, "/"))
	if err := os.MkdirAll(filepath.Join(etc, filepath.Dir(string(inc[1]))), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(etc, filepath.Base(confPath)),
		[]byte(strings.ReplaceAll(string(conf), confDir+"/", etc+"/")), 0o644); err != nil {
		t.Fatal(err)
	}
	opKP, _ := nkeys.CreateOperator()
	opPub, _ := opKP.PublicKey()
	opJWT, err := jwt.NewOperatorClaims(opPub).Encode(opKP)
	if err != nil {
		t.Fatal(err)
	}
	sysKP, _ := nkeys.CreateAccount()
	sysPub, _ := sysKP.PublicKey()
	// The same format as rotate.Service.NATSConfig.
	block := fmt.Sprintf("operator: %s\nsystem_account: %s\nresolver: URL(%q)\n",
		opJWT, sysPub, rinit.Environment["ROTATORD_PUBLIC_URL"]+"/jwt/v1/accounts/")
	if err := os.WriteFile(filepath.Join(etc, string(inc[1])), []byte(block), 0o644); err != nil {
		t.Fatal(err)
	}
	runDevCerts(t, filepath.Join(etc, "certs"))

	opts, err := server.ProcessConfigFile(filepath.Join(etc, filepath.Base(confPath)))
	if err != nil {
		t.Fatalf("nats-server refuses the compose config: %v", err)
	}
	// The config file sets verify through the TLS config (opts.TLSVerify
	// is the command line's).
	if opts.TLSConfig == nil || opts.TLSConfig.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Error("nats.conf: tls { verify: true } is not set: clients without a certificate get in")
	}
	if _, ok := opts.AccountResolver.(*server.URLAccResolver); !ok {
		t.Errorf("nats.conf: resolver is %T, want the URL resolver", opts.AccountResolver)
	}
	if rt := opts.AccountResolverTLSConfig; rt == nil || rt.RootCAs == nil {
		t.Error("nats.conf: no resolver_tls with a CA: the resolver cannot verify rotatord's HTTPS certificate")
	}
	if len(opts.TrustedOperators) != 1 || opts.SystemAccount != sysPub {
		t.Errorf("nats.conf: operator mode not set from the generated block (%d operators, system account %q)",
			len(opts.TrustedOperators), opts.SystemAccount)
	}
	if opts.HTTPSPort == 0 && opts.HTTPPort != 0 {
		t.Errorf("nats.conf: monitoring over plain HTTP")
	}
}

// runDevCerts runs scripts/dev-certs.sh into dir and checks its output:
// every key pair loads, every certificate chains to the CA for its use, and
// the servers' certificates carry the names compose reaches them by.
func runDevCerts(t *testing.T, dir string) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed: scripts/dev-certs.sh cannot run")
	}
	cmd := exec.Command("sh", "../../scripts/dev-certs.sh", dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/dev-certs.sh: %v\n%s", err, out)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.pem holds no certificate")
	}
	for _, c := range []struct {
		name  string
		usage x509.ExtKeyUsage
		host  string
	}{
		{"nats-server", x509.ExtKeyUsageServerAuth, "nats"},
		{"rotatord-server", x509.ExtKeyUsageServerAuth, "rotatord"},
		{"postgres", x509.ExtKeyUsageServerAuth, "postgres"},
		{"rotatord-server", x509.ExtKeyUsageServerAuth, "localhost"},
		{"rotatord-client", x509.ExtKeyUsageClientAuth, ""},
		{"resolver", x509.ExtKeyUsageClientAuth, ""},
		{"admin", x509.ExtKeyUsageClientAuth, ""},
		{"agent-kate", x509.ExtKeyUsageClientAuth, ""},
	} {
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, c.name+".pem"), filepath.Join(dir, c.name+".key"))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: c.host, KeyUsages: []x509.ExtKeyUsage{c.usage}}); err != nil {
			t.Errorf("%s (%s): %v", c.name, c.host, err)
		}
		if fi, err := os.Stat(filepath.Join(dir, c.name+".key")); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s.key: mode %v, want 0600", c.name, fi.Mode().Perm())
		}
	}
	block, _ := pem.Decode(caPEM)
	if ca, err := x509.ParseCertificate(block.Bytes); err != nil || !ca.IsCA {
		t.Fatalf("ca.pem is not a CA certificate: %v", err)
	}
}
