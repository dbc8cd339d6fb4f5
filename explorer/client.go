package explorer

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/edgeprov/provisiond/identity"
	"github.com/edgeprov/provisiond/provision"
)

// maxReplySize bounds what the client reads of a reply: a full page of
// events with the largest reservations fits.
const maxReplySize = 64 << 20

// ClientOptions configures a Client. The zero value gives the defaults.
type ClientOptions struct {
	// HTTPClient sends the requests (default: a client on Transport). Leave
	// its Timeout zero: every call sets its own deadline.
	HTTPClient *http.Client
	// Transport is used when HTTPClient is nil (default: a clone of
	// http.DefaultTransport).
	Transport http.RoundTripper
	// PollWait is how long Poll asks the server to hold the request when
	// there is no event (default 30s; the server caps it at MaxWait).
	PollWait time.Duration
	// Timeout bounds one request; a poll gets PollWait + Timeout, so the
	// client never gives up before the server's hold ends (default 30s).
	Timeout time.Duration
	// ReadLimit is the rate of GET requests per second (default 10; rate.Inf: unlimited).
	ReadLimit rate.Limit
	// ReadBurst is the burst of GET requests (default 10).
	ReadBurst int
	// WriteLimit is the rate of POST and PUT requests per second (default 20; rate.Inf: unlimited).
	WriteLimit rate.Limit
	// WriteBurst is the burst of POST and PUT requests (default 20).
	WriteBurst int
	// MaxAttempts is how often one call tries a request that failed with
	// 429, 5xx or a network error (default 3; 1: no retry).
	MaxAttempts int
	// MinBackoff is the first backoff between attempts (default 200ms); it
	// doubles with jitter up to MaxBackoff (default 10s). A Retry-After
	// longer than MaxBackoff ends the call with a temporary error at once.
	MinBackoff, MaxBackoff time.Duration
	// Now is the clock of request timestamps (default time.Now).
	Now func() time.Time
	// Logger receives retry warnings (default: none).
	Logger zerolog.Logger
}

// Client talks to an explorer with signed requests. A node's Client (from
// NewClient) implements provision.Poller and provision.Feedbacker; a user's
// (from NewUserClient) creates, reads and deletes reservations. It is safe
// for concurrent use.
type Client struct {
	base  string
	key   ed25519.PrivateKey
	keyID string
	node  string
	opts  ClientOptions
	hc    *http.Client
	read  *rate.Limiter
	write *rate.Limiter
	log   zerolog.Logger
}

var (
	_ provision.Poller     = (*Client)(nil)
	_ provision.Feedbacker = (*Client)(nil)
)

// NewClient returns the client of a node whose identity is key: requests
// carry its node ID as X-Provisiond-Key. baseURL is the explorer's root
// (http://host:port), without /api/v1.
func NewClient(baseURL string, key ed25519.PrivateKey, opts ClientOptions) *Client {
	pub := key.Public().(ed25519.PublicKey)
	c := newClient(baseURL, key, opts)
	c.node = identity.NodeID(pub)
	c.keyID = c.node
	return c
}

// NewUserClient returns the client of a user whose key is key: requests
// carry the hex public key (the user ID) as X-Provisiond-Key.
func NewUserClient(baseURL string, key ed25519.PrivateKey, opts ClientOptions) *Client {
	c := newClient(baseURL, key, opts)
	c.keyID = identity.UserID(key.Public().(ed25519.PublicKey))
	return c
}

func newClient(baseURL string, key ed25519.PrivateKey, opts ClientOptions) *Client {
	if len(key) != ed25519.PrivateKeySize {
		panic("explorer: NewClient needs an ed25519 private key")
	}
	if opts.PollWait <= 0 {
		opts.PollWait = 30 * time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.ReadLimit == 0 {
		opts.ReadLimit = 10
	}
	if opts.ReadBurst <= 0 {
		opts.ReadBurst = 10
	}
	if opts.WriteLimit == 0 {
		opts.WriteLimit = 20
	}
	if opts.WriteBurst <= 0 {
		opts.WriteBurst = 20
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 3
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 200 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 10 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	hc := opts.HTTPClient
	if hc == nil {
		tr := opts.Transport
		if tr == nil {
			tr = http.DefaultTransport.(*http.Transport).Clone()
		}
		hc = &http.Client{Transport: tr}
	}
	return &Client{
		base:  strings.TrimRight(baseURL, "/"),
		key:   key,
		opts:  opts,
		hc:    hc,
		read:  rate.NewLimiter(opts.ReadLimit, opts.ReadBurst),
		write: rate.NewLimiter(opts.WriteLimit, opts.WriteBurst),
		log:   opts.Logger.With().Str("component", "explorer-client").Logger(),
	}
}

// KeyID returns what the client sends as X-Provisiond-Key: the node ID or
// the user ID.
func (c *Client) KeyID() string { return c.keyID }

// do sends one signed request and decodes a 2xx reply into out (when not
// nil). 429, 5xx and network failures are retried up to MaxAttempts with
// backoff, honouring Retry-After, and end in a provision.Temporary error;
// any other 4xx is a provision.Permanent *APIError.
func (c *Client) do(ctx context.Context, method, path string, in, out any, timeout time.Duration) error {
	op := method + " " + path
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return provision.Permanent(fmt.Errorf("%s: encoding body: %w", op, err))
		}
	}
	lim := c.write
	if method == http.MethodGet {
		lim = c.read
	}
	backoff := c.opts.MinBackoff
	for attempt := 1; ; attempt++ {
		if err := lim.Wait(ctx); err != nil {
			return provision.Temporary(fmt.Errorf("%s: waiting for the rate limiter: %w", op, err))
		}
		retryAfter, err := c.once(ctx, op, method, path, body, out, timeout)
		if err == nil || !provision.IsTemporary(err) || ctx.Err() != nil {
			return err
		}
		if attempt >= c.opts.MaxAttempts || retryAfter > c.opts.MaxBackoff {
			return err
		}
		delay := backoff/2 + rand.N(backoff/2+1)
		delay = max(delay, retryAfter)
		backoff = min(2*backoff, c.opts.MaxBackoff)
		c.log.Warn().Err(err).Dur("retry_in", delay).Int("attempt", attempt).Msg("explorer request failed")
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return provision.Temporary(fmt.Errorf("%s: %w (last failure: %v)", op, ctx.Err(), err))
		case <-t.C:
		}
	}
}

