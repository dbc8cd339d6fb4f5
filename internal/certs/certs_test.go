package certs_test

import (
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgeprov/provisiond/internal/certs"
	"github.com/edgeprov/provisiond/internal/certs/certstest"
)

// serve starts an https server on 127.0.0.1 with r's certificate.
func serve(t *testing.T, r *certs.Reloader) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{
		Handler:  http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }),
		ErrorLog: log.New(io.Discard, "", 0),
	}
	go hs.Serve(tls.NewListener(ln, r.ServerConfig()))
	t.Cleanup(func() { hs.Close() })
	return "https://" + ln.Addr().String()
}

// serial connects to url through tr and returns the serial number of the
// server's certificate.
func serial(t *testing.T, tr *http.Transport, url string) (int64, error) {
	t.Helper()
	tr.DisableKeepAlives = true // a new handshake each time
	resp, err := (&http.Client{Transport: tr}).Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return resp.TLS.PeerCertificates[0].SerialNumber.Int64(), nil
}

func TestReloaderServesTheNewPairAfterReload(t *testing.T) {
	ca := certstest.NewCA(t)
	certFile, keyFile := certstest.Files(t)
	ca.Issue(t, 10, certFile, keyFile)
	r, err := certs.NewReloader(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, r)
	tr, err := certs.Transport(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := serial(t, tr, url); err != nil || got != 10 {
		t.Fatalf("serial %d, %v; want 10", got, err)
	}
	ca.Issue(t, 11, certFile, keyFile)
	if got, _ := serial(t, tr, url); got != 10 {
		t.Fatalf("serial %d before the reload, want 10", got)
	}
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if got, err := serial(t, tr, url); err != nil || got != 11 || r.Leaf().SerialNumber.Int64() != 11 {
		t.Fatalf("serial %d, %v after the reload; want 11", got, err)
	}
	// A broken pair is refused and the served one stays.
	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.Reload(); err == nil {
		t.Fatal("a broken key reloaded")
	}
	if got, err := serial(t, tr, url); err != nil || got != 11 {
		t.Fatalf("serial %d, %v after a failed reload; want 11", got, err)
	}
}

func TestTransportTrustsOnlyTheCAFile(t *testing.T) {
	ca := certstest.NewCA(t)
	certFile, keyFile := certstest.Files(t)
	ca.Issue(t, 5, certFile, keyFile)
	r, err := certs.NewReloader(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, r)
	system, err := certs.Transport("")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := serial(t, system, url); err == nil {
		t.Fatal("the system roots trusted the test CA")
	}
	other, err := certs.Transport(certstest.NewCA(t).File)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := serial(t, other, url); err == nil {
		t.Fatal("another CA's file trusted the server")
	}
	empty := filepath.Join(t.TempDir(), "empty.pem")
	os.WriteFile(empty, []byte("no certificates here\n"), 0o600)
	if _, err := certs.Transport(empty); !errors.Is(err, certs.ErrNoCertificates) {
		t.Fatalf("a CA file without certificates: %v", err)
	}
	if _, err := certs.Transport(filepath.Join(t.TempDir(), "missing.pem")); err == nil {
		t.Fatal("a missing CA file was accepted")
	}
	if _, err := certs.NewReloader(certFile, filepath.Join(t.TempDir(), "missing.pem")); err == nil {
		t.Fatal("a missing key was accepted")
	}
}
