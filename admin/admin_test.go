package admin

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/provision/provisiontest"
)

func fill(t testing.TB) *provisiontest.Store {
	t.Helper()
	s := provisiontest.NewStore()
	for _, rec := range []*provision.Record{
		provisiontest.NewRecord("a1", provision.Deployed, time.Hour, ""),
		provisiontest.NewRecord("a2", provision.Failed, time.Hour, ""),
		provisiontest.NewRecord("a3", provision.Deployed, time.Hour, ""),
	} {
		if err := s.Add(rec); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func serve(t *testing.T, r Reader) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "admin.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- NewServer(r, zerolog.Nop()).Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return path
}

func TestClientServer(t *testing.T) {
	store := fill(t)
	local := &Local{
		Store: store,
		StatusFunc: func(context.Context) (*Status, error) {
			return &Status{NodeID: "node", Running: true, Cursor: 7}, nil
		},
		StatsFunc: func(context.Context) (*Stats, error) {
			return NewStats(provision.Stats{Used: provision.Units{CRU: 2}},
				provision.Quotas{Default: provision.Quota{Workloads: 3}},
				map[string]provision.Usage{"bob": {Workloads: 1}, "alice": {Workloads: 2}}), nil
		},
	}
	path := serve(t, local)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", fi.Mode(), err)
	}
	c, err := Dial(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(t.Context())
	if err != nil || st.NodeID != "node" || st.Cursor != 7 || !st.Running {
		t.Fatalf("status = %+v, %v", st, err)
	}
	stats, err := c.Stats(t.Context())
	if err != nil || stats.Used.CRU != 2 {
		t.Fatalf("stats = %+v, %v", stats, err)
	}
	if len(stats.Users) != 2 || stats.Users[0].User != "alice" || stats.Users[0].Used.Workloads != 2 ||
		stats.Users[1].User != "bob" || stats.Users[1].Quota.Workloads != 3 || stats.Quotas.Default.Workloads != 3 {
		t.Fatalf("users' usage = %+v", stats.Users)
	}
	rec, err := c.Record(t.Context(), "a2")
	if err != nil || rec.State != provision.Failed {
		t.Fatalf("record = %+v, %v", rec, err)
	}
	if _, err := c.Record(t.Context(), "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing record: %v, want ErrNotFound", err)
	}
	for _, tc := range []struct {
		name string
		f    Filter
		want []string
	}{
		{"all", Filter{}, []string{"a1", "a2", "a3"}},
		{"deployed", Filter{State: provision.Deployed}, []string{"a1", "a3"}},
		{"other-type", Filter{Type: provision.ContainerReservation}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			err := c.Records(t.Context(), tc.f, func(r *provision.Record) error {
				got = append(got, r.ID())
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestDialNoDaemon(t *testing.T) {
	_, err := Dial(t.Context(), filepath.Join(t.TempDir(), "none.sock"))
	if !errors.Is(err, ErrNoDaemon) {
		t.Fatalf("got %v, want ErrNoDaemon", err)
	}
}

func TestServeReplacesStaleSocketOnly(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if err := removeStale(stale); err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := removeStale(file); err == nil {
		t.Fatal("a regular file at the socket path was accepted")
	}
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("regular file was touched: %v", err)
	}
	live := serve(t, &Local{Store: provisiontest.NewStore()})
	if err := removeStale(live); err == nil {
		t.Fatal("a live daemon's socket was taken over")
	}
}
