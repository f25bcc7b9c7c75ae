package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rotatord/rotatord/internal/natsrun"
	"github.com/rotatord/rotatord/pkg/agent"
)

// startJetStreamNATS starts a nats-server with JetStream (in a temp store)
// on e's NATS port, resolving accounts through e.main; mod may change its
// options.
func (e *env) startJetStreamNATS(mod func(*server.Options)) *server.Server {
	e.t.Helper()
	ns := e.jetStreamServer(e.natsPort, mod)
	e.ns = ns
	return ns
}

// jetStreamServer starts a nats-server with JetStream on port (0: a free
// one) that resolves accounts through e.main.
func (e *env) jetStreamServer(port int, mod func(*server.Options)) *server.Server {
	e.t.Helper()
	op, err := e.main.Store.Operator(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	dir := e.t.TempDir()
	ns, err := natsrun.Start(natsrun.Options{OperatorJWT: op.JWT, SystemAccount: op.SystemAccount,
		ResolverURL: e.main.URL() + "/jwt/v1/accounts/", Port: port,
		Configure: func(o *server.Options) {
			o.JetStream = true
			o.StoreDir = dir
			o.JetStreamMaxMemory = 64 << 20
			o.JetStreamMaxStore = 256 << 20
			if mod != nil {
				mod(o)
			}
		}})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(ns.Shutdown)
	return ns
}

// agentWith creates a poll agent with the given permissions and returns
// its creds file.
func agentWith(e *env, name, account string, pub, sub []string) string {
	e.t.Helper()
	g := e.must(201, "POST", "/v1/agents", map[string]any{
		"name": name, "account": account,
		"permissions": map[string]any{"pub": map[string]any{"allow": pub}, "sub": map[string]any{"allow": sub}},
		"rotation":    map[string]any{"schedule": "@every 24h", "grace": "30m"},
	})
	return g["creds"].(string)
}

// connectAs connects to url with creds, reporting async errors (permission
// violations) on the returned channel.
func connectAs(t testing.TB, url, creds string) (*nats.Conn, chan error) {
	t.Helper()
	errs := make(chan error, 32)
	nc, err := nats.Connect(url, nats.UserCredentials(writeCreds(t, creds)), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc, errs
}

// The minimal permissions the README documents for JetStream clients of
// stream ORDERS (subjects orders.>) and its durable pull consumer
// "worker".
var (
	jsAdminPub     = []string{"$JS.API.>"}
	jsPublisherPub = []string{"$JS.API.STREAM.INFO.ORDERS", "orders.>"}
	jsConsumerPub  = []string{
		"$JS.API.CONSUMER.CREATE.ORDERS.worker", "$JS.API.CONSUMER.CREATE.ORDERS.worker.>",
		"$JS.API.CONSUMER.INFO.ORDERS.worker", "$JS.API.CONSUMER.MSG.NEXT.ORDERS.worker",
		"$JS.ACK.ORDERS.worker.>", "$JS.ACK.*.*.ORDERS.worker.>",
	}
	inbox = []string{"_INBOX.>"}
)

// An account with JetStream: an agent with $JS.API permissions creates a
// stream; a publisher and a durable pull consumer with only the documented
// permissions publish, consume and acknowledge (in both ack subject forms
// of nats-server 2.14+); an agent whose permissions lack $JS.API cannot
// create a stream; KV and object store work with their documented
// permissions; an account without JetStream has none.
func TestJetStreamAgents(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startJetStreamNATS(nil)
	e.waitNATS()
	acc := e.must(201, "POST", "/v1/accounts", map[string]any{"name": "tenant",
		"jetstream": map[string]any{"mem_storage": 16 << 20, "disk_storage": 64 << 20, "streams": 10, "consumer": 20}})
	js, _ := acc["jetstream"].(map[string]any)
	if js["mem_storage"] != float64(16<<20) || js["streams"] != float64(10) || js["max_ack_pending"] != float64(-1) {
		t.Fatalf("created jetstream = %v", acc["jetstream"])
	}
	ac, err := jwt.DecodeAccountClaims(e.accountJWT(acc["public_key"].(string)))
	if err != nil || !ac.Limits.IsJSEnabled() || ac.Limits.JetStreamLimits.DiskStorage != 64<<20 || ac.Limits.JetStreamLimits.Consumer != 20 {
		t.Fatalf("account JWT JetStream limits: %v, %+v", err, ac.Limits.JetStreamLimits)
	}
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "nojs"})

	admin, _ := connectAs(t, e.ns.ClientURL(), agentWith(e, "js-admin", "tenant", jsAdminPub, inbox))
	publisher, _ := connectAs(t, e.ns.ClientURL(), agentWith(e, "publisher", "tenant", jsPublisherPub, inbox))
	consumer, _ := connectAs(t, e.ns.ClientURL(), agentWith(e, "worker", "tenant", jsConsumerPub, inbox))
	outsider, outsiderErrs := connectAs(t, e.ns.ClientURL(), agentWith(e, "outsider", "tenant", []string{"orders.>"}, inbox))
	nojs, _ := connectAs(t, e.ns.ClientURL(), agentWith(e, "nojs-admin", "nojs", jsAdminPub, inbox))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 3*time.Second) }

	// Without $JS.API permissions, no stream.
	octx, ocancel := short()
	if _, err := mustJS(t, outsider).CreateStream(octx, jetstream.StreamConfig{Name: "SNEAKY", Subjects: []string{"sneaky.>"}}); err == nil {
		t.Fatal("an agent without $JS.API permissions created a stream")
	}
	ocancel()
	waitViolation(t, outsiderErrs, "$JS.API.STREAM.CREATE.SNEAKY")
	// In an account without JetStream, not even with them.
	octx, ocancel = short()
	if _, err := mustJS(t, nojs).CreateStream(octx, jetstream.StreamConfig{Name: "NOPE", Subjects: []string{"nope.>"}}); err == nil {
		t.Fatal("a stream was created in an account without JetStream")
	}
	ocancel()

	adminJS := mustJS(t, admin)
	if _, err := adminJS.CreateStream(ctx, jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	if _, err := adminJS.Stream(ctx, "SNEAKY"); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("stream SNEAKY: %v, want not found", err)
	}

	// The publisher binds to the stream and publishes with acks.
	pubJS := mustJS(t, publisher)
	if _, err := pubJS.Stream(ctx, "ORDERS"); err != nil {
		t.Fatalf("publisher stream info: %v", err)
	}
	const n = 20
	for i := range n {
		if _, err := pubJS.Publish(ctx, fmt.Sprintf("orders.%d", i), []byte("order")); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	// The consumer creates its durable pull consumer, fetches and acks.
	consumeAll(ctx, t, mustJS(t, consumer), n, "v1")

	// Servers may use the newer ack subject form ($JS.ACK.<domain>.<account
	// hash>.<stream>.<consumer>...): the same permissions cover it.
	v2 := e.jetStreamServer(0, func(o *server.Options) {
		o.FeatureFlags = map[string]bool{server.FeatureFlagJsAckFormatV2: true}
	})
	v2admin, _ := connectAs(t, v2.ClientURL(), agentWith(e, "js-admin-2", "tenant", jsAdminPub, inbox))
	if _, err := mustJS(t, v2admin).CreateStream(ctx, jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"}}); err != nil {
		t.Fatalf("create stream on the v2 server: %v", err)
	}
	v2pub, _ := connectAs(t, v2.ClientURL(), agentWith(e, "publisher-2", "tenant", jsPublisherPub, inbox))
	for i := range n {
		if _, err := mustJS(t, v2pub).Publish(ctx, fmt.Sprintf("orders.%d", i), []byte("order")); err != nil {
			t.Fatalf("publish %d on the v2 server: %v", i, err)
		}
	}
	v2cons, _ := connectAs(t, v2.ClientURL(), agentWith(e, "worker-2", "tenant", jsConsumerPub, inbox))
	consumeAll(ctx, t, mustJS(t, v2cons), n, "v2")

	// KV: the admin makes the bucket; a client with the documented
	// permissions puts and gets.
	if _, err := adminJS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "config"}); err != nil {
		t.Fatalf("create kv: %v", err)
	}
	kvClient, _ := connectAs(t, e.ns.ClientURL(), agentWith(e, "kv-client", "tenant",
		[]string{"$JS.API.STREAM.INFO.KV_config", "$KV.config.>", "$JS.API.DIRECT.GET.KV_config.>"}, inbox))
	kv, err := mustJS(t, kvClient).KeyValue(ctx, "config")
	if err != nil {
		t.Fatalf("bind kv: %v", err)
	}
	if _, err := kv.Put(ctx, "region", []byte("eu")); err != nil {
		t.Fatalf("kv put: %v", err)
	}
	if got, err := kv.Get(ctx, "region"); err != nil || string(got.Value()) != "eu" {
		t.Fatalf("kv get: %v, %v", got, err)
	}
	// Watching adds an ordered push consumer of the bucket's stream.
	watcher, _ := connectAs(t, e.ns.ClientURL(), agentWith(e, "kv-watcher", "tenant", []string{
		"$JS.API.STREAM.INFO.KV_config", "$JS.API.CONSUMER.CREATE.KV_config", "$JS.API.CONSUMER.CREATE.KV_config.>",
		"$JS.API.CONSUMER.DELETE.KV_config.>", "$JS.FC.KV_config.>", "$JS.FC.*.*.KV_config.>",
	}, inbox))
	wkv, err := mustJS(t, watcher).KeyValue(ctx, "config")
	if err != nil {
		t.Fatalf("bind kv to watch: %v", err)
	}
	w, err := wkv.Watch(ctx, "region", jetstream.UpdatesOnly())
	if err != nil {
		t.Fatalf("kv watch: %v", err)
	}
	if _, err := kv.Put(ctx, "region", []byte("us")); err != nil {
		t.Fatalf("kv put: %v", err)
	}
	select {
	case u := <-w.Updates():
		if u == nil || string(u.Value()) != "us" {
			t.Fatalf("kv watch update = %v", u)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no kv watch update")
	}
	if err := w.Stop(); err != nil {
		t.Fatalf("kv watch stop: %v", err)
	}

	// Object store, likewise.
	if _, err := adminJS.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "files"}); err != nil {
		t.Fatalf("create object store: %v", err)
	}
	objClient, _ := connectAs(t, e.ns.ClientURL(), agentWith(e, "obj-client", "tenant", []string{
		"$JS.API.STREAM.INFO.OBJ_files", "$O.files.>", "$JS.API.DIRECT.GET.OBJ_files.>", "$JS.API.STREAM.MSG.GET.OBJ_files",
		"$JS.API.STREAM.PURGE.OBJ_files", "$JS.API.CONSUMER.CREATE.OBJ_files.>", "$JS.API.CONSUMER.MSG.NEXT.OBJ_files.>",
		"$JS.API.CONSUMER.DELETE.OBJ_files.>",
	}, inbox))
	obj, err := mustJS(t, objClient).ObjectStore(ctx, "files")
	if err != nil {
		t.Fatalf("bind object store: %v", err)
	}
	if _, err := obj.PutBytes(ctx, "report.txt", []byte(strings.Repeat("x", 300<<10))); err != nil {
		t.Fatalf("object put: %v", err)
	}
	if got, err := obj.GetBytes(ctx, "report.txt"); err != nil || len(got) != 300<<10 {
		t.Fatalf("object get: %d bytes, %v", len(got), err)
	}

	// PATCH with null turns JetStream off: the servers drop the account's
	// JetStream.
	off := e.must(200, "PATCH", "/v1/accounts/tenant", map[string]any{"jetstream": nil})
	if off["jetstream"] != nil {
		t.Fatalf("after jetstream: null, jetstream = %v", off["jetstream"])
	}
	eventually(t, 20*time.Second, "JetStream to be off for the account", func() bool {
		c, cancel := short()
		defer cancel()
		_, err := adminJS.AccountInfo(c)
		return err != nil
	})
}

