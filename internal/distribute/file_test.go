package distribute_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/distribute"
)

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func wantMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: got mode %o, want %o", path, got, want)
	}
}

func noStrays(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
}

func TestFileDeliver(t *testing.T) {
	t.Parallel()
	root := filepath.Join(t.TempDir(), "creds")
	f := newFileDelivery(t, root)
	ctx := context.Background()
	now := time.Now()
	h1 := newHandoff(t, "acme", "bot", "r1", now, false)
	h2 := newHandoff(t, "acme", "bot", "r2", now.Add(time.Minute), false)
	path := filepath.Join(root, "acme", "bot.creds")

	ref, err := f.Deliver(ctx, h1)
	if err != nil || ref != distribute.FileRef {
		t.Fatalf("deliver: got %q, %v, want %q", ref, err, distribute.FileRef)
	}
	if got := readFile(t, path); !bytes.Equal(got, h1.Creds) {
		t.Fatalf("creds file: got %q, want r1's creds", got)
	}
	wantMode(t, path, 0o600)
	wantMode(t, root, 0o700)
	wantMode(t, filepath.Join(root, "acme"), 0o700)
	if _, err := os.Stat(path + ".prev"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a .prev exists after the first delivery: %v", err)
	}

	if _, err := f.Deliver(ctx, h2); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, path); !bytes.Equal(got, h2.Creds) {
		t.Fatal("creds file does not hold r2's creds")
	}
	if got := readFile(t, path+".prev"); !bytes.Equal(got, h1.Creds) {
		t.Fatal(".prev does not hold r1's creds")
	}
	wantMode(t, path+".prev", 0o600)

	// A retry changes nothing; above all .prev still holds r1.
	if _, err := f.Deliver(ctx, h2); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, path+".prev"); !bytes.Equal(got, h1.Creds) {
		t.Fatal("a retry replaced .prev")
	}
	noStrays(t, filepath.Join(root, "acme"))
}

func TestFileRestore(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	f := newFileDelivery(t, root)
	ctx := context.Background()
	now := time.Now()
	h1 := newHandoff(t, "acme", "bot", "r1", now, false)
	h2 := newHandoff(t, "acme", "bot", "r2", now.Add(time.Minute), false)
	h3 := newHandoff(t, "acme", "bot", "r3", now.Add(2*time.Minute), false)
	path := filepath.Join(root, "acme", "bot.creds")

	for _, h := range []rotatord.Handoff{h1, h2} {
		if _, err := f.Deliver(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Restore(ctx, h2, distribute.FileRef); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, path); !bytes.Equal(got, h1.Creds) {
		t.Fatal("restore did not put r1's creds back")
	}
	if _, err := os.Stat(path + ".prev"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf(".prev still there after restore: %v", err)
	}
	// Twice is harmless: the file no longer holds r2.
	if err := f.Restore(ctx, h2, distribute.FileRef); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, path); !bytes.Equal(got, h1.Creds) {
		t.Fatal("a second restore changed the file")
	}

	// A newer delivery is left alone.
	for _, h := range []rotatord.Handoff{h2, h3} {
		if _, err := f.Deliver(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Restore(ctx, h2, distribute.FileRef); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, path); !bytes.Equal(got, h3.Creds) {
		t.Fatal("restoring r2 replaced the newer r3")
	}

	if err := f.Restore(ctx, h3, "v1:prev0"); !errors.Is(err, rotatord.ErrInvalid) {
		t.Errorf("restore with a foreign ref: got %v, want invalid", err)
	}
}

func TestFileRestoreFirstDelivery(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	f := newFileDelivery(t, root)
	ctx := context.Background()
	h := newHandoff(t, "acme", "bot", "r1", time.Now(), false)
	if _, err := f.Deliver(ctx, h); err != nil {
		t.Fatal(err)
	}
	if err := f.Restore(ctx, h, distribute.FileRef); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "acme", "bot.creds")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the first creds file survived its restore: %v", err)
	}
	if err := f.Restore(ctx, h, distribute.FileRef); err != nil {
		t.Fatalf("restore with no file: %v", err)
	}
}

