package logreq_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/logreq"
	"github.com/edgeprov/provisiond/provision"
)

// container returns an unsigned container reservation on node.
func container(node string) *provision.Reservation {
	r := explorertest.Volume(node, 1)
	r.Type, r.Data = provision.ContainerReservation, []byte(`{"image":"/srv/x.tar"}`)
	return r
}

// records is the node's store as the responder reads it.
type records map[string]*provision.Reservation

func (m records) get(id string) (*provision.Record, error) {
	r, ok := m[id]
	if !ok {
		return nil, fmt.Errorf("record %s: %w", id, provision.ErrNotFound)
	}
	return &provision.Record{Reservation: r}, nil
}

// tails are the containers' outputs.
type tails map[string][]byte

func (m tails) tail(id string, n int) ([]byte, error) {
	b, ok := m[id]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return b[max(len(b)-n, 0):], nil
}

// TestOwnerLogs runs the whole path through a real explorer: the owner
// asks, the node's responder (long-polling as provisiond does) answers
// with the sealed tail, the owner opens it. The explorer holds only the
// sealed blob; everyone else is refused with the API's statuses.
func TestOwnerLogs(t *testing.T) {
	xs := explorertest.New(t)
	nodeKey, owner, stranger := explorertest.NewKey(t), explorertest.NewKey(t), explorertest.NewKey(t)
	nc := xs.RegisterNode(t, nodeKey)
	node := explorertest.NodeID(nodeKey)
	ctrID := xs.Reserve(t, owner, container(node))
	volID := xs.Reserve(t, owner, explorertest.Volume(node, 2))
	secret := bytes.Repeat([]byte("line of the container's secret output\n"), 200)
	held := records{ctrID: xs.Reservation(t, ctrID), volID: xs.Reservation(t, volID)}
	r := logreq.New(logreq.Options{Source: nc, NodeID: node, Key: nodeKey, Lookup: held.get,
		Tail: tails{ctrID: secret}.tail, Rate: 1000})
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { r.Run(ctx) })
	defer wg.Wait()
	defer cancel()

	uc := xs.UserClient(owner)
	rv, err := uc.GetReservation(t.Context(), ctrID)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	q, err := uc.RequestLogs(t.Context(), rv, 1000)
	if err != nil {
		t.Fatal(err)
	}
	st := waitAnswer(t, uc, q)
	t.Logf("answered %s after the request", time.Since(start).Round(time.Millisecond))
	if st.State != explorer.LogAnswered {
		t.Fatalf("status %+v", st)
	}
	got, err := explorer.OpenLogs(q, owner, st.Sealed)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, secret[len(secret)-1000:]) {
		t.Fatalf("opened %d bytes %.40q…, want the last 1000 of the output", len(got), got)
	}
	raw, _ := base64.StdEncoding.DecodeString(st.Sealed)
	for _, leak := range [][]byte{[]byte("secret output"), []byte(base64.StdEncoding.EncodeToString(secret[len(secret)-1000:])[:40])} {
		if bytes.Contains(raw, leak) || strings.Contains(st.Sealed, string(leak)) {
			t.Fatalf("the explorer's blob holds the plaintext %q", leak)
		}
	}
	if _, err := explorer.OpenLogs(q, stranger, st.Sealed); err == nil {
		t.Fatal("a stranger's key opened the sealed logs")
	}

	// The explorer's refusals: not the owner, unknown, not a container.
	sc := xs.UserClient(stranger)
	if _, err := sc.RequestLogs(t.Context(), rv, 100); status(err) != http.StatusForbidden {
		t.Fatalf("a stranger's request: %v, want 403", err)
	}
	if _, err := sc.LogStatus(t.Context(), q); status(err) != http.StatusForbidden {
		t.Fatalf("a stranger reading the owner's answer: %v, want 403", err)
	}
	fake := *rv
	fake.ID = "0123456789abcdef"
	if _, err := uc.RequestLogs(t.Context(), &fake, 100); status(err) != http.StatusNotFound {
		t.Fatalf("an unknown reservation: %v, want 404", err)
	}
	vol, _ := uc.GetReservation(t.Context(), volID)
	if _, err := uc.RequestLogs(t.Context(), vol, 100); status(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "not a container") {
		t.Fatalf("a volume's logs: %v, want 400 not a container", err)
	}
	if _, err := uc.RequestLogs(t.Context(), rv, explorer.MaxLogTail+1); status(err) != http.StatusBadRequest {
		t.Fatalf("a tail past the limit: %v, want 400", err)
	}
	// The per-user count: one answered above, so 7 more, then 429.
	cancel()
	wg.Wait()
	for i := 1; i < explorer.MaxLogRequestsPerUser; i++ {
		if _, err := uc.RequestLogs(t.Context(), rv, 10); err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
	}
	if _, err := uc.RequestLogs(t.Context(), rv, 10); status(err) != http.StatusTooManyRequests {
		t.Fatalf("request %d: %v, want 429", explorer.MaxLogRequestsPerUser+1, err)
	}
}

