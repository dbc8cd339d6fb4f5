package provctl_test

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/explorer/provctl"
	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/internal/certs"
	"github.com/edgeprov/provisiond/internal/certs/certstest"
	"github.com/edgeprov/provisiond/provision"
)

// clock is the explorer's clock, ahead of the real one by what the test
// adds (within the allowed skew of requests signed at the real time).
type clock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return time.Now().Add(c.off) }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.off += d
	c.mu.Unlock()
}

func TestNodesAndAutoPlacement(t *testing.T) {
	ctx := t.Context()
	clk := &clock{}
	xs := explorertest.NewWithConfig(t, server.Config{NoSync: true, Now: clk.now, DownAfter: time.Minute})
	opts := explorertest.ClientOptions()
	opts.Now = clk.now
	u := func(cru uint64, mru, sru, hru float64) provision.Units {
		return provision.Units{CRU: cru, MRU: mru, SRU: sru, HRU: hru}
	}
	node := func(capacity *provision.Capacity) (*explorer.Client, string) {
		key := explorertest.NewKey(t)
		c := explorer.NewClient(xs.URL(), key, opts)
		if err := c.Register(ctx); err != nil {
			t.Fatal(err)
		}
		if capacity != nil {
			if err := c.ReportCapacity(ctx, *capacity, "v0.0.1"); err != nil {
				t.Fatal(err)
			}
		}
		return c, explorertest.NodeID(key)
	}
	_, down := node(&provision.Capacity{Total: u(64, 256, 4000, 4000)})
	clk.add(90 * time.Second)
	bigC, big := node(&provision.Capacity{Total: u(8, 32, 500, 0), Reserved: u(0, 2, 0, 0)})
	if err := bigC.UpdateStats(ctx, big, &provision.Stats{Used: u(1, 4, 0, 0), Capacity: provision.Capacity{Total: u(8, 32, 500, 0), Reserved: u(0, 2, 0, 0)}, Updated: clk.now()}); err != nil {
		t.Fatal(err)
	}
	smallKey := explorertest.NewKey(t)
	smallC := explorer.NewClient(xs.URL(), smallKey, opts)
	if err := smallC.Register(ctx); err != nil {
		t.Fatal(err)
	}
	if err := smallC.ReportCapacity(ctx, provision.Capacity{Total: u(2, 2, 10, 0)}, ""); err != nil {
		t.Fatal(err)
	}
	small := explorertest.NodeID(smallKey)
	_, fresh := node(nil)

	c := cli{t: t, explorer: xs.URL(), key: filepath.Join(t.TempDir(), "key")}
	c.must("key", "new")

	table := c.must("nodes")
	rows := map[string]string{}
	for _, line := range strings.Split(table, "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			rows[f[0]] = f[1]
		}
	}
	for id, want := range map[string]string{down: "down", big: "up", small: "up", fresh: "unreported"} {
		if rows[id] != want {
			t.Errorf("nodes table: %s is %q, want %q:\n%s", id, rows[id], want, table)
		}
	}
	for _, want := range []string{"v0.0.1", "26 / 32", "4 nodes as of", "more than 1m0s"} {
		if !strings.Contains(table, want) {
			t.Errorf("nodes table lacks %q:\n%s", want, table)
		}
	}
	if wide := c.must("nodes", "-o", "wide"); !strings.Contains(wide, "8/0/1/7") || !strings.Contains(wide, "32/2/4/26") {
		t.Errorf("wide table lacks total/system/reserved/free of the big node:\n%s", wide)
	}
	var reply explorer.NodesReply
	if err := json.Unmarshal([]byte(c.must("nodes", "--cru", "4", "--json")), &reply); err != nil {
		t.Fatal(err)
	}
	if len(reply.Nodes) != 2 || reply.AsOf.IsZero() {
		t.Fatalf("nodes --cru 4: %+v, want the big and the down node", reply)
	}
	if err := json.Unmarshal([]byte(c.must("nodes", "--cru", "4", "--status", "up", "-o", "json")), &reply); err != nil || len(reply.Nodes) != 1 || reply.Nodes[0].NodeID != big {
		t.Fatalf("nodes --cru 4 --status up: %+v, %v", reply.Nodes, err)
	}
	if _, err := c.run("nodes", "--status", "sideways"); !errors.Is(err, provctl.ErrUsage) {
		t.Fatalf("a bad status: %v", err)
	}

	// A volume of 100 GiB: only the big node (up) has it; the down node
	// has more but is down.
	var out, errOut strings.Builder
	err := provctl.Run(ctx, []string{"provctl", "--explorer", xs.URL(), "--key", c.key, "reserve", "volume", "--node", "auto", "--size", "100"}, &out, &errOut)
	if err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(out.String())
	if got := xs.Reservation(t, id); got.NodeID != big || got.Verify() != nil {
		t.Fatalf("auto put the volume on %s (verify %v), want %s", got.NodeID, got.Verify(), big)
	}
	if !strings.Contains(errOut.String(), "node auto: "+big) {
		t.Fatalf("auto did not say which node: %q", errOut.String())
	}
	for _, args := range [][]string{{"--size", "5000"}, {"--size", "1", "--type", "hdd"}} {
		if _, err := c.run(append([]string{"reserve", "volume", "--node", "auto"}, args...)...); !errors.Is(err, provctl.ErrNoNode) {
			t.Fatalf("auto volume %v: %v, want ErrNoNode", args, err)
		}
	}

	// A container goes where its network and volume are, even with more
	// room elsewhere.
	netID := strings.TrimSpace(c.must("reserve", "network", "--node", small, "--name", "web", "--ip-range", "10.240.0.0/16", "--subnet", "10.240.1.0/24"))
	volID := strings.TrimSpace(c.must("reserve", "volume", "--node", small, "--size", "1"))
	for _, id := range []string{netID, volID} {
		answer(t, xs, smallKey, id, provision.StateOk)
	}
	ct := []string{"reserve", "container", "--node", "auto", "--image", "http://127.0.0.1:1/rootfs.tar", "--image-digest", strings.Repeat("ab", 32),
		"--entrypoint", "/bin/sh", "--network", "web", "--ip", "10.240.1.10", "--mount", volID + ":/data", "--memory", "512", "--disk", "1024"}
	ctID := strings.TrimSpace(c.must(ct...))
	if got := xs.Reservation(t, ctID); got.NodeID != small {
		t.Fatalf("auto put the container on %s, want %s (its network and volume)", got.NodeID, small)
	}
	if _, err := c.run(append(ct, "--cpu", "4")...); !errors.Is(err, provctl.ErrNoNode) || !strings.Contains(err.Error(), "network and volumes") {
		t.Fatalf("a container too big for the node of its network: %v", err)
	}
	// A network nobody deployed: no node.
	if _, err := c.run("reserve", "container", "--node", "auto", "--image", "http://127.0.0.1:1/rootfs.tar", "--image-digest", strings.Repeat("ab", 32),
		"--entrypoint", "/bin/sh", "--network", "nowhere", "--ip", "10.240.1.11"); !errors.Is(err, provctl.ErrNoNode) {
		t.Fatalf("a container of an undeployed network: %v", err)
	}
}

func TestCAFlag(t *testing.T) {
	ca := certstest.NewCA(t)
	certFile, keyFile := certstest.Files(t)
	ca.Issue(t, 3, certFile, keyFile)
	r, err := certs.NewReloader(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	xs := explorertest.NewTLS(t, r.ServerConfig())

	c := cli{t: t, explorer: xs.URL(), key: filepath.Join(t.TempDir(), "key")}
	c.must("key", "new")
	if out := c.must("--ca", ca.File, "nodes"); !strings.Contains(out, "0 nodes as of") {
		t.Fatalf("nodes over TLS with --ca: %q", out)
	}
	t.Setenv("PROVCTL_CA", ca.File)
	c.must("nodes")
	t.Setenv("PROVCTL_CA", "")
	if _, err := c.run("nodes"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("nodes over TLS without the CA: %v, want a certificate error", err)
	}
	if _, err := c.run("--ca", filepath.Join(t.TempDir(), "missing.pem"), "nodes"); err == nil || !strings.Contains(err.Error(), "--ca") {
		t.Fatalf("a missing CA file: %v", err)
	}
}
