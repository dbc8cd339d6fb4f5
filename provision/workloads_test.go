package provision_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/provision"
)

func TestValidName(t *testing.T) {
	tests := []struct {
		name, in string
		ok       bool
	}{
		{"simple", "office", true},
		{"dots-dashes-underscores", "a.b_c-d", true},
		{"digits-first", "1-2", true},
		{"max-length", strings.Repeat("a", provision.MaxNameLength), true},
		{"empty", "", false},
		{"too-long", strings.Repeat("a", provision.MaxNameLength+1), false},
		{"slash", "a/b", false},
		{"backslash", `a\b`, false},
		{"dotdot", "..", false},
		{"dotdot-inside", "a..b", false},
		{"parent-traversal", "../x", false},
		{"leading-dot", ".hidden", false},
		{"leading-dash", "-rf", false},
		{"space", "a b", false},
		{"nul", "a\x00b", false},
		{"newline", "a\n", false},
		{"unicode", "café", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := provision.ValidName("name", tt.in)
			if tt.ok && err != nil {
				t.Fatalf("ValidName(%q) = %v, want nil", tt.in, err)
			}
			if !tt.ok && !errors.Is(err, provision.ErrBadName) {
				t.Fatalf("ValidName(%q) = %v, want ErrBadName", tt.in, err)
			}
		})
	}
}

func TestDecodeData(t *testing.T) {
	tests := []struct {
		name, in string
		ok       bool
	}{
		{"object", `{"size":1,"type":"ssd"}`, true},
		{"whitespace-around", " \n{\"size\":1}\t\n", true},
		{"empty", ``, false},
		{"unknown-field", `{"size":1,"colour":"red"}`, false},
		{"two-objects", `{"size":1}{"size":2}`, false},
		{"trailing-garbage", `{"size":1} x`, false},
		{"trailing-brace", `{"size":1}}`, false},
		{"trailing-bracket", `{"size":1}]`, false},
		{"trailing-comma", `{"size":1},`, false},
		{"truncated", `{"size":1`, false},
		{"wrong-type", `{"size":"1"}`, false},
		{"null", `null`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v provision.Volume
			err := provision.DecodeData([]byte(tt.in), &v)
			if tt.ok && err != nil {
				t.Fatalf("DecodeData(%q) = %v, want nil", tt.in, err)
			}
			if !tt.ok && !errors.Is(err, provision.ErrBadData) {
				t.Fatalf("DecodeData(%q) = %v, want ErrBadData", tt.in, err)
			}
		})
	}
}

func TestWorkload(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		typ  provision.ReservationType
		want any
	}{
		{provision.NetworkReservation, &provision.Network{Name: "office", IPRange: "10.20.0.0/16", Subnet: "10.20.3.0/24"}},
		{provision.VolumeReservation, &provision.Volume{Size: 10, Type: provision.SSD}},
		{provision.ContainerReservation, &provision.Container{
			Image:       "https://images.example.com/alpine-3.20.tar",
			ImageDigest: "sha256:" + strings.Repeat("ab", 32),
			Entrypoint:  []string{"/bin/sh", "-c", "echo <hi> & bye"},
			Env:         map[string]string{"GREETING": "hello\u2028world"},
			Mounts:      []provision.Mount{{VolumeID: "r-volume", Mountpoint: "/data"}},
			Network:     provision.ContainerNetwork{NetworkID: provision.NetworkID(f.userID(), "office"), IP: "10.20.3.5"},
			Capacity:    provision.ContainerCapacity{CPU: 1, Memory: 256, DiskSize: 1024},
		}},
	}
	for _, tt := range tests {
		t.Run(string(tt.typ), func(t *testing.T) {
			got, err := f.signed(t, tt.typ).Workload()
			if err != nil {
				t.Fatalf("Workload() = %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Workload() = %#v, want %#v", got, tt.want)
			}
		})
	}
	r := f.signed(t, provision.VolumeReservation)
	r.Type = "vm"
	if _, err := r.Workload(); !errors.Is(err, provision.ErrUnknownType) {
		t.Errorf("Workload() of type vm = %v, want ErrUnknownType", err)
	}
}

