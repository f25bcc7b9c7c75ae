package nscimport

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// SeedFiles finds seeds: in files given one by one (Add), then in an nsc
// keystore (<Keys>/keys/<kind>/<2 chars>/<public key>.nk). It reads only the
// keys Read asks for, never a user's. Wipe it when done.
type SeedFiles struct {
	// Keys is the nsc keystore folder (holding keys/); empty for none.
	Keys  string
	loose map[string]looseSeed
}

type looseSeed struct {
	path string
	seed []byte
}

// Add reads a seed file (.nk or decorated); kind, when not 0, is the kind
// of key it must hold. User seeds are refused: agents keep theirs.
func (s *SeedFiles) Add(path string, kind nkeys.PrefixByte) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read seed file %s: %w", path, err)
	}
	defer clear(b)
	kp, err := jwt.ParseDecoratedNKey(b)
	if err != nil {
		return fmt.Errorf("seed file %s: %w", path, err)
	}
	defer kp.Wipe()
	pub, err := kp.PublicKey()
	if err != nil {
		return fmt.Errorf("seed file %s: %w", path, err)
	}
	got := nkeys.Prefix(pub)
	switch {
	case got == nkeys.PrefixByteUser:
		return fmt.Errorf("seed file %s holds a user seed: user seeds are not needed (agents keep theirs); pass the user's creds with --creds", path)
	case got != nkeys.PrefixByteOperator && got != nkeys.PrefixByteAccount:
		return fmt.Errorf("seed file %s holds a %s seed, not an operator or account seed", path, got)
	case kind != 0 && got != kind:
		return fmt.Errorf("seed file %s holds a %s seed, not an %s seed", path, got, kind)
	}
	seed, err := kp.Seed()
	if err != nil {
		return fmt.Errorf("seed file %s: %w", path, err)
	}
	if s.loose == nil {
		s.loose = map[string]looseSeed{}
	}
	s.loose[pub] = looseSeed{path: path, seed: append([]byte(nil), seed...)}
	return nil
}

// Files is how many seed files were added.
func (s *SeedFiles) Files() int { return len(s.loose) }

// Lookup is a SeedLookup; the caller owns (and wipes) the bytes.
func (s *SeedFiles) Lookup(pub string) ([]byte, string, error) {
	if l, ok := s.loose[pub]; ok {
		return append([]byte(nil), l.seed...), l.path, nil
	}
	if s.Keys == "" || len(pub) < 3 {
		return nil, "", nil
	}
	path := filepath.Join(s.Keys, "keys", pub[:1], pub[1:3], pub+".nk")
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "", nil
	}
	if err != nil {
		return nil, path, fmt.Errorf("read %s: %w", path, err)
	}
	return b, path, nil
}

// Wipe clears the seeds read from files.
func (s *SeedFiles) Wipe() {
	for _, l := range s.loose {
		clear(l.seed)
	}
}
