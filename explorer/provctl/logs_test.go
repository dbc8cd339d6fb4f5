package provctl_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/explorer/provctl"
	"github.com/edgeprov/provisiond/identity"
	"github.com/edgeprov/provisiond/logreq"
	"github.com/edgeprov/provisiond/provision"
)

// TestLogs runs `provctl logs` against an explorer and a node's log
// responder: the owner gets the tail; another user, a volume and a node
// that does not answer get clear errors.
func TestLogs(t *testing.T) {
	xs := explorertest.New(t)
	nodeKey := explorertest.NewKey(t)
	nc := xs.RegisterNode(t, nodeKey)
	node := explorertest.NodeID(nodeKey)
	c := cli{t: t, explorer: xs.URL(), key: filepath.Join(t.TempDir(), "key")}
	c.must("key", "new")
	owner, err := identity.Load(c.key)
	if err != nil {
		t.Fatal(err)
	}
	ctr := explorertest.Volume(node, 1)
	ctr.Type, ctr.Data = provision.ContainerReservation, []byte(`{"image":"/srv/x.tar"}`)
	ctrID := xs.Reserve(t, owner, ctr)
	volID := xs.Reserve(t, owner, explorertest.Volume(node, 2))
	lookup := func(id string) (*provision.Record, error) {
		for _, held := range []string{ctrID, volID} {
			if id == held {
				return &provision.Record{Reservation: xs.Reservation(t, id)}, nil
			}
		}
		return nil, fmt.Errorf("%s: %w", id, provision.ErrNotFound)
	}
	output := strings.Repeat("0123456789", 100) + "the end\n"
	tail := func(id string, n int) ([]byte, error) {
		if id != ctrID {
			return nil, fs.ErrNotExist
		}
		return []byte(output[max(len(output)-n, 0):]), nil
	}

	// No node answers yet: the timeout says so.
	if _, err := c.run("logs", ctrID, "--timeout", "300ms"); !errors.Is(err, provctl.ErrNoLogs) || !strings.Contains(err.Error(), "did not answer within 300ms") {
		t.Fatalf("logs of a silent node: %v", err)
	}

	r := logreq.New(logreq.Options{Source: nc, NodeID: node, Key: nodeKey, Lookup: lookup, Tail: tail, Rate: 1000})
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { r.Run(ctx) })
	defer wg.Wait()
	defer cancel()

	if out := c.must("logs", ctrID, "--tail", "20"); out != output[len(output)-20:] {
		t.Fatalf("logs --tail 20 = %q", out)
	}
	if out := c.must("logs", ctrID); out != output {
		t.Fatalf("logs = %q, want the whole output (shorter than the default tail)", out)
	}
	if _, err := c.run("logs", volID); !errors.Is(err, provctl.ErrNoLogs) || !strings.Contains(err.Error(), "not a container") {
		t.Fatalf("logs of a volume: %v", err)
	}
	if _, err := c.run("logs", ctrID, "--tail", "0"); !errors.Is(err, provctl.ErrUsage) {
		t.Fatalf("logs --tail 0: %v", err)
	}
	other := cli{t: t, explorer: xs.URL(), key: filepath.Join(t.TempDir(), "key")}
	other.must("key", "new")
	if _, err := other.run("logs", ctrID); !errors.Is(err, provctl.ErrNoLogs) || !strings.Contains(err.Error(), "only its owner") {
		t.Fatalf("another user's logs: %v", err)
	}
}