func TestReservationTypeKnown(t *testing.T) {
	for _, typ := range provision.Types {
		if !typ.Known() {
			t.Errorf("%q.Known() = false", typ)
		}
	}
	for _, typ := range []provision.ReservationType{"", "vm", "Network", "zdb"} {
		if typ.Known() {
			t.Errorf("%q.Known() = true", typ)
		}
	}
}

func TestNetworkValidate(t *testing.T) {
	tests := []struct {
		name                 string
		netName, rng, subnet string
		err                  error
		gateway, gatewayMask string
	}{
		{"slash-24", "office", "10.20.0.0/16", "10.20.3.0/24", nil, "10.20.3.1", "ffffff00"},
		{"slash-30", "n", "192.168.0.0/24", "192.168.0.4/30", nil, "192.168.0.5", "fffffffc"},
		{"subnet-equals-range", "n", "10.0.0.0/24", "10.0.0.0/24", nil, "10.0.0.1", "ffffff00"},
		{"subnet-too-small", "n", "10.0.0.0/24", "10.0.0.4/31", provision.ErrBadField, "", ""},
		{"subnet-larger-than-range", "n", "10.0.0.0/24", "10.0.0.0/16", provision.ErrBadField, "", ""},
		{"subnet-outside", "n", "10.0.0.0/24", "10.0.1.0/28", provision.ErrBadField, "", ""},
		{"range-host-bits", "n", "10.0.0.1/24", "10.0.0.0/28", provision.ErrBadField, "", ""},
		{"range-not-cidr", "n", "10.0.0.0", "10.0.0.0/28", provision.ErrBadField, "", ""},
		{"ipv6", "n", "fd00::/48", "fd00::/64", provision.ErrBadField, "", ""},
		{"bad-name", "a/b", "10.0.0.0/24", "10.0.0.0/28", provision.ErrBadName, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := &provision.Network{Name: tt.netName, IPRange: tt.rng, Subnet: tt.subnet}
			err := n.Validate()
			if !errors.Is(err, tt.err) {
				t.Fatalf("Validate() = %v, want %v", err, tt.err)
			}
			if err != nil {
				return
			}
			gw := n.Gateway()
			if gw.IP.String() != tt.gateway || gw.Mask.String() != tt.gatewayMask {
				t.Errorf("Gateway() = %s/%s, want %s/%s", gw.IP, gw.Mask, tt.gateway, tt.gatewayMask)
			}
		})
	}
}

func TestVolumeValidate(t *testing.T) {
	tests := []struct {
		name string
		v    provision.Volume
		err  error
	}{
		{"ssd", provision.Volume{Size: 1, Type: provision.SSD}, nil},
		{"hdd-max", provision.Volume{Size: provision.MaxVolumeSize, Type: provision.HDD}, nil},
		{"too-big", provision.Volume{Size: provision.MaxVolumeSize + 1, Type: provision.HDD}, provision.ErrBadSize},
		{"negative", provision.Volume{Size: -1, Type: provision.SSD}, provision.ErrBadSize},
		{"zero", provision.Volume{Type: provision.SSD}, provision.ErrBadSize},
		{"no-type", provision.Volume{Size: 1}, provision.ErrBadField},
		{"uppercase-type", provision.Volume{Size: 1, Type: "SSD"}, provision.ErrBadField},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.v.Validate(); !errors.Is(err, tt.err) {
				t.Fatalf("Validate() = %v, want %v", err, tt.err)
			}
		})
	}
}

// validContainer returns a container that passes Validate.
func validContainer() *provision.Container {
	return &provision.Container{
		Image:       "/var/lib/images/alpine.tar",
		ImageDigest: strings.Repeat("0f", 32),
		Entrypoint:  []string{"/bin/sh"},
		Env:         map[string]string{"PATH": "/bin", "_X1": ""},
		Mounts:      []provision.Mount{{VolumeID: "v1", Mountpoint: "/data"}, {VolumeID: "v2", Mountpoint: "/logs"}},
		Network:     provision.ContainerNetwork{NetworkID: strings.Repeat("a", 16), IP: "10.0.0.2"},
		Capacity:    provision.ContainerCapacity{CPU: 2, Memory: 512, DiskSize: 1024},
	}
}

func TestContainerValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(c *provision.Container)
		err  error
	}{
		{"valid", func(c *provision.Container) {}, nil},
		{"http-image", func(c *provision.Container) { c.Image = "http://example.com/a.tar" }, nil},
		{"sha256-prefixed-digest", func(c *provision.Container) { c.ImageDigest = "sha256:" + c.ImageDigest }, nil},
		{"no-network", func(c *provision.Container) { c.Network = provision.ContainerNetwork{} }, nil},
		{"no-mounts-no-env", func(c *provision.Container) { c.Mounts, c.Env = nil, nil }, nil},
		{"max-capacity", func(c *provision.Container) {
			c.Capacity = provision.ContainerCapacity{CPU: provision.MaxContainerCPU, Memory: provision.MaxContainerMemory, DiskSize: provision.MaxContainerDisk}
		}, nil},
		{"empty-image", func(c *provision.Container) { c.Image = "" }, provision.ErrBadField},
		{"relative-image", func(c *provision.Container) { c.Image = "images/a.tar" }, provision.ErrBadName},
		{"unclean-image", func(c *provision.Container) { c.Image = "/images//a.tar" }, provision.ErrBadName},
		{"image-url-whitespace", func(c *provision.Container) { c.Image = "https://x/a b.tar" }, provision.ErrBadField},
		{"ftp-image", func(c *provision.Container) { c.Image = "ftp://x/a.tar" }, provision.ErrBadName},
		{"short-digest", func(c *provision.Container) { c.ImageDigest = "abc" }, provision.ErrBadField},
		{"uppercase-digest", func(c *provision.Container) { c.ImageDigest = strings.Repeat("0F", 32) }, provision.ErrBadField},
		{"registry-image", func(c *provision.Container) {
			c.Image, c.ImageDigest = "registry.example.com/app@sha256:"+strings.Repeat("0f", 32), ""
		}, nil},
		{"registry-image-same-digest", func(c *provision.Container) {
			c.Image = "registry.example.com/app@sha256:" + strings.Repeat("0f", 32)
		}, nil},
		{"registry-image-other-digest", func(c *provision.Container) {
			c.Image = "registry.example.com/app@sha256:" + strings.Repeat("1f", 32)
		}, provision.ErrBadField},
		{"registry-image-tag", func(c *provision.Container) { c.Image = "registry.example.com/app:latest" }, provision.ErrBadName},
		{"registry-image-no-registry", func(c *provision.Container) {
			c.Image, c.ImageDigest = "app@sha256:"+strings.Repeat("0f", 32), ""
		}, provision.ErrBadName},
		{"no-entrypoint", func(c *provision.Container) { c.Entrypoint = nil }, provision.ErrBadField},
		{"empty-entrypoint", func(c *provision.Container) { c.Entrypoint = []string{"", "x"} }, provision.ErrBadField},
		{"bad-env-key", func(c *provision.Container) { c.Env = map[string]string{"A=B": "c"} }, provision.ErrBadName},
		{"env-key-digit-first", func(c *provision.Container) { c.Env = map[string]string{"1A": "c"} }, provision.ErrBadName},
		{"mount-root", func(c *provision.Container) { c.Mounts[0].Mountpoint = "/" }, provision.ErrBadName},
		{"mount-dotdot", func(c *provision.Container) { c.Mounts[0].Mountpoint = "/a/.." }, provision.ErrBadName},
		{"mount-dotdot-name", func(c *provision.Container) { c.Mounts[0].Mountpoint = "/a/..b" }, provision.ErrBadName},
		{"mount-twice", func(c *provision.Container) { c.Mounts[1].Mountpoint = "/data" }, provision.ErrBadField},
		{"mount-bad-volume", func(c *provision.Container) { c.Mounts[0].VolumeID = "a/b" }, provision.ErrBadName},
		{"network-id-short", func(c *provision.Container) { c.Network.NetworkID = "abc" }, provision.ErrBadName},
		{"network-id-not-hex", func(c *provision.Container) { c.Network.NetworkID = strings.Repeat("g", 16) }, provision.ErrBadName},
		{"ipv6-ip", func(c *provision.Container) { c.Network.IP = "fd00::2" }, provision.ErrBadField},
		{"no-ip", func(c *provision.Container) { c.Network.IP = "" }, provision.ErrBadField},
		{"ip-without-network", func(c *provision.Container) { c.Network.NetworkID = "" }, provision.ErrBadField},
		{"zero-cpu", func(c *provision.Container) { c.Capacity.CPU = 0 }, provision.ErrBadField},
		{"too-many-cpus", func(c *provision.Container) { c.Capacity.CPU = provision.MaxContainerCPU + 1 }, provision.ErrBadField},
		{"memory-below-minimum", func(c *provision.Container) { c.Capacity.Memory = provision.MinContainerMemory - 1 }, provision.ErrBadSize},
		{"memory-too-big", func(c *provision.Container) { c.Capacity.Memory = provision.MaxContainerMemory + 1 }, provision.ErrBadSize},
		{"negative-disk", func(c *provision.Container) { c.Capacity.DiskSize = -1 }, provision.ErrBadSize},
		{"disk-too-big", func(c *provision.Container) { c.Capacity.DiskSize = provision.MaxContainerDisk + 1 }, provision.ErrBadSize},
		{"health-tcp", func(c *provision.Container) { c.Health = &provision.HealthCheck{TCPPort: 8080} }, nil},
		{"health-http", func(c *provision.Container) {
			c.Health = &provision.HealthCheck{HTTPPort: 80, HTTPPath: "/healthz?full=1", Interval: 5, Timeout: 5, Failures: 1, StartPeriod: 240}
		}, nil},
		{"health-exec-no-network", func(c *provision.Container) {
			c.Network = provision.ContainerNetwork{}
			c.Health = &provision.HealthCheck{Exec: []string{"pg_isready", "-q"}}
		}, nil},
		{"health-tcp-no-network", func(c *provision.Container) {
			c.Network = provision.ContainerNetwork{}
			c.Health = &provision.HealthCheck{TCPPort: 8080}
		}, nil},
		{"health-none", func(c *provision.Container) { c.Health = &provision.HealthCheck{} }, provision.ErrBadField},
		{"health-two-checks", func(c *provision.Container) { c.Health = &provision.HealthCheck{TCPPort: 1, Exec: []string{"true"}} }, provision.ErrBadField},
		{"health-tcp-port-zero-http", func(c *provision.Container) { c.Health = &provision.HealthCheck{HTTPPath: "/"} }, provision.ErrBadField},
		{"health-tcp-port-big", func(c *provision.Container) { c.Health = &provision.HealthCheck{TCPPort: 65536} }, provision.ErrBadField},
		{"health-tcp-port-negative", func(c *provision.Container) { c.Health = &provision.HealthCheck{TCPPort: -1} }, provision.ErrBadField},
		{"health-http-no-path", func(c *provision.Container) { c.Health = &provision.HealthCheck{HTTPPort: 80} }, provision.ErrBadField},
		{"health-http-relative-path", func(c *provision.Container) { c.Health = &provision.HealthCheck{HTTPPort: 80, HTTPPath: "healthz"} }, provision.ErrBadField},
		{"health-http-path-space", func(c *provision.Container) { c.Health = &provision.HealthCheck{HTTPPort: 80, HTTPPath: "/a b"} }, provision.ErrBadField},
		{"health-http-path-crlf", func(c *provision.Container) {
			c.Health = &provision.HealthCheck{HTTPPort: 80, HTTPPath: "/a\r\nHost: x"}
		}, provision.ErrBadField},
		{"health-http-path-long", func(c *provision.Container) {
			c.Health = &provision.HealthCheck{HTTPPort: 80, HTTPPath: "/" + strings.Repeat("a", provision.MaxHealthHTTPPath)}
		}, provision.ErrBadField},
		{"health-exec-empty-command", func(c *provision.Container) { c.Health = &provision.HealthCheck{Exec: []string{""}} }, provision.ErrBadField},
		{"health-exec-nul", func(c *provision.Container) { c.Health = &provision.HealthCheck{Exec: []string{"a\x00b"}} }, provision.ErrBadField},
		{"health-exec-too-many-words", func(c *provision.Container) {
			c.Health = &provision.HealthCheck{Exec: make([]string, provision.MaxHealthExecArgs+1)}
			c.Health.Exec[0] = "x"
		}, provision.ErrBadField},
		{"health-exec-too-long", func(c *provision.Container) {
			c.Health = &provision.HealthCheck{Exec: []string{strings.Repeat("x", provision.MaxHealthExecBytes+1)}}
		}, provision.ErrBadField},
		{"health-negative-interval", func(c *provision.Container) { c.Health = &provision.HealthCheck{TCPPort: 1, Interval: -1} }, provision.ErrBadField},
		{"health-interval-too-long", func(c *provision.Container) {
			c.Health = &provision.HealthCheck{TCPPort: 1, Interval: provision.MaxHealthInterval + 1}
		}, provision.ErrBadField},
		{"health-timeout-above-interval", func(c *provision.Container) { c.Health = &provision.HealthCheck{TCPPort: 1, Interval: 2, Timeout: 3} }, provision.ErrBadField},
		{"health-timeout-above-default-interval", func(c *provision.Container) { c.Health = &provision.HealthCheck{TCPPort: 1, Timeout: 11} }, provision.ErrBadField},
		{"health-failures-too-many", func(c *provision.Container) {
			c.Health = &provision.HealthCheck{TCPPort: 1, Failures: provision.MaxHealthFailures + 1}
		}, provision.ErrBadField},
		{"health-start-period-too-long", func(c *provision.Container) {
			c.Health = &provision.HealthCheck{TCPPort: 1, StartPeriod: provision.MaxHealthStartPeriod + 1}
		}, provision.ErrBadField},
		{"restart-always", func(c *provision.Container) { c.Restart = provision.RestartAlways }, nil},
		{"restart-on-failure", func(c *provision.Container) { c.Restart = provision.RestartOnFailure }, nil},
		{"restart-never", func(c *provision.Container) { c.Restart = provision.RestartNever }, nil},
		{"restart-unknown", func(c *provision.Container) { c.Restart = "sometimes" }, provision.ErrBadField},
		{"restart-upper-case", func(c *provision.Container) { c.Restart = "Always" }, provision.ErrBadField},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validContainer()
			tt.edit(c)
			if err := c.Validate(); !errors.Is(err, tt.err) {
				t.Fatalf("Validate() = %v, want %v", err, tt.err)
			}
		})
	}
}

