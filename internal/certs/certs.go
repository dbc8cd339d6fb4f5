// Package certs loads TLS material from files for explorerd and its
// clients: a server certificate that can be reloaded while serving (on
// SIGHUP) without dropping a connection, and a CA file that a client
// trusts instead of the system's roots.
package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync/atomic"
)

// Errors of the certs package.
var (
	ErrNoCertificates = errors.New("certs: no PEM certificate in the CA file")
)

// Reloader serves a certificate and key pair read from two files; Reload
// reads them again. Handshakes read the current pair through
// GetCertificate, so a reload takes effect on the next handshake and
// established connections keep theirs.
type Reloader struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

// NewReloader reads the PEM certificate chain in certFile and its key in
// keyFile, and fails when they do not load or do not match.
func NewReloader(certFile, keyFile string) (*Reloader, error) {
	r := &Reloader{certFile: certFile, keyFile: keyFile}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Reload reads the files again. On failure the current pair stays in use
// and the error says why the new one was refused.
func (r *Reloader) Reload() error {
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("loading TLS certificate %s and key %s: %w", r.certFile, r.keyFile, err)
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return fmt.Errorf("parsing TLS certificate %s: %w", r.certFile, err)
		}
	}
	r.cur.Store(&c)
	return nil
}

// Leaf returns the certificate in use.
func (r *Reloader) Leaf() *x509.Certificate { return r.cur.Load().Leaf }

// GetCertificate returns the pair in use (tls.Config.GetCertificate).
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.cur.Load(), nil
}

// ServerConfig returns a TLS configuration serving the reloaded pair,
// TLS 1.2 at least.
func (r *Reloader) ServerConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.GetCertificate}
}

// Pool reads the PEM certificates of caFile into a pool; a file without
// any certificate is an error.
func Pool(caFile string) (*x509.CertPool, error) {
	raw, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("reading CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(raw) {
		return nil, fmt.Errorf("%w: %s", ErrNoCertificates, caFile)
	}
	return pool, nil
}

// Transport returns a clone of http.DefaultTransport that trusts only the
// CAs in caFile for https (TLS 1.2 at least); plain http is unchanged. An
// empty caFile gives the default transport's trust (the system's roots).
func Transport(caFile string) (*http.Transport, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caFile == "" {
		return tr, nil
	}
	pool, err := Pool(caFile)
	if err != nil {
		return nil, err
	}
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	return tr, nil
}
