package server_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/provision"
)

// A submission past the user's units quota is refused with 403 and a JSON
// error that names the limit, the user, the use and the limit; a
// container is priced as nodes price it (cpu, memory, root disk).
func TestUnitsQuotaRefusal(t *testing.T) {
	xs := explorertest.NewWithConfig(t, server.Config{NoSync: true, Limits: server.Limits{
		MaxUnitsPerUser: provision.Units{CRU: 2, MRU: 1},
	}})
	nodeKey, user := explorertest.NewKey(t), explorertest.NewKey(t)
	xs.RegisterNode(t, nodeKey)
	node := explorertest.NodeID(nodeKey)
	container := func(cpu, mem int64) *provision.Reservation {
		r := explorertest.Volume(node, 1)
		r.Type = provision.ContainerReservation
		r.Data = fmt.Appendf(nil, `{"image":"/images/base.tar","image_digest":"%s","entrypoint":["/bin/sh"],"network":{"network_id":"","ip":""},"capacity":{"cpu":%d,"memory":%d}}`,
			strings.Repeat("ab", 32), cpu, mem)
		r.Sign(user)
		return r
	}
	first := container(1, 512)
	firstID := xs.Reserve(t, user, first)
	_, err := xs.UserClient(user).CreateReservation(t.Context(), container(2, 256))
	var apiErr *explorer.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusForbidden {
		t.Fatalf("past the CRU quota: %v, want a 403", err)
	}
	want := "creating reservation: server: quota exceeded: user " + explorertest.UserID(user) + " would use 3 of 2 CRU at this explorer"
	if !strings.HasPrefix(apiErr.Message, want) {
		t.Fatalf("refusal %q, want it to start with %q", apiErr.Message, want)
	}
	if provision.IsTemporary(err) {
		t.Errorf("a quota refusal is marked temporary: %v", err)
	}
	// Memory is priced too: 512 + 768 MiB pass 1 GiB.
	_, err = xs.UserClient(user).CreateReservation(t.Context(), container(1, 768))
	if !errors.As(err, &apiErr) || !strings.Contains(apiErr.Message, "would use 1.25 of 1 GiB MRU") {
		t.Fatalf("past the MRU quota: %v", err)
	}
	// What fits is taken.
	xs.Reserve(t, user, container(1, 512-1))

	// An update counts its units in place of the stored version's: the
	// first container may not grow to 2 cores (3 in all); with less
	// memory it is taken.
	update := func(cpu, mem int64) error {
		n := container(cpu, mem)
		n.ID, n.Created, n.Duration, n.Reference = firstID, first.Created, first.Duration, first.Reference
		n.Version, n.Previous = first.Version+1, first.Digest()
		n.Sign(user)
		return xs.UserClient(user).UpdateReservation(t.Context(), n)
	}
	if err := update(2, 512); !errors.As(err, &apiErr) || apiErr.Status != http.StatusForbidden || !strings.Contains(apiErr.Message, "would use 3 of 2 CRU at this explorer") {
		t.Fatalf("an update past the CRU quota: %v", err)
	}
	if err := update(1, 256); err != nil {
		t.Fatalf("an update within the quota: %v", err)
	}
}
