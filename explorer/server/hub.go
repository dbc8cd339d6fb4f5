package server

import "sync"

// hub wakes the long-polls held on a topic (NodeTopic: a node's event
// stream; ReservationTopic and UserTopic: what users watch) when
// something is published on it. Each topic with waiters has
// one channel, closed and replaced on publish; a topic without waiters has
// no entry.
type hub struct {
	mu     sync.Mutex
	topics map[string]*waiters
}

type waiters struct {
	ch chan struct{}
	n  int
}

func newHub() *hub { return &hub{topics: map[string]*waiters{}} }

// subscribe returns a channel closed at the next publish to topic, and a
// function the waiter calls when it stops waiting.
func (h *hub) subscribe(topic string) (<-chan struct{}, func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	w := h.topics[topic]
	if w == nil {
		w = &waiters{ch: make(chan struct{})}
		h.topics[topic] = w
	}
	w.n++
	return w.ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if w.n--; w.n == 0 && h.topics[topic] == w {
			delete(h.topics, topic)
		}
	}
}

// publish wakes every waiter of topic.
func (h *hub) publish(topic string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if w := h.topics[topic]; w != nil {
		close(w.ch)
		w.ch = make(chan struct{})
	}
}

// publishAll wakes every waiter of every topic: the store's fallback when
// notifications may have been missed.
func (h *hub) publishAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, w := range h.topics {
		close(w.ch)
		w.ch = make(chan struct{})
	}
}

// size returns how many topics have waiters.
func (h *hub) size() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.topics)
}
