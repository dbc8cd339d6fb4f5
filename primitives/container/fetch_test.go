package container

import (
	"archive/tar"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/edgeprov/provisiond/provision"
)

func TestPublicAddr(t *testing.T) {
	tests := []struct {
		addr   string
		public bool
	}{
		{"127.0.0.1", false}, {"127.1.2.3", false}, {"::1", false},
		{"10.1.2.3", false}, {"172.16.0.1", false}, {"192.168.1.1", false},
		{"169.254.169.254", false}, {"fe80::1", false}, {"fc00::1", false}, {"fd12::1", false},
		{"100.64.0.1", false}, {"0.0.0.0", false}, {"0.1.2.3", false}, {"::", false},
		{"224.0.0.1", false}, {"ff02::1", false}, {"::ffff:127.0.0.1", false}, {"::ffff:10.0.0.1", false},
		{"8.8.8.8", true}, {"1.1.1.1", true}, {"2001:4860:4860::8888", true}, {"100.128.0.1", true},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			if got := publicAddr(netip.MustParseAddr(tt.addr).Unmap()); got != tt.public {
				t.Errorf("publicAddr(%s) = %t, want %t", tt.addr, got, tt.public)
			}
		})
	}
}

// TestImageGuardOwnAddress refuses a public address that is the node's own.
func TestImageGuardOwnAddress(t *testing.T) {
	g := newImageGuard(nil)
	g.own = func() ([]netip.Addr, error) { return []netip.Addr{netip.MustParseAddr("203.0.113.7")}, nil }
	if err := g.control("tcp4", "203.0.113.7:80", nil); !errors.Is(err, errAddressRefused) {
		t.Errorf("control(own address) = %v, want refused", err)
	}
	if err := g.control("tcp4", "203.0.113.8:80", nil); err != nil {
		t.Errorf("control(another public address) = %v, want nil", err)
	}
	g.own = func() ([]netip.Addr, error) { return nil, errors.New("no interfaces") }
	if err := g.control("tcp4", "203.0.113.8:80", nil); !errors.Is(err, errAddressRefused) {
		t.Errorf("control when the node's addresses are unknown = %v, want refused", err)
	}
}

// TestImageURLRefused proves that an image URL cannot make the node fetch
// from a loopback address unless its host is allowed, also through a
// redirect from an allowed host, and that errors echo nothing of what a
// server answered.
func TestImageURLRefused(t *testing.T) {
	img := tarball(t, false, entry{typ: tar.TypeReg, name: "bin/x", body: "binary", mode: 0o755})
	digest := digestOf(img)
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		switch r.URL.Path {
		case "/img.tar":
			w.Write(img)
		case "/teapot":
			w.WriteHeader(http.StatusTeapot)
			w.Write([]byte("internal-secret-body"))
		case "/to-localhost":
			// 127.0.0.1 is allowed, localhost (the same server) is not.
			http.Redirect(w, r, strings.Replace(srvURL(r), "127.0.0.1", "localhost", 1)+"/img.tar", http.StatusFound)
		}
	}))
	t.Cleanup(srv.Close)
	// A server that answers bytes that are not HTTP: net/http's error
	// would quote them.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("SECRET-BANNER not http\r\n\r\n"))
			c.Close()
		}
	}()

	tests := []struct {
		name      string
		hosts     []string
		url       string
		want      error // nil: unpacked
		temporary bool
		hits      int64 // requests the test server sees
	}{
		{"loopback-refused", nil, srv.URL + "/img.tar", ErrImageRefused, false, 0},
		{"localhost-refused", nil, strings.Replace(srv.URL, "127.0.0.1", "localhost", 1) + "/img.tar", ErrImageRefused, false, 0},
		{"other-host-allowed-only", []string{"example.com"}, srv.URL + "/img.tar", ErrImageRefused, false, 0},
		{"allowed", []string{"127.0.0.1"}, srv.URL + "/img.tar", nil, false, 1},
		{"redirect-to-refused", []string{"127.0.0.1"}, srv.URL + "/to-localhost", ErrImageRefused, false, 1},
		{"status-not-echoed", []string{"127.0.0.1"}, srv.URL + "/teapot", ErrImageNotFound, false, 1},
		{"garbage-not-echoed", []string{"127.0.0.1"}, "http://" + ln.Addr().String() + "/img.tar", nil, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hits.Store(0)
			m := New(Options{DataDir: t.TempDir(), ImageHosts: tt.hosts})
			_, err := m.ensureImage(t.Context(), tt.url, digest)
			switch {
			case tt.temporary:
				if err == nil || !provision.IsTemporary(err) {
					t.Fatalf("ensureImage = %v, want a temporary error", err)
				}
			case tt.want != nil:
				if !errors.Is(err, tt.want) || provision.IsTemporary(err) {
					t.Fatalf("ensureImage = %v, want permanent %v", err, tt.want)
				}
			default:
				if err != nil {
					t.Fatalf("ensureImage = %v", err)
				}
			}
			if err != nil {
				msg := err.Error()
				if !strings.Contains(msg, "refused") {
					t.Errorf("error %q does not say refused", msg)
				}
				for _, leak := range []string{"418", "teapot", "Teapot", "secret", "SECRET", "127.0.0.1:"} {
					if strings.Contains(strings.ReplaceAll(msg, tt.url, ""), leak) {
						t.Errorf("error %q echoes %q", msg, leak)
					}
				}
			}
			if got := hits.Load(); got != tt.hits {
				t.Errorf("the server saw %d requests, want %d", got, tt.hits)
			}
		})
	}
}

func srvURL(r *http.Request) string { return "http://" + r.Host }
