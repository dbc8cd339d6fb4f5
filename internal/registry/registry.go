// Package registry fetches manifests and blobs by digest from OCI
// registries (the distribution API), speaking the protocol (token and
// basic auth challenges, redirects, Range) with go-containerregistry's
// transport.
//
// Every request is by digest, so any endpoint that holds the bytes will
// do: the operator's mirrors are tried first, then the registry the
// reference names. Plain HTTP is used only for hosts the operator lists
// as insecure; a registry's answers are never quoted in errors (they are
// logged), only what the node asked and the kind of refusal.
package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/rs/zerolog"

	"github.com/edgeprov/provisiond/provision"
)

// MaxManifestSize bounds a manifest or index.
const MaxManifestSize = 4 << 20

// Media types of manifests the node reads.
const (
	MediaOCIIndex        = "application/vnd.oci.image.index.v1+json"
	MediaOCIManifest     = "application/vnd.oci.image.manifest.v1+json"
	MediaDockerList      = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaDockerManifest  = "application/vnd.docker.distribution.manifest.v2+json"
	acceptManifestHeader = MediaOCIIndex + ", " + MediaOCIManifest + ", " + MediaDockerList + ", " + MediaDockerManifest
)

// Kinds of failure. Each error of this package wraps one of them.
var (
	// ErrUnreachable: no endpoint could be reached (connection refused,
	// timeout, TLS failure). Temporary.
	ErrUnreachable = errors.New("registry: unreachable")
	// ErrUnavailable: the registry answered 5xx or 429. Temporary.
	ErrUnavailable = errors.New("registry: unavailable")
	// ErrUnauthorized: the registry refused access (401, 403).
	ErrUnauthorized = errors.New("registry: access refused")
	// ErrNotFound: the registry does not have it (404).
	ErrNotFound = errors.New("registry: not found")
	// ErrMediaType: a manifest of a media type the node does not run.
	ErrMediaType = errors.New("registry: unsupported media type")
	// ErrDigestMismatch: the bytes served are not those of the digest.
	ErrDigestMismatch = errors.New("registry: digest mismatch")
	// ErrTooLarge: a manifest larger than MaxManifestSize.
	ErrTooLarge = errors.New("registry: manifest too large")
	// ErrPlainHTTP: an attempt to speak plain HTTP to a host not listed
	// as insecure.
	ErrPlainHTTP = errors.New("registry: plain HTTP refused")
)

// Temporary reports whether err may go away by itself (the registry is
// down or overloaded), as opposed to a refusal that will come again.
func Temporary(err error) bool {
	return errors.Is(err, ErrUnreachable) || errors.Is(err, ErrUnavailable)
}

// Options configures a Client.
type Options struct {
	// Transport carries the requests. Default a clone of
	// http.DefaultTransport without a proxy.
	Transport http.RoundTripper
	// Insecure lists the HOST[:PORT]s spoken to over plain HTTP
	// (--insecure-registries). Default none: HTTPS only.
	Insecure []string
	// Mirrors lists the HOST[:PORT]s asked first for every repository,
	// in order (--registry-mirrors). Default none.
	Mirrors []string
	// Auth holds the credentials of private registries and mirrors
	// (--registry-auth). Default nil: every registry is asked
	// anonymously.
	Auth *Auth
	// Log receives what registries answered. Default zerolog.Nop().
	Log zerolog.Logger
}

// Client fetches from registries. It is safe for concurrent use.
type Client struct {
	base     http.RoundTripper
	insecure map[string]bool
	mirrors  []string
	auth     *Auth
	log      zerolog.Logger
}

// New returns a Client.
func New(opts Options) *Client {
	c := &Client{insecure: map[string]bool{}, auth: opts.Auth, log: opts.Log.With().Str("component", "registry").Logger()}
	for _, h := range opts.Insecure {
		if h = strings.TrimSpace(h); h != "" {
			c.insecure[h] = true
		}
	}
	for _, h := range opts.Mirrors {
		if h = strings.TrimSpace(h); h != "" {
			c.mirrors = append(c.mirrors, h)
		}
	}
	base := opts.Transport
	if base == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.Proxy = nil
		base = tr
	}
	c.base = httpGuard{inner: base, insecure: c.insecure}
	return c
}

