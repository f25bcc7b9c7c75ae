package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// startCacheNATS starts a nats-server from the block `rotatord nats-config
// --mode cache` prints: resolver {type: cache}, no URL resolver at all, so
// accounts reach it only through rotatord's answers over NATS.
func (e *env) startCacheNATS(block string) *server.Server {
	e.t.Helper()
	dir := e.t.TempDir()
	conf := filepath.Join(dir, "nats.conf")
	content := fmt.Sprintf("listen: 127.0.0.1:%d\n", e.natsPort) + block
	if err := os.WriteFile(conf, []byte(content), 0o600); err != nil {
		e.t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		e.t.Fatalf("nats-server config from `nats-config --mode cache`: %v\n%s", err, content)
	}
	if _, ok := opts.AccountResolver.(*server.CacheDirAccResolver); !ok {
		e.t.Fatalf("account resolver is %T, want the cache resolver", opts.AccountResolver)
	}
	opts.NoLog, opts.NoSigs = true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		e.t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		e.t.Fatal("cache-mode nats-server did not start")
	}
	e.ns = ns
	e.t.Cleanup(ns.Shutdown)
	return ns
}

// lookups returns rotatord's count of CLAIMS.LOOKUP answers with status.
func (e *env) lookups(status string) int {
	e.t.Helper()
	resp, err := e.http.Get(e.main.URL() + "/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("GET /metrics = %d", resp.StatusCode)
	}
	m := regexp.MustCompile(`(?m)^rotatord_claims_lookups_total\{status="` + status + `"\} (\d+)$`).FindSubmatch(body)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

func TestCacheResolver(t *testing.T) {
	t.Parallel()
	// nats-server first: in cache mode it does not need rotatord to start.
	e := newImportEnv(t)
	if _, _, err := e.cli("init", "--operator", "cache-op"); err != nil {
		t.Fatalf("init: %v", err)
	}
	block, _, err := e.cli("nats-config", "--mode", "cache", "--cache-dir", filepath.Join(t.TempDir(), "jwt"))
	if err != nil {
		t.Fatalf("nats-config --mode cache: %v", err)
	}
	if strings.Contains(block, "URL(") {
		t.Fatalf("the cache block configures a URL resolver:\n%s", block)
	}
	urlBlock, _, err := e.cli("nats-config")
	if err != nil || !strings.Contains(urlBlock, `resolver: URL("`) {
		t.Fatalf("nats-config (url) = %v:\n%s", err, urlBlock)
	}
	e.startCacheNATS(block)
	e.serve()
	e.waitNATS()
	// rotatord's lookup subscription has reached the server.
	if err := e.main.NATS.NC().Flush(); err != nil {
		t.Fatal(err)
	}

	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	_, creds := createAgent(e, "kate", "fleet")
	nc, violations, dropped, err := watchedConnect(e, creds)
	if err != nil {
		t.Fatalf("agent connect through the cache resolver: %v", err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync("orders.>")
	if err != nil {
		t.Fatal(err)
	}
	nc.Publish("orders.new", []byte("1"))
	if m, err := sub.NextMsg(3 * time.Second); err != nil || string(m.Data) != "1" {
		t.Fatalf("pub/sub: %v, %v", m, err)
	}
	if n := e.lookups("found"); n < 1 {
		t.Fatalf("rotatord answered %d lookups with a JWT; the account came from somewhere else", n)
	}

	// An account rotatord does not know: the answer is "not found", and
	// the client is refused.
	notFound := e.lookups("not_found")
	if _, err := connectCreds(e, strangerCreds(t)); err == nil {
		t.Fatal("a user of an unknown account connected")
	}
	if n := e.lookups("not_found"); n <= notFound {
		t.Errorf("not_found lookups = %d, want more than %d", n, notFound)
	}

	// A revocation pushed by rotatord reaches the cache-mode server.
	// A server that never fetched an account skips its update ("jwt update
	// cache skipped"): it is not counted as a server that applied it.
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "idle"})
	createAgent(e, "ivan", "idle")
	if rev := e.must(200, "POST", "/v1/agents/ivan/revoke", nil); rev["servers"] != float64(0) {
		t.Fatalf("revoke in an account no server holds = %v; want servers 0", rev)
	}
	rev := e.must(200, "POST", "/v1/agents/kate/revoke", map[string]any{"reason": "compromised"})
	if rev["pushed"] != true || rev["servers"] != float64(1) {
		t.Fatalf("revoke = %v; want pushed to the one server", rev)
	}
	waitRevokedDrop(t, dropped, violations)
	if c, err := connectCreds(e, creds); err == nil {
		c.Close()
		t.Fatal("revoked creds connected again")
	}
}

// strangerCreds are creds of a user of an account no one knows.
func strangerCreds(t testing.TB) string {
	t.Helper()
	acc, _ := nkeys.CreateAccount()
	user, _ := nkeys.CreateUser()
	uc := jwt.NewUserClaims(pubOf(t, user))
	token := encode(t, uc, acc)
	seed, _ := user.Seed()
	creds, err := jwt.FormatUserConfig(token, seed)
	if err != nil {
		t.Fatal(err)
	}
	return string(creds)
}
