package registry_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/registry"
)

// A database URL that does not parse is named as given, password hidden,
// with the form expected.
func TestOpenBadURL(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		url  string
		want []string
	}{
		{"localhost/rotatord", []string{`"localhost/rotatord" is not a PostgreSQL URL`, "want postgres://"}},
		{"mysql://app:hunter2@db/app", []string{`"mysql://app:xxxxx@db/app"`, `scheme "mysql"`, "want postgres://"}},
		// An unescaped '@' in the password: pgx would look up "ss@db" as the host.
		{"postgres://app:hun@ter2@db:5432/app", []string{`"postgres://app:xxxxx@db:5432/app"`, "holds '@'", "%40"}},
		{"postgres://app:hunter%zz2@db/app", []string{`"postgres://app:xxxxx@db/app" does not parse`, "want postgres://"}},
		{"host=db port=five password=hunter2", []string{`"host=db port=five password=xxxxx" does not parse`, "want postgres://"}},
	} {
		_, err := registry.Open(context.Background(), c.url)
		if err == nil {
			t.Errorf("Open(%q) succeeded", c.url)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Open(%q) = %q, want it to say %q", c.url, err, w)
			}
		}
		if strings.Contains(err.Error(), "hunter") {
			t.Errorf("Open(%q) = %q shows the password", c.url, err)
		}
	}
}

// A connection that fails names the address once, with the reason.
func TestPingNamesEachAddressOnce(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s, err := registry.Open(context.Background(), fmt.Sprintf("postgres://app:hunter2@%s/app?connect_timeout=5", addr))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = s.Ping(ctx)
	if err == nil {
		t.Fatal("ping of a closed port succeeded")
	}
	msg := err.Error()
	if n := strings.Count(msg, addr); n != 1 {
		t.Errorf("error names %s %d times, want once: %s", addr, n, msg)
	}
	if !strings.Contains(msg, "connection refused") || !strings.Contains(msg, "user app") || strings.Contains(msg, "hunter2") {
		t.Errorf("error = %q, want the user and the reason, without the password", msg)
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"postgres://app:hunter2@db:5432/app?sslmode=require": "postgres://app:xxxxx@db:5432/app?sslmode=require",
		"postgres://app@db/app":                              "postgres://app@db/app",
		"postgres://db/app?user=app&password=hunter2":        "postgres://db/app?user=app&password=xxxxx",
		"host=db password='a b' dbname=app":                  "host=db password=xxxxx dbname=app",
		"postgres://app:p%40ss@db/app":                       "postgres://app:xxxxx@db/app",
	} {
		if got := registry.RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
