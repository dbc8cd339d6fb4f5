package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeprov/provisiond/admin"
	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/provision"
)

type fixedCapacity struct{}

func (fixedCapacity) Capacity(context.Context) (provision.Capacity, error) {
	return provision.Capacity{Total: provision.Units{CRU: 1}}, nil
}

// An explorer that forgets the node (its database replaced) gets the node
// registered again, and deliveries go on.
func TestRegisterAgainWhenTheExplorerForgets(t *testing.T) {
	var known atomic.Bool
	var registrations atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/api/v1/nodes":
			known.Store(true)
			registrations.Add(1)
			w.WriteHeader(http.StatusCreated)
		case !known.Load():
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprintf(w, `{"error":"node not registered","code":%q}`, explorer.CodeNotRegistered)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	t.Cleanup(srv.Close)
	c := explorer.NewClient(srv.URL, explorertest.NewKey(t), explorertest.ClientOptions())
	g := newRegistered(c)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { register(ctx, g, fixedCapacity{}, zerolog.Nop()); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "registration", g.ok.Load)

	known.Store(false) // the explorer forgot the node
	err := g.UpdateStats(t.Context(), c.KeyID(), &provision.Stats{})
	if !errors.Is(err, explorer.ErrNotRegistered) || !provision.IsTemporary(err) {
		t.Fatalf("stats to an explorer that forgot the node: %v", err)
	}
	waitFor(t, "a second registration", func() bool { return registrations.Load() == 2 && g.ok.Load() })
	if err := g.UpdateStats(t.Context(), c.KeyID(), &provision.Stats{}); err != nil {
		t.Fatalf("stats after registering again: %v", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 10s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestClockSkewInStatus(t *testing.T) {
	at := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		skew  time.Duration
		shown bool
		hint  string
	}{
		{"in-sync", 2 * time.Second, false, ""},
		{"within-30s", -30 * time.Second, false, ""},
		{"node-behind", 45 * time.Second, true, "45s behind the explorer's; beyond 2m0s the explorer will refuse"},
		{"node-ahead-beyond-max", -5 * time.Minute, true, "5m0s ahead of the explorer's; beyond 2m0s the explorer refuses"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := clockSkew(explorer.ClockSkew{Skew: tt.skew, At: at})
			if (got != nil) != tt.shown {
				t.Fatalf("skew %s: %+v, want shown %v", tt.skew, got, tt.shown)
			}
			if got == nil {
				return
			}
			want := admin.ClockSkew{Seconds: tt.skew.Seconds(), MeasuredAt: at}
			if got.Seconds != want.Seconds || !got.MeasuredAt.Equal(at) || !strings.Contains(got.Hint, tt.hint) || !strings.Contains(got.Hint, "synchronise") {
				t.Fatalf("skew %s: %+v", tt.skew, got)
			}
		})
	}
}