func TestContainerHelpers(t *testing.T) {
	c := validContainer()
	c.ImageDigest = "sha256:" + strings.Repeat("0f", 32)
	if got := c.ImageSHA256(); got != strings.Repeat("0f", 32) {
		t.Errorf("ImageSHA256() = %q", got)
	}
	vols, netID := c.Dependencies()
	if !reflect.DeepEqual(vols, []string{"v1", "v2"}) || netID != strings.Repeat("a", 16) {
		t.Errorf("Dependencies() = %v, %q", vols, netID)
	}
	c.Mounts, c.Network = nil, provision.ContainerNetwork{}
	if vols, netID := c.Dependencies(); len(vols) != 0 || netID != "" {
		t.Errorf("Dependencies() of a standalone container = %v, %q", vols, netID)
	}
}

func TestRestartPolicy(t *testing.T) {
	tests := []struct {
		policy provision.RestartPolicy
		code   int
		want   bool
	}{
		{provision.RestartDefault, 0, true},
		{provision.RestartDefault, 3, true},
		{provision.RestartAlways, 0, true},
		{provision.RestartOnFailure, 0, false},
		{provision.RestartOnFailure, 1, true},
		{provision.RestartOnFailure, -1, true},
		{provision.RestartNever, 1, false},
		{provision.RestartNever, -1, false},
	}
	for _, tt := range tests {
		if got := tt.policy.Restarts(tt.code); got != tt.want {
			t.Errorf("%q.Restarts(%d) = %v, want %v", tt.policy, tt.code, got, tt.want)
		}
	}
}

