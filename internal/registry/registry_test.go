package registry_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/internal/registry"
	"github.com/edgeprov/provisiond/provision"
)

// fake is a registry that answers every manifest with status, mediaType
// and body, and blobs with body (honouring a Range).
func fake(t *testing.T, status int, mediaType string, body []byte) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
			w.WriteHeader(http.StatusOK)
		case strings.Contains(r.URL.Path, "/manifests/"):
			w.Header().Set("Content-Type", mediaType)
			w.WriteHeader(status)
			w.Write(body)
		case strings.Contains(r.URL.Path, "/blobs/") && status != http.StatusOK:
			w.WriteHeader(status)
		case strings.Contains(r.URL.Path, "/blobs/"):
			http.ServeContent(w, r, "blob", fixedTime, strings.NewReader(string(body)))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestManifestErrors(t *testing.T) {
	body := []byte(`{"schemaVersion":2}`)
	good := sum(body)
	tests := []struct {
		name      string
		status    int
		mediaType string
		digest    string
		err       error
	}{
		{"ok", 200, registry.MediaOCIManifest, good, nil},
		{"unauthorized", 401, registry.MediaOCIManifest, good, registry.ErrUnauthorized},
		{"forbidden", 403, registry.MediaOCIManifest, good, registry.ErrUnauthorized},
		{"not-found", 404, registry.MediaOCIManifest, good, registry.ErrNotFound},
		{"server-error", 503, registry.MediaOCIManifest, good, registry.ErrUnavailable},
		{"too-many", 429, registry.MediaOCIManifest, good, registry.ErrUnavailable},
		{"schema1", 200, "application/vnd.docker.distribution.manifest.v1+prettyjws", good, registry.ErrMediaType},
		{"other-bytes", 200, registry.MediaOCIManifest, strings.Repeat("a", 64), registry.ErrDigestMismatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			host := fake(t, tc.status, tc.mediaType, body)
			c := registry.New(registry.Options{Insecure: []string{host}})
			m, err := c.Repo(provision.ImageRef{Registry: host, Repository: "a/b", Digest: tc.digest}).Manifest(t.Context(), tc.digest)
			if !errors.Is(err, tc.err) {
				t.Fatalf("Manifest = %v, want %v", err, tc.err)
			}
			if err == nil && (m.MediaType != tc.mediaType || string(m.Body) != string(body)) {
				t.Fatalf("Manifest = %+v", m)
			}
			if err != nil && strings.Contains(err.Error(), "schemaVersion") {
				t.Fatalf("the error quotes the registry's answer: %v", err)
			}
		})
	}
}

func TestPlainHTTPOnlyWhenListed(t *testing.T) {
	body := []byte(`{}`)
	host := fake(t, 200, registry.MediaOCIManifest, body)
	c := registry.New(registry.Options{})
	_, err := c.Repo(provision.ImageRef{Registry: host, Repository: "a", Digest: sum(body)}).Manifest(t.Context(), sum(body))
	if !errors.Is(err, registry.ErrPlainHTTP) {
		t.Fatalf("Manifest over plain HTTP to an unlisted registry = %v, want ErrPlainHTTP", err)
	}
}

func TestMirrorsFirstThenRegistry(t *testing.T) {
	body := []byte(`{"schemaVersion":2,"x":1}`)
	d := sum(body)
	broken := fake(t, 500, registry.MediaOCIManifest, nil)
	lying := fake(t, 200, registry.MediaOCIManifest, []byte(`{"other":true}`))
	origin := fake(t, 200, registry.MediaOCIManifest, body)
	c := registry.New(registry.Options{Insecure: []string{broken, lying, origin}, Mirrors: []string{broken, lying}})
	repo := c.Repo(provision.ImageRef{Registry: origin, Repository: "a", Digest: d})
	m, err := repo.Manifest(t.Context(), d)
	if err != nil || string(m.Body) != string(body) {
		t.Fatalf("Manifest = %q, %v; want the origin's after two bad mirrors", m.Body, err)
	}
	// A blob from an offset: 206 and the rest, past the broken mirror.
	// (Which blob bytes are right is the content store's to check.)
	c = registry.New(registry.Options{Insecure: []string{broken, origin}, Mirrors: []string{broken}})
	repo = c.Repo(provision.ImageRef{Registry: origin, Repository: "a", Digest: d})
	rc, resumed, err := repo.Blob(t.Context(), d, 5)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	rest, _ := io.ReadAll(rc)
	if !resumed || string(rest) != string(body[5:]) {
		t.Fatalf("Blob from 5 = %q (resumed %v)", rest, resumed)
	}
}

func TestUnreachableIsTemporary(t *testing.T) {
	c := registry.New(registry.Options{Insecure: []string{"127.0.0.1:1"}})
	_, err := c.Repo(provision.ImageRef{Registry: "127.0.0.1:1", Repository: "a", Digest: strings.Repeat("a", 64)}).Manifest(t.Context(), strings.Repeat("a", 64))
	if !errors.Is(err, registry.ErrUnreachable) || !registry.Temporary(err) {
		t.Fatalf("Manifest from a closed port = %v, want a temporary ErrUnreachable", err)
	}
}

var fixedTime = time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