// httpGuard refuses plain HTTP to hosts not listed as insecure, whatever
// go-containerregistry would fall back to (it tries HTTP for loopback and
// private addresses).
type httpGuard struct {
	inner    http.RoundTripper
	insecure map[string]bool
}

func (g httpGuard) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme == "http" && !g.insecure[r.URL.Host] {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, fmt.Errorf("%w: %s is not an insecure registry", ErrPlainHTTP, r.URL.Host)
	}
	return g.inner.RoundTrip(r)
}

// Repo is one repository as seen through the mirrors and its registry,
// for one pull. Endpoints are reached lazily and one that cannot be
// reached is skipped for the rest of the pull.
type Repo struct {
	c   *Client
	ref provision.ImageRef

	mu        sync.Mutex
	endpoints []*endpoint
}

type endpoint struct {
	host string
	rt   http.RoundTripper // nil until reached
	dead error             // why it is skipped
}

// Repo returns the repository of ref.
func (c *Client) Repo(ref provision.ImageRef) *Repo {
	r := &Repo{c: c, ref: ref}
	for _, m := range c.mirrors {
		if m != ref.Registry {
			r.endpoints = append(r.endpoints, &endpoint{host: m})
		}
	}
	r.endpoints = append(r.endpoints, &endpoint{host: ref.Registry})
	return r
}

// transport returns e's authenticated transport, pinging it the first
// time.
func (r *Repo) transport(ctx context.Context, e *endpoint) (http.RoundTripper, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e.dead != nil {
		return nil, e.dead
	}
	if e.rt != nil {
		return e.rt, nil
	}
	var opts []name.Option
	if r.c.insecure[e.host] {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(e.host, opts...)
	if err != nil {
		e.dead = fmt.Errorf("%w: %s: not a registry host", ErrUnreachable, e.host)
		return nil, e.dead
	}
	repo := reg.Repo(r.ref.Repository)
	rt, err := transport.NewWithContext(ctx, reg, r.c.auth.For(e.host), r.c.base, []string{repo.Scope(transport.PullScope)})
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		r.c.log.Warn().Err(err).Str("registry", e.host).Msg("registry handshake failed")
		e.dead = classify(e.host, "the handshake", err, 0)
		return nil, e.dead
	}
	e.rt = rt
	return rt, nil
}

// do sends GET path to each endpoint in turn, with header h, until one
// answers one of the codes; it returns that answer or the registry's own
// error (a mirror's failures are logged).
func (r *Repo) do(ctx context.Context, what, path string, h http.Header, codes ...int) (*http.Response, error) {
	var last error
	for i, e := range r.endpoints {
		resp, err := r.get(ctx, e, what, path, h, codes)
		if err == nil {
			return resp, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if i < len(r.endpoints)-1 {
			r.c.log.Debug().Err(err).Str("mirror", e.host).Str("what", what).Msg("mirror failed, trying the next endpoint")
		}
		last = err
	}
	return nil, last
}

func (r *Repo) get(ctx context.Context, e *endpoint, what, path string, h http.Header, codes []int) (*http.Response, error) {
	rt, err := r.transport(ctx, e)
	if err != nil {
		return nil, err
	}
	scheme := "https"
	if r.c.insecure[e.host] {
		scheme = "http"
	}
	u := url.URL{Scheme: scheme, Host: e.host, Path: "/v2/" + r.ref.Repository + path}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	cl := &http.Client{Transport: rt, CheckRedirect: checkRedirect}
	resp, err := cl.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		r.c.log.Warn().Err(err).Str("registry", e.host).Str("what", what).Msg("registry request failed")
		return nil, classify(e.host, what, err, 0)
	}
	for _, c := range codes {
		if resp.StatusCode == c {
			return resp, nil
		}
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	r.c.log.Warn().Int("status", resp.StatusCode).Str("registry", e.host).Str("what", what).Bytes("body", body).Msg("registry refused")
	return nil, classify(e.host, what, nil, resp.StatusCode)
}

// maxRedirects bounds the redirects a request follows (a registry sends
// blobs to its storage).
const maxRedirects = 5

func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("more than %d redirects", maxRedirects)
	}
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		return fmt.Errorf("redirect to a %q URL", req.URL.Scheme)
	}
	return nil
}