// once sends one attempt; it returns the server's Retry-After, if any.
func (c *Client) once(ctx context.Context, op, method, path string, body []byte, out any, timeout time.Duration) (time.Duration, error) {
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return 0, provision.Permanent(fmt.Errorf("%s: %w", op, err))
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if err := SignRequest(req, c.key, c.keyID, body, c.opts.Now()); err != nil {
		return 0, provision.Temporary(fmt.Errorf("%s: %w", op, err))
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, provision.Temporary(fmt.Errorf("%s: %w", op, err))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxReplySize))
	if err != nil {
		return 0, provision.Temporary(fmt.Errorf("%s: reading reply: %w", op, err))
	}
	if resp.StatusCode/100 == 2 {
		if out == nil || len(raw) == 0 {
			return 0, nil
		}
		if dec, ok := out.(interface{ decodeReply([]byte) error }); ok {
			err = dec.decodeReply(raw)
		} else {
			err = json.Unmarshal(raw, out)
		}
		if err != nil {
			return 0, provision.Temporary(fmt.Errorf("%s: %w: %w", op, ErrBadReply, err))
		}
		return 0, nil
	}
	apiErr := &APIError{Status: resp.StatusCode, Op: op, Message: http.StatusText(resp.StatusCode)}
	var er ErrorReply
	if json.Unmarshal(raw, &er) == nil && er.Error != "" {
		apiErr.Message = er.Error
	}
	apiErr.RetryAfter = retryAfter(resp.Header.Get("Retry-After"), c.opts.Now())
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
		return apiErr.RetryAfter, provision.Temporary(apiErr)
	}
	return 0, provision.Permanent(apiErr)
}

// retryAfter parses a Retry-After header: seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && secs >= 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}

// Register registers the node with the explorer; registering again is
// harmless.
func (c *Client) Register(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/api/v1/nodes", RegisterRequest{NodeID: c.node}, nil, c.opts.Timeout)
}

// PutCapacity reports the node's capacity.
func (c *Client) PutCapacity(ctx context.Context, capacity provision.Capacity) error {
	return c.do(ctx, http.MethodPut, "/api/v1/nodes/"+url.PathEscape(c.node)+"/capacity", capacity, nil, c.opts.Timeout)
}

// Poll returns the node's events after from, waiting up to PollWait for
// one, and the cursor to ask from next. An event whose reservation does not
// decode is returned with Err set (a permanent error wrapping ErrBadEvent)
// and a Reservation holding whatever ID could be read, so the caller can
// answer it and move on.
func (c *Client) Poll(ctx context.Context, from uint64) ([]provision.Event, uint64, error) {
	path := fmt.Sprintf("/api/v1/nodes/%s/events?from=%d&wait=%s", url.PathEscape(c.node), from, c.opts.PollWait)
	reply := &eventsReply{from: from}
	if err := c.do(ctx, http.MethodGet, path, nil, reply, c.opts.PollWait+c.opts.Timeout); err != nil {
		return nil, from, err
	}
	return reply.events, reply.next, nil
}

// eventsReply decodes an events reply for Poll.
type eventsReply struct {
	from   uint64
	events []provision.Event
	next   uint64
}

func (e *eventsReply) decodeReply(raw []byte) error {
	var err error
	e.events, e.next, err = decodeEvents(raw, e.from)
	return err
}

