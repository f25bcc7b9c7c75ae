package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/nats-io/nats.go"
)

// TLS of rotatord's two network ends: the HTTP listener (HTTPS, with
// optional client certificates for the admin API) and its own NATS
// connection (a CA for the servers, a client certificate for servers that
// require one). Key pairs are re-read when their files change, so a renewed
// certificate is picked up without a restart; CA files are read at start.

// checkTLSPairs reports TLS settings that only work together. It reads no file.
func (c *Config) checkTLSPairs() []error {
	var errs []error
	pair := func(certFlag, keyFlag, cert, key string) {
		if (cert == "") != (key == "") {
			errs = append(errs, fmt.Errorf("%s and %s go together: set both or neither",
				envNames[certFlag], envNames[keyFlag]))
		}
	}
	pair("tls-cert-file", "tls-key-file", c.TLSCertFile, c.TLSKeyFile)
	pair("nats-cert-file", "nats-key-file", c.NATSCertFile, c.NATSKeyFile)
	if c.TLSClientCAFile != "" && c.TLSCertFile == "" {
		errs = append(errs, fmt.Errorf("%s needs the listener to serve TLS: set %s and %s too",
			envNames["tls-client-ca-file"], envNames["tls-cert-file"], envNames["tls-key-file"]))
	}
	errs = append(errs, c.checkClientAllowed()...)
	return errs
}

// clientAllowed returns the identities of TLSClientAllowed.
func (c *Config) clientAllowed() []string {
	var out []string
	for _, id := range strings.Split(c.TLSClientAllowed, ",") {
		if id = strings.TrimSpace(id); id != "" {
			out = append(out, id)
		}
	}
	return out
}

// checkClientAllowed reports an allowlist of client identities that is
// missing (a client CA without one would let every certificate it signs
// reach the admin API), has no use (no client CA), or holds an entry that
// no certificate can carry.
func (c *Config) checkClientAllowed() []error {
	ids := c.clientAllowed()
	switch {
	case c.TLSClientCAFile != "" && len(ids) == 0:
		return []error{fmt.Errorf("%s is required with %s: the client certificate identities (DNS or URI SANs, or CNs), comma-separated, allowed on the admin API; without it every certificate the CA signs would be let in",
			envNames["tls-client-allowed"], envNames["tls-client-ca-file"])}
	case c.TLSClientCAFile == "" && len(ids) > 0:
		return []error{fmt.Errorf("%s needs %s: without a client CA no client certificate is asked for",
			envNames["tls-client-allowed"], envNames["tls-client-ca-file"])}
	}
	var errs []error
	for _, id := range ids {
		if strings.ContainsFunc(id, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) {
			errs = append(errs, fmt.Errorf("%s: identity %q holds a space or an unprintable character", envNames["tls-client-allowed"], id))
		}
	}
	return errs
}

// checkTLSFiles loads every configured TLS file and reports each that does
// not load.
func (c *Config) checkTLSFiles() []error {
	var errs []error
	if c.TLSCertFile != "" && c.TLSKeyFile != "" {
		if _, err := loadKeyPair(c.TLSCertFile, c.TLSKeyFile, "tls-cert-file", "tls-key-file"); err != nil {
			errs = append(errs, err)
		}
	}
	if c.TLSClientCAFile != "" {
		if _, err := loadCAPool(c.TLSClientCAFile, "tls-client-ca-file"); err != nil {
			errs = append(errs, err)
		}
	}
	if c.NATSCAFile != "" {
		if _, err := loadCAPool(c.NATSCAFile, "nats-ca-file"); err != nil {
			errs = append(errs, err)
		}
	}
	if c.NATSCertFile != "" && c.NATSKeyFile != "" {
		if _, err := loadKeyPair(c.NATSCertFile, c.NATSKeyFile, "nats-cert-file", "nats-key-file"); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// serverTLSConfig is the HTTP listener's TLS configuration, nil when it
// serves plain HTTP. With a client CA the listener asks every client for a
// certificate and refuses, in the handshake, one that the CA did not sign
// (tls.VerifyClientCertIfGiven); a client without one gets through the
// handshake, and httpapi decides per route whether that is enough.
func serverTLSConfig(c *Config, log *slog.Logger) (*tls.Config, error) {
	if c.TLSCertFile == "" {
		return nil, nil
	}
	kp, err := newKeyPairFile(c.TLSCertFile, c.TLSKeyFile, "tls-cert-file", "tls-key-file", log)
	if err != nil {
		return nil, err
	}
	tc := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return kp.current(), nil
		},
	}
	if c.TLSClientCAFile != "" {
		if tc.ClientCAs, err = loadCAPool(c.TLSClientCAFile, "tls-client-ca-file"); err != nil {
			return nil, err
		}
		tc.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return tc, nil
}

// natsTLSOptions are the options of rotatord's NATS connection for TLS;
// none when neither a CA nor a client certificate is configured (a tls://
// URL still works then, with the system's roots).
func natsTLSOptions(c *Config, log *slog.Logger) ([]nats.Option, error) {
	if c.NATSCAFile == "" && c.NATSCertFile == "" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.NATSCAFile != "" {
		pool, err := loadCAPool(c.NATSCAFile, "nats-ca-file")
		if err != nil {
			return nil, err
		}
		tc.RootCAs = pool
	}
	if c.NATSCertFile != "" {
		kp, err := newKeyPairFile(c.NATSCertFile, c.NATSKeyFile, "nats-cert-file", "nats-key-file", log)
		if err != nil {
			return nil, err
		}
		// Asked at every (re)connect, so a renewed certificate is used
		// from the next reconnect on.
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return kp.current(), nil
		}
	}
	return []nats.Option{nats.Secure(tc)}, nil
}

