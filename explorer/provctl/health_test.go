package provctl_test

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/provision"
)

func TestReserveContainerHealthFlags(t *testing.T) {
	xs := explorertest.New(t)
	node := explorertest.NewKey(t)
	xs.RegisterNode(t, node)
	nodeID := explorertest.NodeID(node)
	c := cli{t: t, explorer: xs.URL(), key: filepath.Join(t.TempDir(), "key")}
	c.must("key", "new")
	base := []string{"reserve", "container", "--node", nodeID, "--image", "/images/rootfs.tar", "--image-digest", strings.Repeat("ab", 32),
		"--entrypoint", "/bin/server", "--network", "lan", "--ip", "10.1.2.10"}
	reserve := func(args ...string) (*provision.Container, error) {
		t.Helper()
		out, err := c.run(append(append([]string{}, base...), args...)...)
		if err != nil {
			return nil, err
		}
		var ct provision.Container
		if err := provision.DecodeData(xs.Reservation(t, strings.TrimSpace(out)).Data, &ct); err != nil {
			t.Fatal(err)
		}
		return &ct, nil
	}
	tests := []struct {
		name    string
		args    []string
		health  *provision.HealthCheck
		restart provision.RestartPolicy
	}{
		{"none", nil, nil, provision.RestartAlways},
		{"tcp", []string{"--health-tcp", "8080", "--restart", "on-failure"},
			&provision.HealthCheck{TCPPort: 8080, Interval: 10, Timeout: 1, Failures: 3, StartPeriod: 60}, provision.RestartOnFailure},
		{"http", []string{"--health-http", "80/healthz?x=1", "--health-interval", "5s", "--health-timeout", "2s", "--health-failures", "1", "--health-start-period", "2m"},
			&provision.HealthCheck{HTTPPort: 80, HTTPPath: "/healthz?x=1", Interval: 5, Timeout: 2, Failures: 1, StartPeriod: 120}, provision.RestartAlways},
		{"cmd", []string{"--health-cmd", `pg_isready -h '127.0.0.1' -d "my db"`, "--restart", "never"},
			&provision.HealthCheck{Exec: []string{"pg_isready", "-h", "127.0.0.1", "-d", "my db"}, Interval: 10, Timeout: 1, Failures: 3, StartPeriod: 60}, provision.RestartNever},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ct, err := reserve(tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(ct.Health, tt.health) || ct.Restart != tt.restart {
				t.Fatalf("health %+v restart %q, want %+v %q", ct.Health, ct.Restart, tt.health, tt.restart)
			}
		})
	}
	refused := []struct {
		name string
		args []string
		want string
	}{
		{"two-checks", []string{"--health-tcp", "1", "--health-cmd", "true"}, "exactly one"},
		{"http-no-path", []string{"--health-http", "80"}, "PORT/PATH"},
		{"cmd-unterminated", []string{"--health-cmd", "sh -c 'x"}, "unterminated"},
		{"interval-fraction", []string{"--health-tcp", "1", "--health-interval", "1500ms"}, "whole number of seconds"},
		{"interval-without-check", []string{"--health-interval", "5s"}, "without --health-tcp"},
		{"bad-policy", []string{"--restart", "sometimes"}, "always, on-failure or never"},
		{"start-period-too-long", []string{"--health-tcp", "1", "--health-start-period", "1h"}, "start_period"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := reserve(tt.args...); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("reserve = %v, want an error saying %q", err, tt.want)
			}
		})
	}
}