// decodeEvents decodes an events reply to a poll from cursor from, one
// event at a time. The reply must list events in increasing sequence order
// after from, and next must not go back.
func decodeEvents(raw []byte, from uint64) ([]provision.Event, uint64, error) {
	var reply EventsReply
	if err := json.Unmarshal(raw, &reply); err != nil {
		return nil, from, err
	}
	last := from
	events := make([]provision.Event, 0, len(reply.Events))
	for _, we := range reply.Events {
		if we.Seq <= last {
			return nil, from, fmt.Errorf("event %d after %d: sequence numbers must increase", we.Seq, last)
		}
		last = we.Seq
		events = append(events, decodeEvent(we))
	}
	if reply.Next < last {
		return nil, from, fmt.Errorf("next %d is before the last event %d", reply.Next, last)
	}
	return events, reply.Next, nil
}

func decodeEvent(we WireEvent) provision.Event {
	ev := provision.Event{Seq: we.Seq}
	var r provision.Reservation
	err := json.Unmarshal(we.Reservation, &r)
	if err == nil && (len(we.Reservation) == 0 || bytes.Equal(bytes.TrimSpace(we.Reservation), []byte("null"))) {
		err = errors.New("no reservation")
	}
	if err == nil {
		ev.Reservation = &r
		return ev
	}
	var partial struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(we.Reservation, &partial) // best effort: the ID lets the node answer
	ev.Reservation = &provision.Reservation{ID: partial.ID}
	ev.Err = provision.Permanent(fmt.Errorf("%w: seq %d: %v", ErrBadEvent, we.Seq, err))
	return ev
}

// Feedback delivers a signed result. The explorer verifies it against the
// node's key; a repeat is acknowledged.
func (c *Client) Feedback(ctx context.Context, nodeID string, r *provision.Result) error {
	path := "/api/v1/nodes/" + url.PathEscape(nodeID) + "/results/" + url.PathEscape(r.ID)
	return c.do(ctx, http.MethodPut, path, r, nil, c.opts.Timeout)
}

// UpdateStats delivers the node's stats.
func (c *Client) UpdateStats(ctx context.Context, nodeID string, s *provision.Stats) error {
	return c.do(ctx, http.MethodPut, "/api/v1/nodes/"+url.PathEscape(nodeID)+"/stats", s, nil, c.opts.Timeout)
}

// Node returns what the explorer knows of a node.
func (c *Client) Node(ctx context.Context, nodeID string) (*NodeInfo, error) {
	var info NodeInfo
	if err := c.do(ctx, http.MethodGet, "/api/v1/nodes/"+url.PathEscape(nodeID), nil, &info, c.opts.Timeout); err != nil {
		return nil, err
	}
	return &info, nil
}

// CreateReservation submits r, which its owner has signed
// (Reservation.Sign), and sets r.ID to the ID the explorer assigned.
func (c *Client) CreateReservation(ctx context.Context, r *provision.Reservation) (string, error) {
	var reply CreateReply
	if err := c.do(ctx, http.MethodPost, "/api/v1/reservations", r, &reply, c.opts.Timeout); err != nil {
		return "", err
	}
	if reply.ID == "" {
		return "", provision.Temporary(fmt.Errorf("creating reservation: %w: no id", ErrBadReply))
	}
	r.ID = reply.ID
	return reply.ID, nil
}

// GetReservation returns a reservation with the node's latest signed
// result (not verified here: see provision.Result.Verify).
func (c *Client) GetReservation(ctx context.Context, id string) (*provision.Reservation, error) {
	var r provision.Reservation
	if err := c.do(ctx, http.MethodGet, "/api/v1/reservations/"+url.PathEscape(id), nil, &r, c.opts.Timeout); err != nil {
		return nil, err
	}
	return &r, nil
}

// ListReservations returns the reservations of user (the client's own user
// ID when empty), oldest first, with their results.
func (c *Client) ListReservations(ctx context.Context, user string) ([]*provision.Reservation, error) {
	if user == "" {
		user = hex.EncodeToString(c.key.Public().(ed25519.PublicKey))
	}
	var reply ReservationsReply
	if err := c.do(ctx, http.MethodGet, "/api/v1/reservations?user="+url.QueryEscape(user), nil, &reply, c.opts.Timeout); err != nil {
		return nil, err
	}
	return reply.Reservations, nil
}

// DeleteReservation asks for the early deletion of reservation id: it
// fetches the reservation, signs the delete challenge with the client's key
// (which must be the owner's) and submits it. It returns the reservation as
// the explorer relays it to the node.
func (c *Client) DeleteReservation(ctx context.Context, id string) (*provision.Reservation, error) {
	r, err := c.GetReservation(ctx, id)
	if err != nil {
		return nil, err
	}
	r.Result = nil
	r.SignDelete(c.key)
	var out provision.Reservation
	req := DeleteRequest{ID: id, DeleteSignature: r.DeleteSignature}
	if err := c.do(ctx, http.MethodPost, "/api/v1/reservations/"+url.PathEscape(id)+"/delete", req, &out, c.opts.Timeout); err != nil {
		return nil, err
	}
	return &out, nil
}
