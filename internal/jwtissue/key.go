package jwtissue

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"

	"github.com/nats-io/nkeys"
)

// Key is an NKey pair (operator, account or user) whose ed25519 private
// key and encoded public key are worked out once, when it is made or
// parsed. nkeys' own key pair keeps only the encoded seed and derives both
// again (a scalar multiplication, about 20 µs) on every PublicKey, Sign and
// Verify: a user JWT signed by a cached signing key cost three of them
// besides the signature itself. Key implements nkeys.KeyPair, signs
// exactly as nkeys does (ed25519 signatures are deterministic: same key,
// same message, same bytes) and is safe for concurrent use. It never
// prints its seed: String, GoString and LogValue show the public key.
type Key struct {
	prefix nkeys.PrefixByte
	seed   []byte // encoded, "S" + kind + base32
	priv   ed25519.PrivateKey
	pub    string // encoded public key
	raw    ed25519.PublicKey
}

var _ nkeys.KeyPair = (*Key)(nil)

// newKey builds a Key from a raw 32-byte ed25519 seed.
func newKey(prefix nkeys.PrefixByte, rawSeed []byte) (*Key, error) {
	if len(rawSeed) != ed25519.SeedSize {
		return nil, fmt.Errorf("%s seed has %d bytes, want %d", prefix, len(rawSeed), ed25519.SeedSize)
	}
	priv := ed25519.NewKeyFromSeed(rawSeed)
	return keyFromPrivate(prefix, priv)
}

func keyFromPrivate(prefix nkeys.PrefixByte, priv ed25519.PrivateKey) (*Key, error) {
	raw := priv.Public().(ed25519.PublicKey)
	seed, err := nkeys.EncodeSeed(prefix, priv.Seed())
	if err != nil {
		return nil, fmt.Errorf("encode %s seed: %w", prefix, err)
	}
	pub, err := nkeys.Encode(prefix, raw)
	if err != nil {
		return nil, fmt.Errorf("encode %s public key: %w", prefix, err)
	}
	return &Key{prefix: prefix, seed: seed, priv: priv, pub: string(pub), raw: raw}, nil
}

// generateKey makes a new key pair from r (crypto/rand when nil): one
// scalar multiplication, where nkeys.CreatePair and a later PublicKey make
// two.
func generateKey(prefix nkeys.PrefixByte, r io.Reader) (*Key, error) {
	if r == nil {
		r = rand.Reader
	}
	_, priv, err := ed25519.GenerateKey(r)
	if err != nil {
		return nil, err
	}
	return keyFromPrivate(prefix, priv)
}

// parseSeed parses an encoded seed of any kind into a Key.
func parseSeed(seed []byte) (*Key, error) {
	prefix, raw, err := nkeys.DecodeSeed(seed)
	if err != nil {
		return nil, err
	}
	return newKey(prefix, raw)
}

// Seed returns a copy of the encoded seed.
func (k *Key) Seed() ([]byte, error) {
	if k.seed == nil {
		return nil, nkeys.ErrInvalidSeed
	}
	return append([]byte(nil), k.seed...), nil
}

// PublicKey returns the encoded public key.
func (k *Key) PublicKey() (string, error) {
	if k.pub == "" {
		return "", nkeys.ErrInvalidPublicKey
	}
	return k.pub, nil
}

// PrivateKey returns the encoded private key, as nkeys does.
func (k *Key) PrivateKey() ([]byte, error) {
	if k.priv == nil {
		return nil, nkeys.ErrInvalidPrivateKey
	}
	return nkeys.Encode(nkeys.PrefixBytePrivate, k.priv)
}

// Sign signs input with the private key: one scalar multiplication.
func (k *Key) Sign(input []byte) ([]byte, error) {
	if k.priv == nil {
		return nil, nkeys.ErrCannotSign
	}
	return ed25519.Sign(k.priv, input), nil
}

// Verify checks sig over input against the public key
// (nkeys.ErrInvalidSignature when it does not verify).
func (k *Key) Verify(input, sig []byte) error {
	if len(k.raw) != ed25519.PublicKeySize {
		return nkeys.ErrInvalidPublicKey
	}
	if !ed25519.Verify(k.raw, input, sig) {
		return nkeys.ErrInvalidSignature
	}
	return nil
}

// Wipe overwrites the seed and the private key; the Key can no longer
// sign. It is not synchronized with Sign: wipe only a key nothing else
// uses any more.
func (k *Key) Wipe() {
	wipe(k.seed)
	wipe(k.priv)
	k.seed, k.priv = nil, nil
}

func wipe(b []byte) {
	for i := range b {
		b[i] = 0
	}
}

// Seal is not supported: only curve (X) keys seal.
func (k *Key) Seal([]byte, string) ([]byte, error) { return nil, nkeys.ErrInvalidNKeyOperation }

// SealWithRand is not supported: only curve (X) keys seal.
func (k *Key) SealWithRand([]byte, string, io.Reader) ([]byte, error) {
	return nil, nkeys.ErrInvalidNKeyOperation
}

// Open is not supported: only curve (X) keys open.
func (k *Key) Open([]byte, string) ([]byte, error) { return nil, nkeys.ErrInvalidNKeyOperation }

// String names the key by its public key; the seed is never shown.
func (k *Key) String() string { return "nkey " + k.pub }

// GoString is String, so that %#v does not print the seed either.
func (k *Key) GoString() string { return k.String() }

// LogValue logs the public key only.
func (k *Key) LogValue() slog.Value { return slog.StringValue(k.pub) }

// UserPublicKey decodes a user public key ("U" + base32, with its
// checksum) into the ed25519 key it encodes, for verifying signatures with
// crypto/ed25519 directly: nkeys.IsValidPublicUserKey and then
// nkeys.FromPublicKey decode it twice. The error does not quote pub.
func UserPublicKey(pub string) (ed25519.PublicKey, error) {
	if len(pub) != 56 {
		return nil, nkeys.ErrInvalidPublicKey
	}
	raw, err := nkeys.Decode(nkeys.PrefixByteUser, []byte(pub))
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, nkeys.ErrInvalidPublicKey
	}
	return ed25519.PublicKey(raw), nil
}
