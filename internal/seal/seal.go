// Package seal encrypts signing-key seeds at rest with AES-256-GCM under a
// master key that operators keep in a file (ROTATORD_MASTER_KEY_FILE), as
// `openssl rand -base64 32` writes it. The file may hold several keys, one a
// line, while the master key is rotated: the first seals, every one opens,
// and each ciphertext names the key that sealed it.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
)

// KeySize is the master key length in bytes (AES-256).
const KeySize = 32

// Ciphertext versions. Version 1 is [1][nonce][sealed]: it does not say
// which key sealed it, so Open tries every key. Version 2 is
// [2][key ID][nonce][sealed], the key ID being the first KeyIDSize bytes of
// the SHA-256 of the master key; its first 1+KeyIDSize bytes are
// authenticated with the caller's aad.
const (
	version1 byte = 1
	version2 byte = 2
)

// KeyIDSize is the length of the key ID in a version-2 ciphertext.
const KeyIDSize = 8

// ErrDecrypt means a ciphertext could not be opened: the master key is not
// the one it was sealed with, or the data was altered.
var ErrDecrypt = errors.New("cannot decrypt: wrong master key or altered data")

// KeyError is the error of Open for a ciphertext sealed by a master key the
// Sealer does not hold. It matches ErrDecrypt with errors.Is.
type KeyError struct {
	ID string // the key ID of the ciphertext, in hex
}

// Error names the missing key by its ID.
func (e *KeyError) Error() string {
	return fmt.Sprintf("wrong master key: sealed by master key %s, which is not in the master key file", e.ID)
}

// Is reports whether target is ErrDecrypt.
func (e *KeyError) Is(target error) bool { return target == ErrDecrypt }

type key struct {
	id   [KeyIDSize]byte
	aead cipher.AEAD
}

// Sealer encrypts and decrypts small secrets under one or more master keys:
// the first seals, every one opens. It is safe for concurrent use.
type Sealer struct {
	keys []key
}

// New returns a Sealer for one or more 32-byte keys: the first seals new
// values, every one opens. The same key twice is refused.
func New(keys ...[]byte) (*Sealer, error) {
	if len(keys) == 0 {
		return nil, errors.New("no master key")
	}
	s := &Sealer{}
	for i, k := range keys {
		if len(k) != KeySize {
			return nil, fmt.Errorf("master key %d is %d bytes, want %d", i+1, len(k), KeySize)
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, fmt.Errorf("master key %d: %w", i+1, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("master key %d: %w", i+1, err)
		}
		sum := sha256.Sum256(k)
		var id [KeyIDSize]byte
		copy(id[:], sum[:KeyIDSize])
		for j, prev := range s.keys {
			if prev.id == id {
				return nil, fmt.Errorf("master keys %d and %d are the same key", j+1, i+1)
			}
		}
		s.keys = append(s.keys, key{id: id, aead: aead})
	}
	return s, nil
}

// KeyID returns the ID of a master key as Sealer reports and version-2
// ciphertexts carry it, in hex: the first 8 bytes of its SHA-256.
func KeyID(masterKey []byte) string {
	sum := sha256.Sum256(masterKey)
	return hex.EncodeToString(sum[:KeyIDSize])
}

// KeyID returns the ID of the key that seals new values.
func (s *Sealer) KeyID() string { return hex.EncodeToString(s.keys[0].id[:]) }

// KeyIDs returns the IDs of every key s holds, the sealing one first.
func (s *Sealer) KeyIDs() []string {
	ids := make([]string, len(s.keys))
	for i, k := range s.keys {
		ids[i] = hex.EncodeToString(k.id[:])
	}
	return ids
}

// Holds reports whether s holds the key with this ID.
func (s *Sealer) Holds(id string) bool {
	return slices.Contains(s.KeyIDs(), id)
}

// SealedBy returns the ID of the key that sealed a version-2 ciphertext;
// ok is false for a version-1 ciphertext (which does not say) and for
// anything that is not a ciphertext.
func SealedBy(ciphertext []byte) (id string, ok bool) {
	if len(ciphertext) < 1+KeyIDSize || ciphertext[0] != version2 {
		return "", false
	}
	return hex.EncodeToString(ciphertext[1 : 1+KeyIDSize]), true
}

// ParseKey decodes a base64 master key (standard or URL alphabet, padding
// optional, surrounding whitespace ignored).
func ParseKey(text string) ([]byte, error) {
	text = strings.TrimSpace(text)
	if text == "" {
		return nil, errors.New("master key is empty")
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if key, err := enc.DecodeString(text); err == nil {
			if len(key) != KeySize {
				return nil, fmt.Errorf("master key decodes to %d bytes, want %d (make one with: openssl rand -base64 32)", len(key), KeySize)
			}
			return key, nil
		}
	}
	return nil, errors.New("master key is not base64 (make one with: openssl rand -base64 32)")
}

// ParseKeys decodes a master key file: one base64 key a line, the key that
// seals first. Blank lines and lines starting with # are skipped. Errors
// name the line, never its content.
func ParseKeys(text string) ([][]byte, error) {
	var keys [][]byte
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := ParseKey(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("master key is empty")
	}
	return keys, nil
}

// LoadFile reads a master key file (one base64 key a line, the key that
// seals first, see ParseKeys) from path and returns a Sealer for its keys.
// Like ssh with a private key, it refuses a file that group or others may
// read or change (any of the mode bits 0077; the file a symlink points to
// is what counts), naming the chmod that fixes it. The error never contains
// the key.
func LoadFile(path string) (*Sealer, error) {
	if path == "" {
		return nil, errors.New("no master key file given (set ROTATORD_MASTER_KEY_FILE or --master-key-file)")
	}
	if err := CheckFileMode(path); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read master key file: %w", err)
	}
	keys, err := ParseKeys(string(b))
	if err != nil {
		return nil, fmt.Errorf("master key file %s: %w", path, err)
	}
	s, err := New(keys...)
	if err != nil {
		return nil, fmt.Errorf("master key file %s: %w", path, err)
	}
	return s, nil
}