func TestHealthCheckDefaults(t *testing.T) {
	h := &provision.HealthCheck{TCPPort: 80}
	if h.IntervalOrDefault() != 10*time.Second || h.TimeoutOrDefault() != time.Second || h.FailuresOrDefault() != 3 ||
		h.StartPeriodOrDefault() != time.Minute {
		t.Errorf("defaults = %s %s %d %s, want 10s 1s 3 1m", h.IntervalOrDefault(), h.TimeoutOrDefault(), h.FailuresOrDefault(), h.StartPeriodOrDefault())
	}
	h = &provision.HealthCheck{Exec: []string{"true"}, Interval: 2, Timeout: 2, Failures: 7, StartPeriod: 5}
	if h.IntervalOrDefault() != 2*time.Second || h.TimeoutOrDefault() != 2*time.Second || h.FailuresOrDefault() != 7 ||
		h.StartPeriodOrDefault() != 5*time.Second {
		t.Errorf("set = %s %s %d %s", h.IntervalOrDefault(), h.TimeoutOrDefault(), h.FailuresOrDefault(), h.StartPeriodOrDefault())
	}
	for h, want := range map[*provision.HealthCheck]string{
		{TCPPort: 8080}:                 "tcp port 8080",
		{HTTPPort: 80, HTTPPath: "/ok"}: "http port 80 path /ok",
		{Exec: []string{"a", "b c"}}:    `exec ["a" "b c"]`,
	} {
		if got := h.String(); got != want {
			t.Errorf("String() = %q, want %q", got, want)
		}
	}
}

