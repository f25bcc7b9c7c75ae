package distribute

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/rotatord/rotatord"
)

// FileRef is the reference File.Deliver returns.
const FileRef = "file"

// File delivers credentials as files in a folder, for development and for
// agents that read mounted secrets: <dir>/<account>/<agent>.creds (a NATS
// creds file, mode 0600) or, for an agent that holds its own seed,
// <dir>/<account>/<agent>.jwt. Each write is atomic (a temporary file in
// the same folder, synced, renamed over the old one), and the file it
// replaces is first kept as <name>.prev, so Restore can put it back even
// after a crash.
type File struct {
	dir string
	mu  sync.Mutex
}

// NewFile returns a File distributor writing under dir, which it creates
// (mode 0700) if needed. It fails with rotatord.ErrInvalid for an empty
// dir, or with the error creating it.
func NewFile(dir string) (*File, error) {
	if strings.TrimSpace(dir) == "" {
		return nil, rotatord.Errorf(rotatord.EINVALID, "file delivery needs a folder")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("file delivery folder %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("create file delivery folder %s: %w", abs, err)
	}
	return &File{dir: abs}, nil
}

// Dir returns the folder the files are written under.
func (f *File) Dir() string { return f.dir }

// Path returns the file Deliver writes for h.
func (f *File) Path(h rotatord.Handoff) string {
	return filepath.Join(f.dir, h.Account, fileName(h))
}

func fileName(h rotatord.Handoff) string {
	if h.Creds == nil {
		return h.Agent + ".jwt"
	}
	return h.Agent + ".creds"
}

func fileContent(h rotatord.Handoff) []byte {
	if h.Creds == nil {
		return []byte(h.JWT + "\n")
	}
	return h.Creds
}

// Deliver writes the agent's creds file (or JWT file when the agent holds
// its own seed) and returns FileRef. A retry that finds the file already
// written changes nothing, so the kept .prev stays the one from before
// this delivery. It fails with rotatord.ErrInvalid for names containing a
// path separator or "..", or with the file system's error (which names
// the file, never its content).
func (f *File) Deliver(ctx context.Context, h rotatord.Handoff) (string, error) {
	if err := checkNames(h.Account, h.Agent); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	dir := filepath.Join(f.dir, h.Account)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create folder %s: %w", dir, err)
	}
	path, content := filepath.Join(dir, fileName(h)), fileContent(h)
	old, err := os.ReadFile(path)
	switch {
	case err == nil && bytes.Equal(old, content):
		return FileRef, nil
	case err == nil:
		if err := writeAtomic(path+".prev", old); err != nil {
			return "", err
		}
	case errors.Is(err, fs.ErrNotExist):
		// A .prev left from an older delivery would be restored over
		// nothing the agent had: drop it.
		if err := os.Remove(path + ".prev"); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("remove %s.prev: %w", path, err)
		}
	default:
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	if err := writeAtomic(path, content); err != nil {
		return "", err
	}
	return FileRef, nil
}

// Restore puts <name>.prev back as the agent's file when the file still
// holds h's JWT, or removes the file when there was none before. When the
// file holds something else (a newer delivery), it changes nothing. h need
// not carry the seed or creds (rotatord keeps no seed once delivered): the
// file is found by the JWT it holds, .creds or .jwt.
func (f *File) Restore(ctx context.Context, h rotatord.Handoff, ref string) error {
	if err := checkNames(h.Account, h.Agent); err != nil {
		return err
	}
	if ref != FileRef {
		return rotatord.Errorf(rotatord.EINVALID, "invalid file delivery reference %q", ref)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if h.JWT == "" {
		return nil
	}
	var path string
	for _, name := range []string{h.Agent + ".creds", h.Agent + ".jwt"} {
		p := filepath.Join(f.dir, h.Account, name)
		cur, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", p, err)
		}
		if bytes.Contains(cur, []byte(h.JWT)) {
			path = p
			break
		}
	}
	if path == "" {
		return nil
	}
	err := os.Rename(path+".prev", path)
	if errors.Is(err, fs.ErrNotExist) {
		err = os.Remove(path)
	}
	if err != nil {
		return fmt.Errorf("restore %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

// writeAtomic replaces path with content: readers see the old file or the
// new one, never a part, and the new one survives a crash once this
// returns.
func writeAtomic(path string, content []byte) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	// CreateTemp makes the file 0600 already; say so for the reader.
	if err = tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err = tmp.Write(content); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rename into %s: %w", path, err)
	}
	return syncDir(dir)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync folder %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync folder %s: %w", dir, err)
	}
	return nil
}

// Finish removes the kept <name>.prev once the rotation completed: the old
// key is revoked, and its seed has no reason to stay on disk.
// Both names are cleared: Finish is told only which agent, not whether its
// file held creds or a JWT.
func (f *File) Finish(ctx context.Context, h rotatord.Handoff) error {
	if err := checkNames(h.Account, h.Agent); err != nil {
		return err
	}
	for _, name := range []string{h.Agent + ".creds", h.Agent + ".jwt"} {
		path := filepath.Join(f.dir, h.Account, name+".prev")
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", path, err)
		}
	}
	return nil
}