// CheckFileMode returns an error naming the fix when the secret file at
// path may be read or changed by its group or by others.
func CheckFileMode(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("read master key file: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("master key file %s is open to group or others (mode %04o): it must be readable by rotatord's user only; run: chmod 600 %s",
			path, perm, path)
	}
	return nil
}

// WriteNewKeyFile writes a fresh random key to path with mode 0600, unless
// the file exists already. It reports whether it wrote one.
func WriteNewKeyFile(path string) (bool, error) {
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return false, fmt.Errorf("generate master key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("create master key file: %w", err)
	}
	if _, err := f.WriteString(base64.StdEncoding.EncodeToString(key) + "\n"); err != nil {
		f.Close()
		return false, fmt.Errorf("write master key file: %w", err)
	}
	if err := f.Close(); err != nil {
		return false, fmt.Errorf("write master key file: %w", err)
	}
	return true, nil
}

// Seal encrypts plaintext under the sealing key (the first), in the
// version-2 format that names that key. aad binds the ciphertext to its
// owner (the public key of the seed), so a ciphertext copied to another row
// will not open.
//
// Every value sealed in the database must be re-sealed by
// `rotatord master-key rotate`: add its column to the list in
// internal/registry/masterkey.go.
func (s *Sealer) Seal(plaintext, aad []byte) []byte {
	k := s.keys[0]
	ns := k.aead.NonceSize()
	out := make([]byte, 1+KeyIDSize+ns, 1+KeyIDSize+ns+len(plaintext)+k.aead.Overhead())
	out[0] = version2
	copy(out[1:], k.id[:])
	nonce := out[1+KeyIDSize:]
	if _, err := rand.Read(nonce); err != nil {
		panic("seal: crypto/rand failed: " + err.Error())
	}
	return k.aead.Seal(out, nonce, plaintext, header(out[:1+KeyIDSize], aad))
}

// header is the aad of a version-2 ciphertext: its version and key ID, then
// the caller's aad.
func header(head, aad []byte) []byte {
	return append(slices.Clip(head), aad...)
}

// Open decrypts what Seal returned for the same aad, under whichever of its
// keys sealed it. It returns a *KeyError (which is ErrDecrypt) when the
// ciphertext names a key s does not hold, and ErrDecrypt for a wrong key, a
// wrong aad or altered data.
func (s *Sealer) Open(ciphertext, aad []byte) ([]byte, error) {
	if len(ciphertext) == 0 {
		return nil, ErrDecrypt
	}
	switch ciphertext[0] {
	case version1:
		for _, k := range s.keys {
			if pt, err := open(k.aead, ciphertext[1:], aad); err == nil {
				return pt, nil
			}
		}
		return nil, ErrDecrypt
	case version2:
		if len(ciphertext) < 1+KeyIDSize {
			return nil, ErrDecrypt
		}
		id := ciphertext[1 : 1+KeyIDSize]
		for _, k := range s.keys {
			if string(k.id[:]) == string(id) {
				return open(k.aead, ciphertext[1+KeyIDSize:], header(ciphertext[:1+KeyIDSize], aad))
			}
		}
		return nil, &KeyError{ID: hex.EncodeToString(id)}
	}
	return nil, ErrDecrypt
}

// open opens [nonce][sealed].
func open(aead cipher.AEAD, body, aad []byte) ([]byte, error) {
	ns := aead.NonceSize()
	if len(body) < ns+aead.Overhead() {
		return nil, ErrDecrypt
	}
	pt, err := aead.Open(nil, body[:ns], body[ns:], aad)
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}

// With returns a Sealer that seals with s's sealing key and opens with the
// keys of s and of others; a key held twice is kept once.
func (s *Sealer) With(others ...*Sealer) *Sealer {
	out := &Sealer{keys: slices.Clone(s.keys)}
	for _, o := range others {
		for _, k := range o.keys {
			if !slices.ContainsFunc(out.keys, func(h key) bool { return h.id == k.id }) {
				out.keys = append(out.keys, k)
			}
		}
	}
	return out
}
