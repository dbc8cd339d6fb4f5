package provision_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/edgeprov/provisiond/provision"
)

func TestParseImageRef(t *testing.T) {
	d := strings.Repeat("ab", 32)
	tests := []struct {
		name string
		in   string
		want provision.ImageRef // zero: refused
	}{
		{"host-port", "127.0.0.1:5000/busybox@sha256:" + d, provision.ImageRef{Registry: "127.0.0.1:5000", Repository: "busybox", Digest: d}},
		{"dotted-host", "ghcr.io/org/app-1/x.y@sha256:" + d, provision.ImageRef{Registry: "ghcr.io", Repository: "org/app-1/x.y", Digest: d}},
		{"localhost", "localhost/a__b@sha256:" + d, provision.ImageRef{Registry: "localhost", Repository: "a__b", Digest: d}},
		{"ipv6", "[::1]:5000/a@sha256:" + d, provision.ImageRef{Registry: "[::1]:5000", Repository: "a", Digest: d}},
		{"no-registry", "library/busybox@sha256:" + d, provision.ImageRef{}},
		{"bare-name", "busybox@sha256:" + d, provision.ImageRef{}},
		{"tag", "ghcr.io/app:1.0", provision.ImageRef{}},
		{"tag-and-digest", "ghcr.io/app:1.0@sha256:" + d, provision.ImageRef{}},
		{"upper-repo", "ghcr.io/App@sha256:" + d, provision.ImageRef{}},
		{"short-digest", "ghcr.io/app@sha256:abc", provision.ImageRef{}},
		{"upper-digest", "ghcr.io/app@sha256:" + strings.ToUpper(d), provision.ImageRef{}},
		{"sha512", "ghcr.io/app@sha512:" + d + d, provision.ImageRef{}},
		{"port-zero", "h:0/app@sha256:" + d, provision.ImageRef{}},
		{"port-big", "h:65536/app@sha256:" + d, provision.ImageRef{}},
		{"empty-port", "h.io:/app@sha256:" + d, provision.ImageRef{}},
		{"empty-component", "h.io/a//b@sha256:" + d, provision.ImageRef{}},
		{"dotdot", "h.io/../b@sha256:" + d, provision.ImageRef{}},
		{"ipv6-zone", "[fe80::1%eth0]:5000/a@sha256:" + d, provision.ImageRef{}},
		{"too-long", "h.io/" + strings.Repeat("a", 300) + "@sha256:" + d, provision.ImageRef{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := provision.ParseImageRef(tc.in)
			if tc.want == (provision.ImageRef{}) {
				if err == nil || !errors.Is(err, provision.ErrBadName) {
					t.Fatalf("ParseImageRef(%q) = %+v, %v; want ErrBadName", tc.in, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseImageRef(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
			if got.String() != tc.in {
				t.Fatalf("String() = %q, want %q", got.String(), tc.in)
			}
		})
	}
}

// FuzzParseImageRef checks that ParseImageRef never panics, that what it
// accepts reads back from its String, and that a container with it
// validates.
func FuzzParseImageRef(f *testing.F) {
	d := strings.Repeat("ab", 32)
	for _, s := range []string{"127.0.0.1:5000/busybox@sha256:" + d, "ghcr.io/a/b@sha256:" + d, "[::1]:1/a@sha256:" + d, "x/y:z", "@", "a/@sha256:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := provision.ParseImageRef(s)
		if err != nil {
			return
		}
		if r.String() != s {
			t.Fatalf("ParseImageRef(%q).String() = %q", s, r.String())
		}
		again, err := provision.ParseImageRef(r.String())
		if err != nil || again != r {
			t.Fatalf("ParseImageRef(%q) = %+v; its String reads back as %+v, %v", s, r, again, err)
		}
		if !provision.IsImageRef(s) {
			t.Fatalf("ParseImageRef accepted %q, which IsImageRef refuses", s)
		}
		c := provision.Container{Image: s, Entrypoint: []string{"/bin/sh"}, Capacity: provision.ContainerCapacity{CPU: 1, Memory: provision.MinContainerMemory}}
		if err := c.Validate(); err != nil {
			t.Fatalf("ParseImageRef accepted %q but Validate refuses it: %v", s, err)
		}
		if c.ImageSHA256() != r.Digest {
			t.Fatalf("ImageSHA256() = %q, want %q", c.ImageSHA256(), r.Digest)
		}
	})
}