func mustJS(t testing.TB, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// consumeAll creates the durable pull consumer "worker" of ORDERS, fetches
// n messages, acks each, and checks that the server took every ack.
func consumeAll(ctx context.Context, t *testing.T, js jetstream.JetStream, n int, form string) {
	t.Helper()
	cons, err := js.CreateOrUpdateConsumer(ctx, "ORDERS", jetstream.ConsumerConfig{Durable: "worker", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("%s: create durable consumer: %v", form, err)
	}
	got := 0
	for got < n {
		batch, err := cons.Fetch(n-got, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatalf("%s: fetch: %v", form, err)
		}
		for m := range batch.Messages() {
			if form == "v2" && !strings.HasPrefix(m.Reply(), "$JS.ACK._.") {
				t.Errorf("%s: ack subject %q is not the newer form", form, m.Reply())
			}
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatalf("%s: ack: %v", form, err)
			}
			got++
		}
		if batch.Error() != nil && ctx.Err() != nil {
			t.Fatalf("%s: fetch: %v", form, batch.Error())
		}
	}
	info, err := cons.Info(ctx)
	if err != nil || info.NumAckPending != 0 || info.AckFloor.Consumer != uint64(n) {
		t.Fatalf("%s: consumer after acks: %v, %+v", form, err, info)
	}
}

func waitViolation(t testing.TB, errs <-chan error, subject string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case err := <-errs:
			if strings.Contains(err.Error(), "Permissions Violation") && strings.Contains(err.Error(), subject) {
				return
			}
		case <-deadline:
			t.Fatalf("no permissions violation for %s", subject)
		}
	}
}

