package seal

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSealOpen(t *testing.T) {
	s, err := New(bytes.Repeat([]byte{7}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	ct := s.Seal([]byte("SUAseed"), []byte("UKEY"))
	if bytes.Contains(ct, []byte("SUAseed")) {
		t.Fatal("ciphertext contains the plaintext")
	}
	got, err := s.Open(ct, []byte("UKEY"))
	if err != nil || string(got) != "SUAseed" {
		t.Fatalf("Open = %q, %v; want SUAseed", got, err)
	}
	if _, err := s.Open(ct, []byte("OTHER")); !errors.Is(err, ErrDecrypt) {
		t.Errorf("Open with other aad: err = %v, want ErrDecrypt", err)
	}
	other, _ := New(bytes.Repeat([]byte{8}, KeySize))
	if _, err := other.Open(ct, []byte("UKEY")); !errors.Is(err, ErrDecrypt) {
		t.Errorf("Open with other key: err = %v, want ErrDecrypt", err)
	}
	ct[len(ct)-1] ^= 1
	if _, err := s.Open(ct, []byte("UKEY")); !errors.Is(err, ErrDecrypt) {
		t.Errorf("Open altered: err = %v, want ErrDecrypt", err)
	}
	for _, bad := range [][]byte{nil, {1}, {2, 0, 0}} {
		if _, err := s.Open(bad, nil); !errors.Is(err, ErrDecrypt) {
			t.Errorf("Open(%v): err = %v, want ErrDecrypt", bad, err)
		}
	}
}

func TestParseKey(t *testing.T) {
	key := bytes.Repeat([]byte{0xfb}, KeySize)
	for _, text := range []string{
		base64.StdEncoding.EncodeToString(key) + "\n",
		base64.RawURLEncoding.EncodeToString(key),
	} {
		got, err := ParseKey(text)
		if err != nil || !bytes.Equal(got, key) {
			t.Errorf("ParseKey(%q) = %x, %v", text, got, err)
		}
	}
	for _, text := range []string{"", "not base64 !!", base64.StdEncoding.EncodeToString(key[:16])} {
		if _, err := ParseKey(text); err == nil {
			t.Errorf("ParseKey(%q) succeeded, want error", text)
		}
	}
}

func TestLoadFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "master.key")
	if _, err := LoadFile(path); err == nil {
		t.Fatal("LoadFile of a missing file succeeded")
	}
	if _, err := LoadFile(""); err == nil || !strings.Contains(err.Error(), "ROTATORD_MASTER_KEY_FILE") {
		t.Fatalf("LoadFile(\"\") = %v, want a hint at ROTATORD_MASTER_KEY_FILE", err)
	}
	wrote, err := WriteNewKeyFile(path)
	if err != nil || !wrote {
		t.Fatalf("WriteNewKeyFile = %v, %v", wrote, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	before, _ := os.ReadFile(path)
	if wrote, err := WriteNewKeyFile(path); err != nil || wrote {
		t.Fatalf("second WriteNewKeyFile = %v, %v; want false, nil", wrote, err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Fatal("second WriteNewKeyFile changed the key")
	}
	if _, err := LoadFile(path); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, []byte("short"), 0o600)
	if _, err := LoadFile(path); err == nil || strings.Contains(err.Error(), "short") {
		t.Fatalf("LoadFile of a bad key = %v, want an error that does not echo the file", err)
	}
}

// A key file that group or others may read or change is refused, as ssh
// refuses such a private key, with the chmod that fixes it; through a
// symlink the target's mode counts.
func TestLoadFileRefusesOpenModes(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "master.key")
	if _, err := WriteNewKeyFile(path); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.key")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o620, 0o602, 0o660, 0o666, 0o610} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{path, link} {
			_, err := LoadFile(p)
			if err == nil || !strings.Contains(err.Error(), "run: chmod 600 "+p) || !strings.Contains(err.Error(), "group or others") {
				t.Errorf("LoadFile(%s) with mode %04o = %v, want a refusal naming chmod 600", p, mode, err)
			}
		}
	}
	for _, mode := range []os.FileMode{0o600, 0o400, 0o700} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadFile(path); err != nil {
			t.Errorf("LoadFile with mode %04o = %v, want it loaded", mode, err)
		}
	}
}
