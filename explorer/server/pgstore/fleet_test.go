package pgstore_test

import (
	"testing"
	"time"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/explorer/server/storetest"
	"github.com/edgeprov/provisiond/internal/pgtest"
	"github.com/edgeprov/provisiond/provision"
)

func TestFleetConformance(t *testing.T) {
	storetest.RunFleet(t, func(t *testing.T) server.Store { return open(t) })
}

// TestOwnerLogsAcrossReplicas runs the owner-logs path and the heartbeats
// across two explorer replicas on one database: the node long-polls its
// log requests on one, the owner asks through the other, whose NOTIFY
// wakes the held poll long before its wait (5 s); the sealed answer
// uploaded to the first is read through the second; a heartbeat sent to
// one shows in the other's node list.
func TestOwnerLogsAcrossReplicas(t *testing.T) {
	dsn := pgtest.Shared(t).NewDB(t)
	a, b := startReplica(t, dsn), startReplica(t, dsn)
	nodeKey, owner := explorertest.NewKey(t), explorertest.NewKey(t)
	nc := a.node(nodeKey)
	if err := nc.Register(t.Context()); err != nil {
		t.Fatal(err)
	}
	node := explorertest.NodeID(nodeKey)
	r := explorertest.Volume(node, 1)
	r.Type, r.Data = provision.ContainerReservation, []byte(`{"image":"/srv/x.tar"}`)
	r.Sign(owner)
	uc := b.user(owner)
	if _, err := uc.CreateReservation(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	type got struct {
		reqs []explorer.LogRequest
		err  error
		at   time.Time
	}
	ch := make(chan got, 1)
	go func() {
		reqs, err := nc.LogRequests(t.Context())
		ch <- got{reqs, err, time.Now()}
	}()
	time.Sleep(300 * time.Millisecond) // let the poll find nothing and hold
	q, err := uc.RequestLogs(t.Context(), r, 64)
	if err != nil {
		t.Fatal(err)
	}
	asked := time.Now()
	p := <-ch
	if p.err != nil || len(p.reqs) != 1 || p.reqs[0].Name() != q.Name() {
		t.Fatalf("the node's poll: %+v, %v", p.reqs, p.err)
	}
	if d := p.at.Sub(asked); d > 3*time.Second {
		t.Fatalf("the node's poll answered %s after the request: not woken by the other replica", d)
	}
	t.Logf("the node's poll woken %s after the request on the other replica", p.at.Sub(asked).Round(time.Millisecond))
	sealed, err := explorer.SealLogs(&p.reqs[0], nodeKey, []byte("tail of the output"))
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.PutLogs(t.Context(), &explorer.LogReply{Request: q.Name(), Sealed: sealed}); err != nil {
		t.Fatal(err)
	}
	st, err := uc.LogStatus(t.Context(), q)
	if err != nil || st.State != explorer.LogAnswered {
		t.Fatalf("status through the other replica: %+v, %v", st, err)
	}
	if out, err := explorer.OpenLogs(q, owner, st.Sealed); err != nil || string(out) != "tail of the output" {
		t.Fatalf("opened %q, %v", out, err)
	}

	hb := &provision.Heartbeat{NodeID: node, BootID: "b1", Booted: time.Now().Add(-time.Hour), Created: time.Now(), Interval: time.Minute}
	if err := hb.Sign(provision.KeySigner(nodeKey)); err != nil {
		t.Fatal(err)
	}
	if err := nc.Heartbeat(t.Context(), node, hb); err != nil {
		t.Fatal(err)
	}
	list, err := uc.ListNodes(t.Context(), explorer.NodeFilter{})
	if err != nil || len(list.Nodes) != 1 || list.Nodes[0].Availability == nil || list.Nodes[0].Availability.BootID != "b1" {
		t.Fatalf("the other replica's node list: %+v, %v", list, err)
	}
}
