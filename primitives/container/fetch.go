package container

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/edgeprov/provisiond/provision"
)

// maxRedirects bounds the redirects an image download follows.
const maxRedirects = 5

// errAddressRefused is what the dialer's Control returns for an address an
// image may not be fetched from; open turns it into ErrImageRefused.
var errAddressRefused = errors.New("address refused")

// sharedSpace is 100.64.0.0/10 (RFC 6598, carrier-grade NAT): not public.
var sharedSpace = netip.MustParsePrefix("100.64.0.0/10")

// imageGuard dials image servers, refusing, at dial time (so after DNS and
// at every redirect), any address that is loopback, link-local, private,
// shared, unspecified, multicast or one of the node's own, unless the
// URL's host is in allow.
type imageGuard struct {
	allow map[string]bool // lower-case host names and IP literals
	// own returns the node's addresses; default the interfaces' addresses.
	own func() ([]netip.Addr, error)
}

func newImageGuard(hosts []string) *imageGuard {
	g := &imageGuard{allow: map[string]bool{}, own: interfaceAddrs}
	for _, h := range hosts {
		h = strings.ToLower(strings.Trim(strings.TrimSpace(h), "[]"))
		if h != "" {
			g.allow[h] = true
		}
	}
	return g
}

// client returns an http.Client that dials through g, ignores the
// environment's proxy (a proxy would dial for it) and follows at most
// maxRedirects http(s) redirects.
func (g *imageGuard) client() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.DialContext = g.dialContext
	tr.ResponseHeaderTimeout = time.Minute
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= maxRedirects {
				return fmt.Errorf("more than %d redirects", maxRedirects)
			}
			if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
				return fmt.Errorf("redirect to a %q URL", req.URL.Scheme)
			}
			return nil
		},
	}
}

func (g *imageGuard) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	if !g.allow[strings.ToLower(host)] {
		d.Control = g.control
	}
	return d.DialContext(ctx, network, addr)
}

// control checks the resolved address a connection is about to be made to.
func (g *imageGuard) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %s is not an address", errAddressRefused, address)
	}
	ip := ap.Addr().Unmap()
	if !publicAddr(ip) {
		return errAddressRefused
	}
	own, err := g.own()
	if err != nil {
		return fmt.Errorf("%w: listing the node's addresses: %w", errAddressRefused, err)
	}
	for _, a := range own {
		if a.Unmap() == ip {
			return errAddressRefused
		}
	}
	return nil
}

// publicAddr reports whether ip may be fetched from without an allow-list
// entry.
func publicAddr(ip netip.Addr) bool {
	return ip.IsValid() && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() && !ip.IsLinkLocalMulticast() &&
		!ip.IsInterfaceLocalMulticast() && !ip.IsMulticast() && !ip.IsPrivate() && !ip.IsUnspecified() &&
		!sharedSpace.Contains(ip) && !(ip.Is4() && ip.As4()[0] == 0)
}

// interfaceAddrs returns the addresses of the node's interfaces.
func interfaceAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr())
		}
	}
	return out, nil
}

// download starts the download of the http(s) image src. Its errors name
// src and say what the node did, never what came back: not the server's
// status, not bytes of its answer (a transport error can quote them), so
// an image URL cannot be used to read what a server says. Details go to
// the node's log.
func (m *Manager) download(ctx context.Context, src string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
	if err != nil {
		return nil, provision.Permanentf("%w: %s: not a valid URL", ErrImageNotFound, src)
	}
	resp, err := m.client.Do(req)
	if err != nil {
		if errors.Is(err, errAddressRefused) {
			return nil, provision.Permanentf("%w: %s: refused: its host resolves to a loopback, link-local, private or the node's own address (the operator may allow the host with --image-hosts)", ErrImageRefused, src)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		m.log.Warn().Err(err).Str("image", src).Msg("image download failed")
		return nil, provision.Temporary(fmt.Errorf("downloading image %s: refused: the connection failed", src))
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		m.log.Warn().Int("status", resp.StatusCode).Str("image", src).Msg("image server answered an error")
		if resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests {
			return nil, provision.Permanentf("%w: %s: refused by the server", ErrImageNotFound, src)
		}
		return nil, provision.Temporary(fmt.Errorf("downloading image %s: refused by the server for now", src))
	}
	return resp, nil
}