// waitAnswer polls the explorer until the node answered q.
func waitAnswer(t *testing.T, uc *explorer.Client, q *explorer.LogRequest) *explorer.LogStatus {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := uc.LogStatus(t.Context(), q)
		if err != nil {
			t.Fatal(err)
		}
		if st.State != explorer.LogPending {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer within 20s: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func status(err error) int {
	var e *explorer.APIError
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// fakeSource records the answers.
type fakeSource struct {
	mu      sync.Mutex
	replies []*explorer.LogReply
	fail    bool
}

func (f *fakeSource) LogRequests(ctx context.Context) ([]explorer.LogRequest, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (f *fakeSource) PutLogs(_ context.Context, r *explorer.LogReply) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return errors.New("explorer away")
	}
	f.replies = append(f.replies, r)
	return nil
}

func (f *fakeSource) last() *explorer.LogReply {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.replies[len(f.replies)-1]
}

// TestResponderRefuses checks the node's own judgement of each request: it
// answers with an error the owner reads, and never with logs, for every
// request it must not honour.
func TestResponderRefuses(t *testing.T) {
	nodeKey, owner, stranger := explorertest.NewKey(t), explorertest.NewKey(t), explorertest.NewKey(t)
	node := explorertest.NodeID(nodeKey)
	ctr := container(node)
	ctr.ID, ctr.UserID = "c0ffee00c0ffee00", explorertest.UserID(owner)
	vol := explorertest.Volume(node, 1)
	vol.ID, vol.UserID = "0000000000000001", explorertest.UserID(owner)
	quiet := container(node)
	quiet.ID, quiet.UserID = "0000000000000002", explorertest.UserID(owner)
	held := records{ctr.ID: ctr, vol.ID: vol, quiet.ID: quiet}
	now := time.Now()
	clock := func() time.Time { return now }
	src := &fakeSource{}
	r := logreq.New(logreq.Options{Source: src, NodeID: node, Key: nodeKey, Lookup: held.get,
		Tail: tails{ctr.ID: []byte("hello")}.tail, Now: clock})
	req := func(key ed25519.PrivateKey, id, node string, at time.Time) *explorer.LogRequest {
		q := &explorer.LogRequest{ID: id, NodeID: node, UserID: explorertest.UserID(key), Tail: 10}
		if err := q.Sign(key, at); err != nil {
			t.Fatal(err)
		}
		return q
	}
	good := req(owner, ctr.ID, node, now)
	tamperedTail := req(owner, ctr.ID, node, now)
	tamperedTail.Tail = 64
	tests := []struct {
		name string
		q    *explorer.LogRequest
		want string
	}{
		{"good", good, ""},
		{"replay", good, "replay"},
		{"expired", req(owner, ctr.ID, node, now.Add(-explorer.LogRequestTTL-time.Second)), "expired"},
		{"signed-before-start", req(owner, ctr.ID, node, now.Add(-time.Minute)), "replay"},
		{"not-the-owner", req(stranger, ctr.ID, node, now), "not the owner"},
		{"tampered", tamperedTail, "does not verify"},
		{"other-node", req(owner, ctr.ID, explorertest.NodeID(stranger), now), "for node"},
		{"unknown", req(owner, "00000000000000ff", node, now), "no such reservation"},
		{"not-a-container", req(owner, vol.ID, node, now), "not a container"},
		{"no-logs-yet", req(owner, quiet.ID, node, now), "no log yet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !r.Answer(t.Context(), tt.q) {
				t.Fatal("not uploaded")
			}
			got := src.last()
			if got.Request != tt.q.Name() {
				t.Fatalf("answer names %s, want %s", got.Request, tt.q.Name())
			}
			if tt.want == "" {
				if got.Error != "" || got.Sealed == "" {
					t.Fatalf("answer %+v, want the sealed logs", got)
				}
				out, err := explorer.OpenLogs(tt.q, owner, got.Sealed)
				if err != nil || string(out) != "hello" {
					t.Fatalf("opened %q, %v", out, err)
				}
				return
			}
			if got.Sealed != "" || !strings.Contains(got.Error, tt.want) {
				t.Fatalf("answer %+v, want an error with %q", got, tt.want)
			}
		})
	}
	// An upload that fails is not remembered: the next poll answers it.
	again := req(owner, ctr.ID, node, now)
	src.fail = true
	if r.Answer(t.Context(), again) {
		t.Fatal("a failed upload reported as done")
	}
	src.fail = false
	if !r.Answer(t.Context(), again) || src.last().Sealed == "" {
		t.Fatalf("the retried answer: %+v", src.last())
	}
}