// A durable pull consumer keeps consuming across a rotation of its agent:
// every message published meanwhile is delivered once the agent is back.
func TestJetStreamConsumerAcrossRotation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startJetStreamNATS(nil)
	e.waitNATS()
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "tenant", "jetstream": map[string]any{}})
	admin, _ := connectAs(t, e.ns.ClientURL(), agentWith(e, "js-admin", "tenant", jsAdminPub, inbox))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	adminJS := mustJS(t, admin)
	if _, err := adminJS.CreateStream(ctx, jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"}}); err != nil {
		t.Fatal(err)
	}
	// Redeliveries of acks lost in the reconnect come quickly.
	if _, err := adminJS.CreateOrUpdateConsumer(ctx, "ORDERS", jetstream.ConsumerConfig{Durable: "worker",
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}

	a, err := agent.New(agent.Config{Server: e.main.URL(), Name: "worker",
		Creds: []byte(agentWith(e, "worker", "tenant", jsConsumerPub, inbox))})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := a.Connect(e.ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	oldKey := a.PublicKey()
	cons, err := mustJS(t, nc).Consumer(ctx, "ORDERS", "worker")
	if err != nil {
		t.Fatalf("bind consumer: %v", err)
	}

	var (
		mu   sync.Mutex
		seen = map[uint64]bool{}
	)
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(seen) }
	consumed := make(chan struct{})
	go func() {
		defer close(consumed)
		for ctx.Err() == nil {
			// Errors while the connection moves to the new key are
			// expected: the loop fetches again.
			batch, err := cons.Fetch(50, jetstream.FetchMaxWait(500*time.Millisecond))
			if err != nil {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			for m := range batch.Messages() {
				md, err := m.Metadata()
				if err != nil {
					continue
				}
				if m.Ack() == nil {
					mu.Lock()
					seen[md.Sequence.Stream] = true
					mu.Unlock()
				}
			}
		}
	}()

	// The publisher is another agent; it publishes all along the rotation.
	publisher, _ := connectAs(t, e.ns.ClientURL(), agentWith(e, "publisher", "tenant", jsPublisherPub, inbox))
	pubJS := mustJS(t, publisher)
	// It publishes until the rotation is over and some more after.
	stop := make(chan struct{})
	type result struct {
		n   int
		err error
	}
	published := make(chan result, 1)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				published <- result{n, nil}
				return
			default:
			}
			if _, err := pubJS.Publish(ctx, fmt.Sprintf("orders.%d", n), []byte("x")); err != nil {
				published <- result{n, err}
				return
			}
			n++
			time.Sleep(5 * time.Millisecond)
		}
	}()
	eventually(t, 20*time.Second, "the worker to consume before the rotation", func() bool { return count() > 10 })

	started := e.must(202, "POST", "/v1/agents/worker/rotate", nil)
	if got, err := a.Refresh(ctx); err != nil || !got {
		t.Fatalf("refresh = %v, %v; want new creds", got, err)
	}
	e.waitRotation(started["id"].(string), "completed")
	if a.PublicKey() == oldKey {
		t.Fatal("the worker's key did not change")
	}
	during := count()
	time.Sleep(200 * time.Millisecond)
	close(stop)
	res := <-published
	if res.err != nil {
		t.Fatalf("publish: %v", res.err)
	}
	total := res.n
	t.Logf("%d messages published, %d consumed when the rotation completed", total, during)
	eventually(t, 30*time.Second, fmt.Sprintf("all %d messages to be consumed", total), func() bool { return count() == total })
	cancel()
	<-consumed
	for seq := uint64(1); seq <= uint64(total); seq++ {
		if !seen[seq] {
			t.Fatalf("message %d was never delivered", seq)
		}
	}
	if a.Status().Rotations < 1 {
		t.Fatalf("agent status = %+v, want a rotation", a.Status())
	}
}