// classify turns a failure at host into one of the package's errors: the
// one place that decides what is temporary. It never quotes the answer.
func classify(host, what string, err error, status int) error {
	var terr *transport.Error
	if errors.As(err, &terr) {
		status = terr.StatusCode
	}
	switch {
	case errors.Is(err, ErrPlainHTTP):
		return fmt.Errorf("%w: %s: %s is not listed in --insecure-registries and does not speak HTTPS", ErrPlainHTTP, what, host)
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return fmt.Errorf("%w: %s: registry %s refused access (%d)", ErrUnauthorized, what, host, status)
	case status == http.StatusNotFound:
		return fmt.Errorf("%w: %s: not found at registry %s (404)", ErrNotFound, what, host)
	case status == http.StatusTooManyRequests || status >= 500:
		return fmt.Errorf("%w: %s: registry %s answered an error (%d)", ErrUnavailable, what, host, status)
	case status != 0:
		return fmt.Errorf("%w: %s: registry %s refused the request (%d)", ErrUnauthorized, what, host, status)
	}
	return fmt.Errorf("%w: %s: registry %s could not be reached", ErrUnreachable, what, host)
}

// Manifest is a manifest or index fetched by digest.
type Manifest struct {
	// MediaType is one of the Media… constants.
	MediaType string
	// Body is its bytes, whose sha256 is the digest asked for.
	Body []byte
}

// Manifest fetches the manifest or index of digest (hex), checking its
// media type, size and digest.
func (r *Repo) Manifest(ctx context.Context, digest string) (Manifest, error) {
	what := "manifest sha256:" + digest
	h := http.Header{"Accept": {acceptManifestHeader}}
	var last error
	// A mirror that serves wrong bytes is skipped like one that is down:
	// the digest decides.
	for _, e := range r.endpoints {
		m, err := r.manifestFrom(ctx, e, what, digest, h)
		if err == nil {
			return m, nil
		}
		if ctx.Err() != nil {
			return Manifest{}, ctx.Err()
		}
		last = err
	}
	return Manifest{}, last
}

func (r *Repo) manifestFrom(ctx context.Context, e *endpoint, what, digest string, h http.Header) (Manifest, error) {
	resp, err := r.get(ctx, e, what, "/manifests/sha256:"+digest, h, []int{http.StatusOK})
	if err != nil {
		return Manifest{}, err
	}
	defer resp.Body.Close()
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch mt {
	case MediaOCIIndex, MediaOCIManifest, MediaDockerList, MediaDockerManifest:
	default:
		return Manifest{}, fmt.Errorf("%w: %s at registry %s is %q, not an OCI or Docker v2 manifest or index", ErrMediaType, what, e.host, mt)
	}
	if resp.ContentLength > MaxManifestSize {
		return Manifest{}, fmt.Errorf("%w: %s at registry %s is more than %d bytes", ErrTooLarge, what, e.host, MaxManifestSize)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxManifestSize+1))
	if err != nil {
		return Manifest{}, classify(e.host, what, err, 0)
	}
	if len(body) > MaxManifestSize {
		return Manifest{}, fmt.Errorf("%w: %s at registry %s is more than %d bytes", ErrTooLarge, what, e.host, MaxManifestSize)
	}
	sum := sha256.Sum256(body)
	if hex.EncodeToString(sum[:]) != digest {
		return Manifest{}, fmt.Errorf("%w: %s: registry %s served other bytes", ErrDigestMismatch, what, e.host)
	}
	return Manifest{MediaType: mt, Body: body}, nil
}

// Blob opens the blob of digest (hex) from offset on; resumed reports
// whether the answer starts at offset (206) rather than at 0 (200).
func (r *Repo) Blob(ctx context.Context, digest string, offset int64) (io.ReadCloser, bool, error) {
	h := http.Header{}
	if offset > 0 {
		h.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	resp, err := r.do(ctx, "blob sha256:"+digest, "/blobs/sha256:"+digest, h, http.StatusOK, http.StatusPartialContent)
	if err != nil {
		return nil, false, err
	}
	resumed := false
	if resp.StatusCode == http.StatusPartialContent {
		// Only a range that starts where asked resumes the download.
		if !strings.HasPrefix(resp.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-", offset)) {
			resp.Body.Close()
			return nil, false, fmt.Errorf("%w: blob sha256:%s: a range that does not start at %d", ErrUnavailable, digest, offset)
		}
		resumed = true
	}
	return resp.Body, resumed, nil
}
