package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/internal/certs"
	"github.com/edgeprov/provisiond/internal/certs/certstest"
	"github.com/edgeprov/provisiond/internal/version"
)

// tlsExplorer serves an explorer over TLS on 127.0.0.1 with a certificate
// of ca, until the test ends; it returns its https URL.
func tlsExplorer(t *testing.T, ca *certstest.CA) string {
	t.Helper()
	certFile, keyFile := certstest.Files(t)
	ca.Issue(t, 7, certFile, keyFile)
	r, err := certs.NewReloader(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return explorertest.NewTLS(t, r.ServerConfig()).URL()
}

// TestExplorerCA runs the daemon against an https explorer whose
// certificate a CA made here signed: with --explorer-ca it registers and
// reports its capacity and version; without, it refuses the certificate
// and keeps retrying.
func TestExplorerCA(t *testing.T) {
	ca := certstest.NewCA(t)
	url := tlsExplorer(t, ca)
	startDaemon(t, url, nil, "--explorer-ca", ca.File)
	opts := explorertest.ClientOptions()
	tr, err := certs.Transport(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	opts.Transport = tr
	user := explorer.NewUserClient(url, explorertest.NewKey(t), opts)
	deadline := time.Now().Add(60 * time.Second)
	for {
		reply, err := user.ListNodes(t.Context(), explorer.NodeFilter{})
		if err == nil && len(reply.Nodes) == 1 && reply.Nodes[0].Status == explorer.NodeUp {
			n := reply.Nodes[0]
			if n.Version != version.String() || n.Units.CRU.Total < 1 {
				t.Fatalf("node as the explorer lists it: %+v; want version %q and its cores", n, version.String())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the node did not register over TLS within a minute: %+v, %v", reply, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	other := tlsExplorer(t, ca)
	logs := startDaemon(t, other, nil, "--explorer-ca", certstest.NewCA(t).File).logs
	deadline = time.Now().Add(60 * time.Second)
	for !strings.Contains(logs.String(), "registering with the explorer failed") {
		if time.Now().After(deadline) {
			t.Fatalf("no failed registration logged:\n%s", logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "certificate") {
		t.Fatalf("the failure does not name the certificate:\n%s", logs)
	}
}

func TestExplorerCAFileRefused(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(empty, []byte("nothing\n"), 0o600)
	dir := t.TempDir()
	_, stderr, code := runEnv(t, nil, "run", "--config", os.DevNull, "--data-dir", filepath.Join(dir, "data"),
		"--socket", filepath.Join(dir, "admin.sock"), "--explorer", "https://127.0.0.1:1", "--explorer-ca", empty, "--metrics-listen", "")
	if code == 0 || !strings.Contains(stderr, "--explorer-ca") {
		t.Fatalf("exit %d, stderr %q; want a refusal naming --explorer-ca", code, stderr)
	}
}
