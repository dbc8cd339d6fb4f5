package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/internal/certs"
	"github.com/edgeprov/provisiond/internal/certs/certstest"
	"github.com/edgeprov/provisiond/provision"
)

var built struct {
	once sync.Once
	path string
	err  error
	out  []byte
}

// binary builds explorerd once into a temporary directory.
func binary(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "explorerd-test-")
		if err != nil {
			built.err = err
			return
		}
		built.path = filepath.Join(dir, "explorerd")
		built.out, built.err = exec.Command("go", "build", "-o", built.path, ".").CombinedOutput()
	})
	if built.err != nil {
		t.Fatalf("building explorerd: %v\n%s", built.err, built.out)
	}
	return built.path
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// eventually retries fn every 20 ms until it succeeds or 30 s pass.
func eventually(t *testing.T, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// servedSerial makes a new TLS connection to addr trusting only pool and
// returns the serial number of the certificate served.
func servedSerial(addr string, caFile string) (int64, error) {
	pool, err := certs.Pool(caFile)
	if err != nil {
		return 0, err
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{RootCAs: pool})
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64(), nil
}

// TestTLSReloadOnSIGHUP runs the explorerd binary over TLS with a
// certificate of a CA made here, registers a node through a client that
// trusts only that CA, replaces the certificate, sends SIGHUP and checks
// that new connections get the new one, that a broken pair is refused
// while the served one stays, and that /metrics counted the requests.
func TestTLSReloadOnSIGHUP(t *testing.T) {
	ctx := t.Context()
	ca := certstest.NewCA(t)
	certFile, keyFile := certstest.Files(t)
	ca.Issue(t, 1001, certFile, keyFile)
	addr, metricsAddr := freeAddr(t), freeAddr(t)
	var logs bytes.Buffer
	var logMu sync.Mutex
	logText := func() string { logMu.Lock(); defer logMu.Unlock(); return logs.String() }
	cmd := exec.Command(binary(t), "--listen", addr, "--data-dir", t.TempDir(), "--log-format", "json",
		"--tls-cert", certFile, "--tls-key", keyFile, "--metrics-listen", metricsAddr)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := pr.Read(b)
			logMu.Lock()
			logs.Write(b[:n])
			logMu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); pw.Close() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-exited
		}
	})

	eventually(t, "explorerd serving TLS", func() error { _, err := servedSerial(addr, ca.File); return err })
	if got, _ := servedSerial(addr, ca.File); got != 1001 {
		t.Fatalf("served serial %d, want 1001", got)
	}
	// A node and a user that trust only the CA file talk to it.
	tr, err := certs.Transport(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	opts := explorertest.ClientOptions()
	opts.Transport = tr
	node := explorer.NewClient("https://"+addr, explorertest.NewKey(t), opts)
	if err := node.Register(ctx); err != nil {
		t.Fatal(err)
	}
	if err := node.ReportCapacity(ctx, provision.Capacity{Total: provision.Units{CRU: 4, MRU: 8}}, "v-test"); err != nil {
		t.Fatal(err)
	}
	user := explorer.NewUserClient("https://"+addr, explorertest.NewKey(t), opts)
	nodes, err := user.ListNodes(ctx, explorer.NodeFilter{})
	if err != nil || len(nodes.Nodes) != 1 || nodes.Nodes[0].Status != explorer.NodeUp || nodes.Nodes[0].Version != "v-test" {
		t.Fatalf("nodes over TLS: %+v, %v", nodes, err)
	}
	// A client with the system's roots does not trust it.
	plain := explorertest.ClientOptions()
	plain.MaxAttempts = 1
	if _, err := explorer.NewUserClient("https://"+addr, explorertest.NewKey(t), plain).ListNodes(ctx, explorer.NodeFilter{}); err == nil {
		t.Fatal("a client without the CA file trusted the test CA")
	}

	ca.Issue(t, 1002, certFile, keyFile)
	if got, _ := servedSerial(addr, ca.File); got != 1001 {
		t.Fatalf("served serial %d before SIGHUP, want 1001", got)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new certificate served after SIGHUP", func() error {
		if got, err := servedSerial(addr, ca.File); err != nil || got != 1002 {
			return errorf("serial %d, %v", got, err)
		}
		return nil
	})
	if !strings.Contains(logText(), `"message":"TLS certificate reloaded"`) {
		t.Fatalf("no reload in the log:\n%s", logText())
	}

	// A broken key: refused, the served certificate stays.
	if err := os.WriteFile(keyFile, []byte("broken"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the refusal of a broken key logged", func() error {
		if !strings.Contains(logText(), "reloading the TLS certificate failed") {
			return errorf("not yet")
		}
		return nil
	})
	if got, err := servedSerial(addr, ca.File); err != nil || got != 1002 {
		t.Fatalf("after a broken reload: serial %d, %v; want 1002", got, err)
	}

	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`explorerd_requests_total{code="201",route="POST /api/v1/nodes"} 1`,
		`explorerd_requests_total{code="204",route="PUT /api/v1/nodes/{node}/capacity"} 1`,
		`explorerd_requests_total{code="200",route="GET /api/v1/nodes"} 1`,
		`explorerd_store_duration_seconds_count{op="nodes",outcome="ok"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("explorerd exited with %v:\n%s", err, logText())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("explorerd did not stop:\n%s", logText())
	}
}

func errorf(format string, args ...any) error {
	return fmt.Errorf(format, args...)
}
