package jwtissue

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// The creds file frame, exactly as jwt.FormatUserConfig writes it (and as
// nsc does): the decorated user JWT, then the decorated seed.
const (
	credsJWTHead  = "-----BEGIN NATS USER JWT-----\n"
	credsJWTTail  = "\n------END NATS USER JWT------\n\n"
	credsSeedHead = "************************* IMPORTANT *************************\n" +
		"NKEY Seed printed below can be used to sign and prove identity.\n" +
		"NKEYs are sensitive and should be treated as secrets.\n\n" +
		"-----BEGIN USER NKEY SEED-----\n"
	credsSeedTail = "\n------END USER NKEY SEED------\n\n" +
		"*************************************************************\n"
)

// Creds formats a NATS creds file from a user JWT and its seed, byte for
// byte as jwt.FormatUserConfig does, so nats.go, nsc and
// jwt.ParseDecoratedJWT / ParseDecoratedUserNKey read it as before.
//
// It writes the fixed frame directly. jwt.FormatUserConfig decodes and
// verifies the JWT and derives the seed's public key to compare it with
// the JWT's subject: two ed25519 operations (about 0.1 ms) for a JWT that
// rotatord has just signed or read from its own registry, and a seed that
// comes either from the key pair made for that JWT or from a seal bound to
// the credential's public key (seal.Open fails for any other). The caller
// vouches for that pairing; Creds checks what keeps the file well formed:
// the JWT is three base64url parts whose claims are a user's (subject a
// user public key), and the seed is a user seed (base32, nothing around
// it) with a valid checksum.
func Creds(userJWT string, seed []byte) ([]byte, error) {
	if err := checkUserJWTFrame(userJWT); err != nil {
		return nil, fmt.Errorf("format creds: %w", err)
	}
	// Base32 decoding skips line breaks: the characters are checked first,
	// so that nothing in the seed can break the frame either.
	if !isBase32(seed) {
		return nil, errors.New("format creds: nkey seed is not a user seed")
	}
	if prefix, _, err := nkeys.DecodeSeed(seed); err != nil || prefix != nkeys.PrefixByteUser {
		// Neither this nor the nkeys errors quote the seed.
		return nil, errors.New("format creds: nkey seed is not a user seed")
	}
	n := len(credsJWTHead) + len(userJWT) + len(credsJWTTail) + len(credsSeedHead) + len(seed) + len(credsSeedTail)
	b := make([]byte, 0, n)
	b = append(b, credsJWTHead...)
	b = append(b, userJWT...)
	b = append(b, credsJWTTail...)
	b = append(b, credsSeedHead...)
	b = append(b, seed...)
	b = append(b, credsSeedTail...)
	return b, nil
}

// SplitCreds returns the user JWT and the seed of a creds file in exactly
// the frame Creds (and jwt.FormatUserConfig, and nsc) write, without the
// regular expressions of jwt.ParseDecoratedJWT and ParseDecoratedUserNKey
// (about 0.1 ms a file, for every creds an agent receives). ok is false
// for anything else, which those read instead: other line ends, other
// spacing, comments around the blocks. Neither part is checked beyond its
// characters (a JWT's three base64url parts, a seed's base32).
func SplitCreds(file []byte) (token string, seed []byte, ok bool) {
	rest, ok := strings.CutPrefix(string(file), credsJWTHead)
	if !ok {
		return "", nil, false
	}
	token, rest, ok = strings.Cut(rest, credsJWTTail)
	if !ok {
		return "", nil, false
	}
	if rest, ok = strings.CutPrefix(rest, credsSeedHead); !ok {
		return "", nil, false
	}
	s, ok := strings.CutSuffix(rest, credsSeedTail)
	if !ok {
		return "", nil, false
	}
	seed = []byte(s)
	if _, _, _, ok := jwtParts(token); !ok || !isBase32(seed) {
		return "", nil, false
	}
	return token, seed, true
}

// checkUserJWTFrame checks, without verifying its signature, that token is
// a JWT (three non-empty base64url parts, nothing else: no line break can
// break the creds frame) whose claims are a user's.
func checkUserJWTFrame(token string) error {
	if _, err := UnverifiedUserSubject(token); err != nil {
		return fmt.Errorf("cannot be serialized as a user config: %w", err)
	}
	return nil
}

// UnverifiedUserSubject returns the user key a user JWT is for, without
// checking its signature: for an agent reading creds it was handed (by
// rotatord, a file or Vault), where the servers decide whether the JWT is
// trusted and a signature check would only show that it was signed by the
// key its own claims name, which anyone can arrange.
func UnverifiedUserSubject(token string) (string, error) {
	var c struct {
		Subject string `json:"sub"`
		Nats    struct {
			Type jwt.ClaimType `json:"type"`
		} `json:"nats"`
	}
	if err := decodeUnverified(token, &c); err != nil {
		return "", err
	}
	if c.Nats.Type != jwt.UserClaim || !nkeys.IsValidPublicUserKey(c.Subject) {
		return "", fmt.Errorf("not a user jwt (type %.20q)", string(c.Nats.Type))
	}
	return c.Subject, nil
}

// decodeUnverified decodes token's claims into v WITHOUT checking its
// signature: only for JWTs whose origin vouches for them (see UnverifiedID).
// token must be three non-empty base64url parts.
func decodeUnverified(token string, v any) error {
	_, claims, _, ok := jwtParts(token)
	if !ok {
		return errors.New("not a jwt: want three dot-separated base64url parts")
	}
	payload, err := base64.RawURLEncoding.DecodeString(claims)
	if err != nil {
		return errors.New("not a jwt: bad claims encoding")
	}
	if err := json.Unmarshal(payload, v); err != nil {
		return errors.New("not a jwt: bad claims")
	}
	return nil
}

// jwtParts splits token into its three parts; ok is false unless there
// are exactly three, non-empty and base64url.
func jwtParts(token string) (head, claims, sig string, ok bool) {
	head, rest, ok1 := strings.Cut(token, ".")
	claims, sig, ok2 := strings.Cut(rest, ".")
	ok = ok1 && ok2 && isBase64URL(head) && isBase64URL(claims) && isBase64URL(sig)
	return head, claims, sig, ok
}

// UnverifiedID returns the ID (jti) of a JWT without checking its
// signature: for a JWT that a nats-server reports it authenticated a
// client with (connect events, CONNZ), where the server has verified it
// already, and checking again would only show that it was signed by the
// key named in its own claims, which anyone can do. Never use it for a JWT
// whose sender could choose it and whose claims decide anything.
func UnverifiedID(token string) (string, error) {
	var c struct {
		ID string `json:"jti"`
	}
	if err := decodeUnverified(token, &c); err != nil {
		return "", err
	}
	if c.ID == "" {
		return "", errors.New("jwt has no id")
	}
	return c.ID, nil
}

// isBase32 reports whether s is non-empty and only the characters of
// nkeys' base32 (RFC 4648 alphabet, no padding).
func isBase32(s []byte) bool {
	if len(s) == 0 {
		return false
	}
	for _, c := range s {
		if !('A' <= c && c <= 'Z' || '2' <= c && c <= '7') {
			return false
		}
	}
	return true
}

// isBase64URL reports whether s is non-empty and only base64url characters.
func isBase64URL(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