func TestFileAgentGeneratedKey(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	f := newFileDelivery(t, root)
	h := newHandoff(t, "acme", "bot", "r1", time.Now(), true)
	if _, err := f.Deliver(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(root, "acme", "bot.jwt")
	if got := strings.TrimSpace(string(readFile(t, path))); got != h.JWT {
		t.Fatalf("jwt file: got %q, want the JWT", got)
	}
	wantMode(t, path, 0o600)
	if _, err := os.Stat(filepath.Join(root, "acme", "bot.creds")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a creds file was written for an agent that holds its seed: %v", err)
	}
	if err := f.Restore(context.Background(), h, distribute.FileRef); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("jwt file survived its restore: %v", err)
	}
}

func TestFileRefusesEscapingNames(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	root := filepath.Join(base, "creds")
	f := newFileDelivery(t, root)
	for _, n := range [][2]string{{"acme", "../x"}, {"..", "x"}, {"acme", "a/b"}, {"acme/..", "x"}, {"acme", `a\b`}, {"", "x"}, {"acme", ".."}} {
		h := newHandoff(t, n[0], n[1], "r1", time.Now(), false)
		if _, err := f.Deliver(context.Background(), h); !errors.Is(err, rotatord.ErrInvalid) {
			t.Errorf("deliver %q/%q: got %v, want invalid", n[0], n[1], err)
		}
		if err := f.Restore(context.Background(), h, distribute.FileRef); !errors.Is(err, rotatord.ErrInvalid) {
			t.Errorf("restore %q/%q: got %v, want invalid", n[0], n[1], err)
		}
	}
	entries, _ := os.ReadDir(base)
	if len(entries) != 1 {
		t.Errorf("files appeared next to the delivery folder: %v", entries)
	}
	if _, err := distribute.NewFile(""); !errors.Is(err, rotatord.ErrInvalid) {
		t.Errorf("empty folder: got %v, want invalid", err)
	}
}

// TestFileAtomic reads the file while it is replaced again and again: a
// reader must always find one whole creds file.
func TestFileAtomic(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	f := newFileDelivery(t, root)
	ctx := context.Background()
	var hs []rotatord.Handoff
	valid := map[string]bool{}
	for i := range 4 {
		h := newHandoff(t, "acme", "bot", "r", time.Now().Add(time.Duration(i)*time.Minute), false)
		hs = append(hs, h)
		valid[string(h.Creds)] = true
	}
	if _, err := f.Deliver(ctx, hs[0]); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(root, "acme", "bot.creds")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var torn []string
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			b, err := os.ReadFile(path)
			if err != nil || !valid[string(b)] {
				torn = append(torn, string(b)+" "+errString(err))
				return
			}
		}
	}()
	for i := range 40 {
		if _, err := f.Deliver(ctx, hs[i%len(hs)]); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if len(torn) > 0 {
		t.Fatalf("a reader saw a partial or missing file: %q", torn[0])
	}
	noStrays(t, filepath.Join(root, "acme"))
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// newFileDelivery returns file delivery into root.
func newFileDelivery(t testing.TB, root string) *distribute.File {
	t.Helper()
	f, err := distribute.NewFile(root)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// rotatord keeps no seed once a rotation is delivered, so the handoff a
// rollback restores with carries the JWT only: the creds file must still
// be found and put back.
func TestFileRestoreWithoutSeed(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	f := newFileDelivery(t, root)
	ctx := context.Background()
	now := time.Now()
	h1 := newHandoff(t, "acme", "bot", "r1", now, false)
	h2 := newHandoff(t, "acme", "bot", "r2", now.Add(time.Minute), false)
	for _, h := range []rotatord.Handoff{h1, h2} {
		if _, err := f.Deliver(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	bare := h2
	bare.Seed, bare.Creds = nil, nil
	if err := f.Restore(ctx, bare, distribute.FileRef); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(root, "acme", "bot.creds")); !bytes.Equal(got, h1.Creds) {
		t.Fatal("restore without the seed did not put r1's creds back")
	}
}