// loadKeyPair loads a PEM certificate (chain) and its key. Errors name the
// variables that point at the files.
func loadKeyPair(certFile, keyFile, certFlag, keyFlag string) (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls key pair (%s=%s, %s=%s): %w",
			envNames[certFlag], certFile, envNames[keyFlag], keyFile, err)
	}
	return &cert, nil
}

// loadCAPool reads a file of PEM CA certificates. A file without any is an
// error: a pool that trusts nothing would refuse every peer.
func loadCAPool(file, flagName string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("tls ca file (%s): %w", envNames[flagName], err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls ca file (%s=%s): no PEM certificate in it", envNames[flagName], file)
	}
	return pool, nil
}

// reloadCheckEvery bounds how often a key pair's files are looked at.
const reloadCheckEvery = time.Second

// keyPairFile is a certificate and key loaded from files and loaded again
// when either file changes (size or modification time; a Kubernetes secret
// swapped through a symlink counts). A pair that does not load (the
// certificate is written, the key not yet) keeps the previous one in use.
type keyPairFile struct {
	certFile, keyFile string
	certFlag, keyFlag string
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   [2]fileStamp
	checked time.Time
}

type fileStamp struct {
	size int64
	mod  time.Time
}

func newKeyPairFile(certFile, keyFile, certFlag, keyFlag string, log *slog.Logger) (*keyPairFile, error) {
	k := &keyPairFile{certFile: certFile, keyFile: keyFile, certFlag: certFlag, keyFlag: keyFlag, log: log, checked: time.Now()}
	k.stamp, _ = k.stamps() // a stat error shows in the load below
	cert, err := loadKeyPair(certFile, keyFile, certFlag, keyFlag)
	if err != nil {
		return nil, err
	}
	k.cert = cert
	k.logLoaded("loaded tls certificate")
	return k, nil
}

func (k *keyPairFile) stamps() ([2]fileStamp, error) {
	var out [2]fileStamp
	for i, f := range []string{k.certFile, k.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return out, err
		}
		out[i] = fileStamp{size: fi.Size(), mod: fi.ModTime()}
	}
	return out, nil
}

// current returns the key pair to present, reloading it first when its
// files changed.
func (k *keyPairFile) current() *tls.Certificate {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := time.Now()
	if now.Sub(k.checked) < reloadCheckEvery {
		return k.cert
	}
	k.checked = now
	st, err := k.stamps()
	if err != nil || st == k.stamp {
		// A file that is missing for a moment is being replaced.
		return k.cert
	}
	cert, err := loadKeyPair(k.certFile, k.keyFile, k.certFlag, k.keyFlag)
	if err != nil {
		k.log.Warn("reload tls certificate failed; keeping the loaded one", "cert_file", k.certFile, "err", err)
		return k.cert
	}
	k.cert, k.stamp = cert, st
	k.logLoaded("reloaded tls certificate")
	return k.cert
}

func (k *keyPairFile) logLoaded(msg string) {
	if k.log == nil || k.cert.Leaf == nil {
		return
	}
	k.log.Info(msg, "cert_file", k.certFile, "subject", k.cert.Leaf.Subject.String(),
		"not_after", k.cert.Leaf.NotAfter.UTC())
}
