package provision

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
)

// Limits of an image reference.
const (
	// MaxImageRefLen bounds the length of a registry image reference.
	MaxImageRefLen = 512
	// maxRepositoryLen bounds a repository path (the distribution spec's
	// limit).
	maxRepositoryLen = 255
)

var (
	// repoComponentRe is one component of a repository path, as the
	// distribution spec's grammar has it.
	repoComponentRe = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*$`)
	// hostLabelRe is one label of a registry's host name.
	hostLabelRe = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$`)
)

// ImageRef is a container image in an OCI registry, pinned by the digest
// of its manifest or index: REGISTRY/REPOSITORY@sha256:HEX. A node never
// resolves a tag: what the user signs is what runs, from whichever mirror
// or offline copy holds those bytes.
type ImageRef struct {
	// Registry is the registry's host and optional port, as written.
	Registry string
	// Repository is the repository path, e.g. "library/busybox".
	Repository string
	// Digest is the manifest's or index's sha256, lowercase hex without
	// the "sha256:" prefix.
	Digest string
}

// String returns the reference in the form ParseImageRef reads.
func (r ImageRef) String() string {
	return r.Registry + "/" + r.Repository + "@sha256:" + r.Digest
}

// IsImageRef tells whether a container image is a registry reference:
// neither an http(s) URL nor a path on the node. It says nothing of its
// validity; ParseImageRef does.
func IsImageRef(image string) bool {
	return !IsImageURL(image) && !strings.HasPrefix(image, "/")
}

// ParseImageRef parses REGISTRY/REPOSITORY@sha256:HEX. The registry is a
// host name with a dot, "localhost", an IPv4 address or a bracketed IPv6
// address, with an optional port: it is never implied (no default
// registry), so the user signs where the image comes from. A tag is
// refused: the digest alone names the image.
func ParseImageRef(s string) (ImageRef, error) {
	if len(s) > MaxImageRefLen {
		return ImageRef{}, fmt.Errorf("%w: image reference longer than %d bytes", ErrBadName, MaxImageRefLen)
	}
	name, dg, ok := strings.Cut(s, "@")
	if !ok {
		return ImageRef{}, fmt.Errorf("%w: image reference %q is not pinned by digest (REGISTRY/REPOSITORY@sha256:DIGEST)", ErrBadName, s)
	}
	hex, ok := strings.CutPrefix(dg, "sha256:")
	if !ok || !isHex(hex, 64) {
		return ImageRef{}, fmt.Errorf("%w: image reference %q: the digest is not sha256: and 64 lowercase hex digits", ErrBadName, s)
	}
	reg, repo, ok := strings.Cut(name, "/")
	if !ok {
		return ImageRef{}, fmt.Errorf("%w: image reference %q names no registry (REGISTRY/REPOSITORY@sha256:DIGEST)", ErrBadName, s)
	}
	if err := checkRegistry(reg); err != nil {
		return ImageRef{}, fmt.Errorf("%w: image reference %q: %w", ErrBadName, s, err)
	}
	if len(repo) > maxRepositoryLen {
		return ImageRef{}, fmt.Errorf("%w: image reference %q: repository longer than %d bytes", ErrBadName, s, maxRepositoryLen)
	}
	for c := range strings.SplitSeq(repo, "/") {
		if !repoComponentRe.MatchString(c) {
			return ImageRef{}, fmt.Errorf("%w: image reference %q: repository component %q is not lowercase letters, digits and separators (a tag is not allowed)", ErrBadName, s, c)
		}
	}
	return ImageRef{Registry: reg, Repository: repo, Digest: hex}, nil
}

// checkRegistry checks a registry's HOST[:PORT].
func checkRegistry(reg string) error {
	host, port := reg, ""
	if strings.HasPrefix(reg, "[") {
		end := strings.Index(reg, "]")
		if end < 0 {
			return fmt.Errorf("registry %q: unclosed bracket", reg)
		}
		host, port = reg[1:end], reg[end+1:]
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() || a.Zone() != "" {
			return fmt.Errorf("registry %q: not an IPv6 address in brackets", reg)
		}
		if port != "" {
			p, ok := strings.CutPrefix(port, ":")
			if !ok {
				return fmt.Errorf("registry %q: junk after the address", reg)
			}
			port = p
		}
	} else {
		if h, p, ok := strings.Cut(reg, ":"); ok {
			host, port = h, p
			if port == "" {
				return fmt.Errorf("registry %q: empty port", reg)
			}
		}
		if host != "localhost" && !strings.Contains(host, ".") && port == "" {
			return fmt.Errorf("registry %q: not a host with a dot, localhost or HOST:PORT", reg)
		}
		if len(host) > 253 {
			return fmt.Errorf("registry %q: host name too long", reg)
		}
		for l := range strings.SplitSeq(host, ".") {
			if len(l) > 63 || !hostLabelRe.MatchString(l) {
				return fmt.Errorf("registry %q: %q is not a host name label", reg, l)
			}
		}
	}
	if port != "" {
		if len(port) > 5 || !isDigits(port) || port[0] == '0' {
			return fmt.Errorf("registry %q: port %q is not a number from 1 to 65535", reg, port)
		}
		n := 0
		for _, c := range port {
			n = n*10 + int(c-'0')
		}
		if n > 65535 {
			return fmt.Errorf("registry %q: port %q is not a number from 1 to 65535", reg, port)
		}
	}
	return nil
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}
