package main

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"sync"

	"github.com/rs/zerolog"

	"github.com/edgeprov/provisiond/cache"
	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/heartbeat"
	"github.com/edgeprov/provisiond/internal/engine"
	"github.com/edgeprov/provisiond/logreq"
	"github.com/edgeprov/provisiond/primitives"
	"github.com/edgeprov/provisiond/provision"
)

var _ provision.HeartbeatSender = (*registered)(nil)

// Heartbeat delivers a heartbeat once the node is registered.
func (g *registered) Heartbeat(ctx context.Context, nodeID string, hb *provision.Heartbeat) error {
	if !g.ok.Load() {
		return errNotRegistered
	}
	return g.check(g.c.Heartbeat(ctx, nodeID, hb))
}

// checkHeartbeat sets cfg's heartbeat interval to its default when unset
// and refuses one outside the bounds a heartbeat may announce.
func checkHeartbeat(cfg *config) error {
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = heartbeat.DefaultInterval
	}
	if d := cfg.Heartbeat; d < provision.MinHeartbeatInterval || d > provision.MaxHeartbeatInterval {
		return fmt.Errorf("--heartbeat %s is not within [%s, %s]", d, provision.MinHeartbeatInterval, provision.MaxHeartbeatInterval)
	}
	return nil
}

// startLifecycle starts the node's heartbeats (into the engine's outbox)
// and the responder to its owners' log requests, owned by wg until ctx
// ends.
func startLifecycle(ctx context.Context, wg *sync.WaitGroup, cfg *config, key ed25519.PrivateKey, nodeID string,
	eng *engine.Engine, client *explorer.Client, store *cache.Store, prims *primitives.Table, log zerolog.Logger) {
	wg.Go(func() {
		err := heartbeat.Run(ctx, heartbeat.Options{NodeID: nodeID, Interval: cfg.Heartbeat, Signer: provision.KeySigner(key),
			Enqueue: eng.EnqueueHeartbeat, BootIDFile: cfg.BootIDFile, Log: log})
		if err != nil {
			log.Error().Err(err).Msg("heartbeats stopped")
		}
	})
	r := logreq.New(logreq.Options{Source: client, NodeID: nodeID, Key: key, Lookup: store.Get,
		Tail: prims.Containers().Tail, Log: log})
	wg.Go(func() { r.Run(ctx) })
}
