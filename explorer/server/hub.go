package server

import "sync"

// hub wakes the long-polls held for a node when an event is published to
// it. Each node with waiters has one channel, closed and replaced on
// publish; a node without waiters has no entry.
type hub struct {
	mu    sync.Mutex
	nodes map[string]*waiters
}

type waiters struct {
	ch chan struct{}
	n  int
}

func newHub() *hub { return &hub{nodes: map[string]*waiters{}} }

// subscribe returns a channel closed at the next publish to node, and a
// function the waiter calls when it stops waiting.
func (h *hub) subscribe(node string) (<-chan struct{}, func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	w := h.nodes[node]
	if w == nil {
		w = &waiters{ch: make(chan struct{})}
		h.nodes[node] = w
	}
	w.n++
	return w.ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if w.n--; w.n == 0 && h.nodes[node] == w {
			delete(h.nodes, node)
		}
	}
}

// publish wakes every waiter of node.
func (h *hub) publish(node string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if w := h.nodes[node]; w != nil {
		close(w.ch)
		w.ch = make(chan struct{})
	}
}

// size returns how many nodes have waiters.
func (h *hub) size() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.nodes)
}
