package provctl_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/provision"
)

// provctl reserve past the explorer's units quota fails with the
// explorer's refusal, which names the limit, the user and the figures.
func TestProvctlUnitsQuota(t *testing.T) {
	xs := explorertest.NewWithConfig(t, server.Config{NoSync: true, Limits: server.Limits{MaxUnitsPerUser: provision.Units{SRU: 3}}})
	node := explorertest.NewKey(t)
	xs.RegisterNode(t, node)
	nodeID := explorertest.NodeID(node)
	c := cli{t: t, explorer: xs.URL(), key: filepath.Join(t.TempDir(), "key")}
	user := strings.TrimSpace(c.must("key", "new"))
	c.must("reserve", "volume", "--node", nodeID, "--size", "2")
	_, err := c.run("reserve", "volume", "--node", nodeID, "--size", "2")
	want := "explorer answered 403: creating reservation: server: quota exceeded: user " + user + " would use 4 of 3 GiB SRU at this explorer"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("reserve past the quota: %v, want %q", err, want)
	}
	t.Logf("provctl: %v", err)
	// An HDD volume takes no SRU.
	c.must("reserve", "volume", "--node", nodeID, "--size", "2", "--type", "hdd")
}
