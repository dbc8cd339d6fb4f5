package main

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/explorer/explorertest"
)

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRunServesAndStopsGracefully(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "explorer")
	addrs := make(chan net.Addr, 1)
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	cfg := &config{Listen: "127.0.0.1:0", DataDir: dir, LogFormat: "json", LogLevel: "info", ShutdownTimeout: 5 * time.Second,
		logOut: logs, onListen: func(a net.Addr) { addrs <- a }}
	go func() { done <- run(ctx, cfg) }()
	var addr net.Addr
	select {
	case addr = <-addrs:
	case err := <-done:
		t.Fatalf("run ended before listening: %v", err)
	}
	node := explorertest.NewKey(t)
	nc := explorer.NewClient("http://"+addr.String(), node, explorertest.ClientOptions())
	if err := nc.Register(t.Context()); err != nil {
		t.Fatal(err)
	}
	// A held long-poll must not delay the shutdown.
	polled := make(chan error, 1)
	go func() {
		_, _, err := nc.Poll(t.Context(), 0)
		polled <- err
	}()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop")
	}
	<-polled
	if !strings.Contains(logs.String(), `"message":"explorerd stopped"`) {
		t.Fatalf("logs do not show a clean stop:\n%s", logs)
	}
	// The database is closed: a second run on it starts.
	ctx2, cancel2 := context.WithCancel(t.Context())
	cfg.onListen = func(net.Addr) { cancel2() }
	if err := run(ctx2, cfg); err != nil {
		t.Fatalf("second run on the same data dir: %v", err)
	}
}

func TestAppRefusesBadFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad-log-format", []string{"--log-format", "xml", "--data-dir", t.TempDir()}, "--log-format"},
		{"bad-log-level", []string{"--log-level", "loud", "--data-dir", t.TempDir()}, "--log-level"},
		{"stray-argument", []string{"serve"}, "unexpected argument"},
		{"bad-database-url", []string{"--database-url", "postgres://%zz", "--log-format", "json", "--log-level", "error"}, "PostgreSQL"},
		{"bad-listen", []string{"--listen", "127.0.0.1:99999", "--data-dir", t.TempDir(), "--log-format", "json", "--log-level", "error"}, "listening on"},
		{"tls-cert-alone", []string{"--tls-cert", "cert.pem", "--data-dir", t.TempDir(), "--log-format", "json"}, "go together"},
		{"tls-files-missing", []string{"--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem", "--data-dir", t.TempDir(), "--log-format", "json"}, "--tls-cert/--tls-key"},
		{"bad-metrics-listen", []string{"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:99999", "--data-dir", t.TempDir(), "--log-format", "json", "--log-level", "error"}, "metrics listener"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := newApp().RunContext(t.Context(), append([]string{"explorerd"}, tt.args...))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}
