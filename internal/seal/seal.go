// Package seal encrypts signing-key seeds at rest with AES-256-GCM under a
// master key that operators keep in a file (ROTATORD_MASTER_KEY_FILE), as
// `openssl rand -base64 32` writes it.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
)

// KeySize is the master key length in bytes (AES-256).
const KeySize = 32

// version prefixes every ciphertext so the format can change later.
const version byte = 1

// ErrDecrypt means a ciphertext could not be opened: the master key is not
// the one it was sealed with, or the data was altered.
var ErrDecrypt = errors.New("cannot decrypt: wrong master key or altered data")

// Sealer encrypts and decrypts small secrets. It is safe for concurrent use.
type Sealer struct {
	aead cipher.AEAD
}

// New returns a Sealer for a 32-byte key.
func New(key []byte) (*Sealer, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("master key is %d bytes, want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	return &Sealer{aead: aead}, nil
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

// LoadFile reads a base64 master key from path and returns a Sealer for it.
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
	key, err := ParseKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("master key file %s: %w", path, err)
	}
	return New(key)
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

// Seal encrypts plaintext. aad binds the ciphertext to its owner (the public
// key of the seed), so a ciphertext copied to another row will not open.
func (s *Sealer) Seal(plaintext, aad []byte) []byte {
	nonce := make([]byte, s.aead.NonceSize(), 1+s.aead.NonceSize()+len(plaintext)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		panic("seal: crypto/rand failed: " + err.Error())
	}
	out := append([]byte{version}, nonce...)
	return s.aead.Seal(out, nonce, plaintext, aad)
}

// Open decrypts what Seal returned for the same aad. It returns ErrDecrypt
// for a wrong key, a wrong aad or altered data.
func (s *Sealer) Open(ciphertext, aad []byte) ([]byte, error) {
	ns := s.aead.NonceSize()
	if len(ciphertext) < 1+ns+s.aead.Overhead() || ciphertext[0] != version {
		return nil, ErrDecrypt
	}
	pt, err := s.aead.Open(nil, ciphertext[1:1+ns], ciphertext[1+ns:], aad)
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}
