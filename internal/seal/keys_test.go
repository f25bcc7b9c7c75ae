package seal

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// v1 seals the way rotatord did before key IDs: [1][nonce][sealed].
func v1(t *testing.T, masterKey, plaintext, aad []byte) []byte {
	t.Helper()
	block, err := aes.NewCipher(masterKey)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	return aead.Seal(append([]byte{1}, nonce...), nonce, plaintext, aad)
}

// Several keys: the first seals, every one opens, each ciphertext names its
// key, and version-1 ciphertexts (no key ID) still open under any key held.
func TestSealerKeys(t *testing.T) {
	oldKey, newKey, otherKey := bytes.Repeat([]byte{1}, KeySize), bytes.Repeat([]byte{2}, KeySize), bytes.Repeat([]byte{3}, KeySize)
	old, _ := New(oldKey)
	both, err := New(newKey, oldKey)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := both.KeyID(), KeyID(newKey); got != want || len(got) != 2*KeyIDSize {
		t.Fatalf("KeyID = %q, want %q (16 hex digits)", got, want)
	}
	if got := both.KeyIDs(); len(got) != 2 || got[0] != KeyID(newKey) || got[1] != KeyID(oldKey) {
		t.Fatalf("KeyIDs = %v", got)
	}
	if !both.Holds(KeyID(oldKey)) || both.Holds(KeyID(otherKey)) {
		t.Fatal("Holds is wrong")
	}

	byOld := old.Seal([]byte("SAold"), []byte("AKEY"))
	if id, ok := SealedBy(byOld); !ok || id != KeyID(oldKey) {
		t.Fatalf("SealedBy = %q, %v; want the old key's ID", id, ok)
	}
	if got, err := both.Open(byOld, []byte("AKEY")); err != nil || string(got) != "SAold" {
		t.Fatalf("new+old opens a value of the old key: %q, %v", got, err)
	}
	byNew := both.Seal([]byte("SAnew"), []byte("AKEY"))
	if id, _ := SealedBy(byNew); id != KeyID(newKey) {
		t.Fatalf("new+old sealed with %s, want the first key %s", id, KeyID(newKey))
	}
	_, err = old.Open(byNew, []byte("AKEY"))
	var ke *KeyError
	if !errors.As(err, &ke) || ke.ID != KeyID(newKey) || !errors.Is(err, ErrDecrypt) {
		t.Fatalf("old alone opening a value of the new key: %v, want a KeyError naming %s", err, KeyID(newKey))
	}
	if !strings.Contains(err.Error(), KeyID(newKey)) || !strings.Contains(err.Error(), "not in the master key file") {
		t.Fatalf("KeyError message = %q", err)
	}

	// The header is authenticated: a value relabelled with another key ID
	// held by the sealer does not open under that key.
	relabelled := bytes.Clone(byNew)
	copy(relabelled[1:1+KeyIDSize], byOld[1:1+KeyIDSize])
	if _, err := both.Open(relabelled, []byte("AKEY")); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("relabelled value opened: %v", err)
	}
	if _, err := both.Open(byNew, []byte("OTHER")); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("other aad: %v", err)
	}

	legacy := v1(t, oldKey, []byte("SAlegacy"), []byte("AKEY"))
	if _, ok := SealedBy(legacy); ok {
		t.Fatal("SealedBy found a key ID in a version-1 value")
	}
	if got, err := both.Open(legacy, []byte("AKEY")); err != nil || string(got) != "SAlegacy" {
		t.Fatalf("version-1 value under the second key: %q, %v", got, err)
	}
	other, _ := New(otherKey)
	if _, err := other.Open(legacy, []byte("AKEY")); !errors.Is(err, ErrDecrypt) || errors.As(err, &ke) {
		t.Fatalf("version-1 value under a key not held: %v, want plain ErrDecrypt", err)
	}

	if _, err := New(); err == nil {
		t.Fatal("New() without keys succeeded")
	}
	if _, err := New(newKey, oldKey, newKey); err == nil || !strings.Contains(err.Error(), "1 and 3 are the same key") {
		t.Fatalf("New with a repeated key = %v", err)
	}
	if _, err := New(newKey, oldKey[:16]); err == nil || !strings.Contains(err.Error(), "master key 2") {
		t.Fatalf("New with a short second key = %v", err)
	}
}

