package provision_test

import (
	"errors"
	"testing"

	"github.com/edgeprov/provisiond/provision"
)

func TestParsePort(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want provision.PublishedPort
		bad  bool
	}{
		{name: "tcp", in: "8080:80/tcp", want: provision.PublishedPort{Port: 8080, ContainerPort: 80, Protocol: "tcp"}},
		{name: "udp", in: "5353:53/udp", want: provision.PublishedPort{Port: 5353, ContainerPort: 53, Protocol: "udp"}},
		{name: "default-tcp", in: "1:65535", want: provision.PublishedPort{Port: 1, ContainerPort: 65535, Protocol: "tcp"}},
		{name: "zero", in: "0:80/tcp", bad: true},
		{name: "too-big", in: "65536:80/tcp", bad: true},
		{name: "container-too-big", in: "80:99999", bad: true},
		{name: "sctp", in: "80:80/sctp", bad: true},
		{name: "no-colon", in: "8080", bad: true},
		{name: "sign", in: "+80:80", bad: true},
		{name: "negative", in: "-1:80", bad: true},
		{name: "empty", in: "", bad: true},
		{name: "six-digits", in: "000080:80", bad: true},
		{name: "space", in: " 80:80", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := provision.ParsePort(tt.in)
			if tt.bad {
				if !errors.Is(err, provision.ErrBadField) {
					t.Fatalf("ParsePort(%q) = %v, %v; want ErrBadField", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParsePort(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			if again, err := provision.ParsePort(got.String()); err != nil || again != got {
				t.Fatalf("round trip of %v: %v, %v", got, again, err)
			}
		})
	}
}

// FuzzParsePort checks that ParsePort never panics, that what it accepts
// is valid, and that it reads its own String back.
func FuzzParsePort(f *testing.F) {
	for _, s := range []string{"8080:80/tcp", "53:53/udp", "1:1", "65535:65535/tcp", "0:0", "x:y/z", "::/", "99999:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := provision.ParsePort(s)
		if err != nil {
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("ParsePort(%q) accepted an invalid %v: %v", s, p, err)
		}
		again, err := provision.ParsePort(p.String())
		if err != nil || again != p {
			t.Fatalf("ParsePort(%q) = %v; its String reads back as %v, %v", s, p, again, err)
		}
	})
}

func TestContainerPublishValidate(t *testing.T) {
	base := func() *provision.Container {
		return &provision.Container{
			Image: "/srv/img.tar", ImageDigest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
			Entrypoint: []string{"/bin/sh"},
			Network:    provision.ContainerNetwork{NetworkID: "0123456789abcdef", IP: "10.1.0.10"},
			Capacity:   provision.ContainerCapacity{CPU: 1, Memory: 64},
		}
	}
	tcp := func(p, c int) provision.PublishedPort {
		return provision.PublishedPort{Port: p, ContainerPort: c, Protocol: "tcp"}
	}
	tests := []struct {
		name  string
		edit  func(c *provision.Container)
		valid bool
	}{
		{name: "two-ports", edit: func(c *provision.Container) {
			c.Publish = []provision.PublishedPort{tcp(8080, 80), {Port: 8080, ContainerPort: 80, Protocol: "udp"}}
		}, valid: true},
		{name: "no-network", edit: func(c *provision.Container) {
			c.Network = provision.ContainerNetwork{}
			c.Publish = []provision.PublishedPort{tcp(8080, 80)}
		}},
		{name: "twice", edit: func(c *provision.Container) { c.Publish = []provision.PublishedPort{tcp(8080, 80), tcp(8080, 81)} }},
		{name: "out-of-range", edit: func(c *provision.Container) { c.Publish = []provision.PublishedPort{tcp(70000, 80)} }},
		{name: "too-many", edit: func(c *provision.Container) {
			for i := range provision.MaxPublishedPorts + 1 {
				c.Publish = append(c.Publish, tcp(2000+i, 80))
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			tt.edit(c)
			err := c.Validate()
			if tt.valid != (err == nil) {
				t.Fatalf("Validate() = %v, want valid %v", err, tt.valid)
			}
			if err != nil && !errors.Is(err, provision.ErrBadField) {
				t.Fatalf("Validate() = %v, want ErrBadField", err)
			}
		})
	}
}