// TestContainerWithoutLifecycleFields checks that a container that names
// neither a health check nor a restart policy encodes as before those
// fields existed: the bytes its owner signed stay the same.
func TestContainerWithoutLifecycleFields(t *testing.T) {
	b, err := json.Marshal(validContainer())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "health") || strings.Contains(string(b), "restart") {
		t.Errorf("container JSON %s names health or restart", b)
	}
}

func TestFilesystemName(t *testing.T) {
	r := &provision.Reservation{ID: "42-1"}
	if got := provision.FilesystemName(r); got != provision.Prefix+"42-1" {
		t.Errorf("FilesystemName() = %q", got)
	}
}

func TestWorkloadJSONNames(t *testing.T) {
	// The wire names are part of the contract with provctl and the explorer.
	b, err := json.Marshal(validContainer())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{`"image"`, `"image_digest"`, `"entrypoint"`, `"env"`, `"mounts"`, `"volume_id"`, `"mountpoint"`,
		`"network"`, `"network_id"`, `"ip"`, `"capacity"`, `"cpu"`, `"memory"`, `"disk_size"`} {
		if !strings.Contains(string(b), name) {
			t.Errorf("container JSON %s lacks %s", b, name)
		}
	}
}

func TestHealthJSONNames(t *testing.T) {
	c := validContainer()
	c.Restart = provision.RestartOnFailure
	c.Health = &provision.HealthCheck{HTTPPort: 1, HTTPPath: "/", Exec: []string{"x"}, TCPPort: 2, Interval: 1, Timeout: 1, Failures: 1, StartPeriod: 1}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{`"health"`, `"tcp_port"`, `"http_port"`, `"http_path"`, `"exec"`, `"interval"`, `"timeout"`,
		`"failures"`, `"start_period"`, `"restart":"on-failure"`} {
		if !strings.Contains(string(b), name) {
			t.Errorf("container JSON %s lacks %s", b, name)
		}
	}
}