func TestParseKeys(t *testing.T) {
	a, b := bytes.Repeat([]byte{0xa1}, KeySize), bytes.Repeat([]byte{0xb2}, KeySize)
	text := "# new key, 2026-12\n" + base64.StdEncoding.EncodeToString(a) + "\n\n  # the old one\n" +
		base64.RawURLEncoding.EncodeToString(b) + "  \n"
	keys, err := ParseKeys(text)
	if err != nil || len(keys) != 2 || !bytes.Equal(keys[0], a) || !bytes.Equal(keys[1], b) {
		t.Fatalf("ParseKeys = %x, %v", keys, err)
	}
	for text, want := range map[string]string{
		"":         "empty",
		"# only\n": "empty",
		base64.StdEncoding.EncodeToString(a) + "\nnot-a-key!!\n":                          "line 2",
		"\n" + base64.StdEncoding.EncodeToString(a[:20]) + "\n":                           "line 2",
		base64.StdEncoding.EncodeToString(a) + " " + base64.StdEncoding.EncodeToString(b): "line 1",
	} {
		_, err := ParseKeys(text)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseKeys(%q) = %v, want an error with %q", text, err, want)
		}
		if err != nil && strings.Contains(text, "not-a-key") && strings.Contains(err.Error(), "not-a-key") {
			t.Errorf("ParseKeys echoed the line: %v", err)
		}
	}
}

// A file of two keys loads as a Sealer of both, the first sealing; the same
// key twice is refused without echoing it.
func TestLoadFileKeys(t *testing.T) {
	dir := t.TempDir()
	a, b := bytes.Repeat([]byte{0xa1}, KeySize), bytes.Repeat([]byte{0xb2}, KeySize)
	path := filepath.Join(dir, "master.key")
	os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(a)+"\n"+base64.StdEncoding.EncodeToString(b)+"\n"), 0o600)
	s, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.KeyIDs(); len(got) != 2 || got[0] != KeyID(a) || got[1] != KeyID(b) {
		t.Fatalf("KeyIDs = %v", got)
	}
	os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(a)+"\n"+base64.StdEncoding.EncodeToString(a)+"\n"), 0o600)
	if _, err := LoadFile(path); err == nil || !strings.Contains(err.Error(), "same key") || strings.Contains(err.Error(), base64.StdEncoding.EncodeToString(a)) {
		t.Fatalf("LoadFile with a repeated key = %v", err)
	}
}

func TestSealerWith(t *testing.T) {
	a, b, c := bytes.Repeat([]byte{1}, KeySize), bytes.Repeat([]byte{2}, KeySize), bytes.Repeat([]byte{3}, KeySize)
	sa, _ := New(a)
	sbc, _ := New(b, c)
	sca, _ := New(c, a)
	all := sa.With(sbc, sca)
	if got := all.KeyIDs(); len(got) != 3 || got[0] != KeyID(a) || got[1] != KeyID(b) || got[2] != KeyID(c) {
		t.Fatalf("KeyIDs = %v, want a, b, c once each", got)
	}
	if id, _ := SealedBy(all.Seal([]byte("x"), nil)); id != KeyID(a) {
		t.Fatalf("sealed with %s, want a's key", id)
	}
	if _, err := all.Open(sbc.Seal([]byte("x"), nil), nil); err != nil {
		t.Fatal(err)
	}
	if len(sa.KeyIDs()) != 1 {
		t.Fatal("With changed its receiver")
	}
}
