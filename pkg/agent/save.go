package agent

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
)

// CredsSaver writes the creds a Client connects with back to a file when
// they change, so that a restarted agent starts with the key the servers
// accept. Call Save from Config.OnState when the state is StateConnected.
// It is safe for concurrent use.
type CredsSaver struct {
	path string
	log  *slog.Logger

	mu    sync.Mutex
	saved string // public key of the creds in the file
}

// NewCredsSaver returns a saver for path, which holds c's creds now (the
// file c was made from). log may be nil.
func NewCredsSaver(path string, c *Client, log *slog.Logger) *CredsSaver {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &CredsSaver{path: path, log: log, saved: c.PublicKey()}
}

// Save writes c's current creds to the file unless it holds them already.
// A failure is logged (naming the file, never the creds) and returned.
func (s *CredsSaver) Save(c *Client) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	pub, file := c.PublicKey(), c.CredsFile()
	if pub == s.saved {
		return nil
	}
	if err := WriteCredsFile(s.path, file); err != nil {
		s.log.Error("save creds", "file", s.path, "err", err)
		return err
	}
	s.saved = pub
	s.log.Info("saved the new creds", "file", s.path, "key", pub)
	return nil
}

// WriteCredsFile writes data with mode 0600 through a temporary file in the
// same folder, synced and renamed over path, so a reader (or a crash) never
// sees half a file.
func WriteCredsFile(path string, data []byte) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
			err = fmt.Errorf("write %s: %w", path, err)
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
