package explorer

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/edgeprov/provisiond/identity"
	"github.com/edgeprov/provisiond/internal/backoff"
	"github.com/edgeprov/provisiond/provision"
)

// maxUserReplySize bounds the replies of the user's calls, which list or
// return whole reservations with their results (provctl, not the daemon).
const maxUserReplySize = 64 << 20

// maxResponseHeaderBytes bounds the headers of a reply on the client's own
// transport.
const maxResponseHeaderBytes = 64 << 10

// ClientOptions configures a Client. The zero value gives the defaults.
type ClientOptions struct {
	// HTTPClient sends the requests (default: a client on Transport). Leave
	// its Timeout zero: every call sets its own deadline.
	HTTPClient *http.Client
	// Transport is used when HTTPClient is nil (default: a clone of
	// http.DefaultTransport that reads at most 64 KiB of reply headers).
	Transport http.RoundTripper
	// PollWait is how long Poll asks the server to hold the request when
	// there is no event (default 30s; the server caps it at MaxWait).
	PollWait time.Duration
	// Timeout bounds one request, reading its reply included; a poll gets
	// PollWait + Timeout, so the client never gives up before the server's
	// hold ends (default 30s). An explorer that sends headers and then
	// nothing, or drips its body, fails the call when it passes.
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

	// singleUntil (unix ns) is set when the explorer answered a batch of
	// results with 404 or 405 (an explorer older than the batch
	// endpoint): until then, FeedbackBatch sends one result per request.
	singleUntil atomic.Int64

	// skew is the explorer's clock against ours, from the Date header of
	// its last reply.
	skew atomic.Pointer[ClockSkew]
}

// ClockSkew is how far the explorer's clock (the Date header of its last
// reply) was from the client's when the reply came.
type ClockSkew struct {
	// Skew is the explorer's time minus the client's: positive when the
	// node's clock is behind. Date has a resolution of one second, so
	// Skew is within half a second of the truth plus the reply's latency.
	Skew time.Duration
	// At is when the reply came, by the client's clock.
	At time.Time
}

var (
	_ provision.Poller          = (*Client)(nil)
	_ provision.Feedbacker      = (*Client)(nil)
	_ provision.BatchFeedbacker = (*Client)(nil)
)

// batchRetry is how long FeedbackBatch sends results one at a time after
// an explorer did not know the batch endpoint, before it tries it again.
const batchRetry = 10 * time.Minute

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
			t := http.DefaultTransport.(*http.Transport).Clone()
			t.MaxResponseHeaderBytes = maxResponseHeaderBytes
			tr = t
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

// ClockSkew returns the explorer's clock against the client's, as of the
// last reply that carried a Date header; false before any.
func (c *Client) ClockSkew() (ClockSkew, bool) {
	if s := c.skew.Load(); s != nil {
		return *s, true
	}
	return ClockSkew{}, false
}

// noteDate records the skew of a reply's Date header received at now.
func (c *Client) noteDate(date string, now time.Time) {
	if date == "" {
		return
	}
	t, err := http.ParseTime(date)
	if err != nil {
		return
	}
	// Date is cut to the second: the explorer's clock was in [t, t+1s).
	c.skew.Store(&ClockSkew{Skew: t.Add(500 * time.Millisecond).Sub(now), At: now})
}

// do sends one signed request and decodes a 2xx reply of at most limit
// bytes into out (when not nil). Failures are classified by classify and
// temporary ones retried up to MaxAttempts with backoff, honouring
// Retry-After.
func (c *Client) do(ctx context.Context, method, path string, in, out any, timeout time.Duration, limit int64) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return provision.Permanent(fmt.Errorf("%s %s: encoding body: %w", method, path, err))
		}
	}
	return c.doBody(ctx, method, path, body, out, timeout, limit)
}

// doBody is do with the body already encoded (nil: none). Every attempt
// waits for one token of the read (GET) or write limiter.
func (c *Client) doBody(ctx context.Context, method, path string, body []byte, out any, timeout time.Duration, limit int64) error {
	op := method + " " + path
	lim := c.write
	if method == http.MethodGet {
		lim = c.read
	}
	policy := backoff.Policy{Base: c.opts.MinBackoff, Max: c.opts.MaxBackoff}
	for attempt := 1; ; attempt++ {
		if err := lim.Wait(ctx); err != nil {
			return provision.Temporary(fmt.Errorf("%s: waiting for the rate limiter: %w", op, err))
		}
		retryAfter, err := c.once(ctx, op, method, path, body, out, timeout, limit)
		if err == nil || !provision.IsTemporary(err) || ctx.Err() != nil {
			return err
		}
		if attempt >= c.opts.MaxAttempts || retryAfter > c.opts.MaxBackoff {
			return err
		}
		delay := max(policy.Delay(attempt), retryAfter)
		c.log.Warn().Err(err).Dur("retry_in", delay).Int("attempt", attempt).Msg("explorer request failed")
		if !backoff.Sleep(ctx, delay) {
			return provision.Temporary(fmt.Errorf("%s: %w (last failure: %v)", op, ctx.Err(), err))
		}
	}
}

// once sends one attempt; it returns the server's Retry-After, if any. The
// whole attempt, reading the reply included, runs under timeout; a 2xx
// body larger than limit, or a refusal's beyond MaxErrorSize, is not read
// further.
func (c *Client) once(ctx context.Context, op, method, path string, body []byte, out any, timeout time.Duration, limit int64) (time.Duration, error) {
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
	c.noteDate(resp.Header.Get("Date"), c.opts.Now())
	if resp.StatusCode/100 == 2 {
		raw, err := readReply(resp, limit)
		if err != nil {
			return 0, provision.Temporary(fmt.Errorf("%s: reading reply: %w", op, err))
		}
		// A reply decoder judges every body, an empty one too: a 200
		// without a body (a proxy's) must not read as a page of no
		// events at cursor 0, nor as a batch with no statuses.
		if dec, ok := out.(interface{ decodeReply([]byte) error }); ok {
			err = dec.decodeReply(raw)
		} else if out != nil && len(raw) > 0 {
			err = json.Unmarshal(raw, out)
		}
		if err != nil {
			return 0, provision.Temporary(fmt.Errorf("%s: %w: %w", op, ErrBadReply, err))
		}
		return 0, nil
	}
	apiErr := refusal(resp, op)
	apiErr.RetryAfter = retryAfter(resp.Header.Get("Retry-After"), c.opts.Now())
	err = classify(apiErr)
	if provision.IsTemporary(err) {
		return apiErr.RetryAfter, err
	}
	return 0, err
}

// readReply reads a 2xx body of at most limit bytes: a larger one (by its
// Content-Length or as it streams) fails with ErrReplyTooLarge after
// reading at most limit+1 bytes. Its buffer grows by doubling up to
// limit+1, so a reply costs at most twice the limit in allocations.
func readReply(resp *http.Response, limit int64) ([]byte, error) {
	if resp.ContentLength > limit {
		return nil, fmt.Errorf("%w: %d bytes announced, at most %d", ErrReplyTooLarge, resp.ContentLength, limit)
	}
	size := int64(512)
	if resp.ContentLength >= 0 {
		size = resp.ContentLength + 1 // room to see the end
	}
	buf := make([]byte, 0, min(size, limit+1))
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) > limit {
				return nil, fmt.Errorf("%w: more than %d bytes", ErrReplyTooLarge, limit)
			}
			buf = slices.Grow(buf, int(min(int64(cap(buf)), limit+1-int64(cap(buf)))))
		}
		n, err := resp.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			if int64(len(buf)) > limit {
				return nil, fmt.Errorf("%w: more than %d bytes", ErrReplyTooLarge, limit)
			}
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// refusal reads a non-2xx reply into an *APIError: the explorer's message
// and code when the body (at most MaxErrorSize of it) is its JSON refusal,
// else the status text, marked Foreign.
func refusal(resp *http.Response, op string) *APIError {
	e := &APIError{Status: resp.StatusCode, Op: op, Message: http.StatusText(resp.StatusCode)}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, MaxErrorSize))
	var er ErrorReply
	if err == nil && json.Unmarshal(raw, &er) == nil && er.Error != "" {
		e.Message, e.Code = er.Error, er.Code
		return e
	}
	e.Foreign = true
	what := "an empty body"
	switch {
	case err != nil:
		what = "a body that failed to read: " + err.Error()
	case len(raw) > 0:
		what = "a body that is not the explorer's JSON refusal"
		if ct := resp.Header.Get("Content-Type"); ct != "" {
			what += " (" + short(ct, 64) + ")"
		}
	}
	e.Message += " with " + what
	return e
}

// short cuts s to at most n bytes.
func short(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// classify wraps a refusal of a whole request in its retry class: 408,
// 425, 429 and 5xx are temporary, and so is any status whose body is not
// the explorer's JSON refusal (a proxy's error page), and the explorer's
// CodeNotRegistered (the node registers again); any other refusal of the
// explorer is permanent for the call. The node's deliveries of
// results and stats make every refusal of a request temporary (see
// delivery): only a verdict on one result may drop it.
func classify(e *APIError) error {
	// 408: the body did not reach the explorer in time, a matter of the
	// connection, not of the request.
	switch {
	case e.Foreign, e.Code == CodeNotRegistered, e.Status >= 500,
		e.Status == http.StatusRequestTimeout, e.Status == http.StatusTooEarly, e.Status == http.StatusTooManyRequests:
		return provision.Temporary(e)
	}
	return provision.Permanent(e)
}

// delivery returns the error of a delivery request (results, stats) as
// temporary whatever the request's refusal: a 401, a 403, a 404 or a
// reset is the node's or the path's trouble, never the result's, and the
// outbox retries it until it is delivered. A refusal of one result in a
// batch reply is judged apart (classifyResult).
func delivery(err error) error {
	if err == nil || provision.IsTemporary(err) {
		return err
	}
	return provision.Temporary(err)
}

// classifyResult wraps the explorer's refusal of one result of a batch in
// its class: the verdicts on the result itself are permanent
// provision.Refusals (400 malformed, 403 bad signature or another node's,
// 404 unknown reservation, 409 digest conflict, 410 gone, 413 too large,
// 422 unprocessable); anything else (401, 408, 429, 5xx, a code this
// client does not know) is temporary and retried.
func classifyResult(e *APIError) error {
	reason := ""
	switch e.Status {
	case http.StatusBadRequest:
		reason = "malformed"
	case http.StatusForbidden:
		reason = "forbidden"
	case http.StatusNotFound:
		reason = "unknown-reservation"
	case http.StatusConflict:
		reason = "digest-conflict"
	case http.StatusGone:
		reason = "gone"
	case http.StatusRequestEntityTooLarge:
		reason = "too-large"
	case http.StatusUnprocessableEntity:
		reason = "unprocessable"
	default:
		return provision.Temporary(e)
	}
	return provision.Permanent(&provision.Refusal{Reason: reason, Err: e})
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
	return c.do(ctx, http.MethodPost, "/api/v1/nodes", RegisterRequest{NodeID: c.node}, nil, c.opts.Timeout, MaxReplySize)
}

// PutCapacity reports the node's capacity.
func (c *Client) PutCapacity(ctx context.Context, capacity provision.Capacity) error {
	return c.do(ctx, http.MethodPut, "/api/v1/nodes/"+url.PathEscape(c.node)+"/capacity", capacity, nil, c.opts.Timeout, MaxReplySize)
}

// Poll returns the node's events after from, waiting up to PollWait for
// one, and the cursor to ask from next. An event whose reservation does not
// decode is returned with Err set (a permanent error wrapping ErrBadEvent)
// and a Reservation holding whatever ID could be read, so the caller can
// answer it and move on. The reply is read up to MaxPageSize bytes within
// PollWait + Timeout; a larger or slower one is a temporary error.
func (c *Client) Poll(ctx context.Context, from uint64) ([]provision.Event, uint64, error) {
	path := fmt.Sprintf("/api/v1/nodes/%s/events?from=%d&wait=%s", url.PathEscape(c.node), from, c.opts.PollWait)
	reply := &eventsReply{from: from}
	if err := c.do(ctx, http.MethodGet, path, nil, reply, c.opts.PollWait+c.opts.Timeout, MaxPageSize); err != nil {
		var apiErr *APIError
		if errors.As(err, &apiErr) && apiErr.Status == http.StatusGone {
			err = fmt.Errorf("%w: %w", ErrCursorGone, err) // reconcile from State
		}
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
	if we.Oversized > 0 {
		err = fmt.Errorf("the reservation takes %d bytes of JSON, more than %d: the explorer relays only its id", we.Oversized, MaxEventSize)
	}
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
// node's key; a repeat is acknowledged. Every failure of the request is
// temporary: the status of a request of its own cannot tell a verdict on
// the result from a refusal of the request (a proxy's 403, an explorer
// that forgot the node), so only FeedbackBatch's per-result statuses drop
// a result. A result that cannot be sent at all (it does not encode, or
// is larger than MaxBodySize) is a permanent Refusal without a request.
func (c *Client) Feedback(ctx context.Context, nodeID string, r *provision.Result) error {
	body, err := json.Marshal(r)
	if err != nil {
		return provision.Permanent(&provision.Refusal{Reason: "unencodable", Err: fmt.Errorf("encoding result %s: %w", r.ID, err)})
	}
	if len(body) > MaxBodySize {
		return provision.Permanent(&provision.Refusal{Reason: "too-large",
			Err: fmt.Errorf("result %s: %d bytes of JSON, more than a request may carry (%d)", r.ID, len(body), MaxBodySize)})
	}
	path := "/api/v1/nodes/" + url.PathEscape(nodeID) + "/results/" + url.PathEscape(r.ID)
	return delivery(c.doBody(ctx, http.MethodPut, path, body, nil, c.opts.Timeout, MaxReplySize))
}

// FeedbackBatch delivers signed results with as few requests as it can:
// POST /api/v1/nodes/{node}/results with up to MaxBatchResults results and
// MaxBatchBodySize bytes each, in order. The explorer checks and stores
// each result as Feedback's request would, all of a request in one
// transaction.
//
// errs has one entry per result: nil when the explorer stored or already
// held it; otherwise the explorer's verdict on that result alone,
// wrapping an *APIError with its status and message: a permanent
// provision.Refusal for a refusal of the result itself (see
// classifyResult: a bad signature, an unknown reservation, a digest
// conflict), temporary for anything else (429, 5xx). A result that cannot
// be sent at all (it does not encode, or is larger than a batch body) gets
// a permanent Refusal ("too-large", "unencodable") without a request.
//
// err is set, and errs nil, when the first request failed as a whole; it
// is always temporary (see delivery): a refusal of the request (401, 403,
// 5xx, a proxy's page, a reset, a timeout, a reply that is not a
// well-formed batch reply) judges no result. 429, 5xx and network errors
// are retried within the call up to MaxAttempts first. When a later
// request of the same call fails, its results and those after it get that
// error as a temporary one, so the caller retries them.
//
// Each request takes one token of the write limiter, like every other
// call: the limiter bounds requests, which is what costs the explorer (a
// request signature check, a transaction and its fsync); a caller that
// wants to pace results paces them itself (engine.Options.OutboxRate).
//
// An explorer that does not know the batch endpoint (404 or 405) gets the
// results one at a time through Feedback, for this call and the next ten
// minutes.
func (c *Client) FeedbackBatch(ctx context.Context, nodeID string, rs []*provision.Result) ([]error, error) {
	errs := make([]error, len(rs))
	if len(rs) == 0 {
		return errs, nil
	}
	if c.opts.Now().UnixNano() < c.singleUntil.Load() {
		return c.feedbackEach(ctx, nodeID, rs, errs), nil
	}
	path := "/api/v1/nodes/" + url.PathEscape(nodeID) + "/results"
	chunks := chunkResults(rs, errs, MaxBatchResults, MaxBatchBodySize)
	for k, ch := range chunks {
		reply := &resultsReply{ids: ch.ids, op: http.MethodPost + " " + path}
		err := delivery(c.doBody(ctx, http.MethodPost, path, ch.body(), reply, c.opts.Timeout, MaxReplySize))
		if err == nil {
			for j, i := range ch.index {
				errs[i] = reply.errs[j]
			}
			continue
		}
		var apiErr *APIError
		if k == 0 && errors.As(err, &apiErr) && (apiErr.Status == http.StatusNotFound || apiErr.Status == http.StatusMethodNotAllowed) {
			c.singleUntil.Store(c.opts.Now().Add(batchRetry).UnixNano())
			c.log.Warn().Err(err).Msg("the explorer has no batch results endpoint; sending results one at a time")
			return c.feedbackEach(ctx, nodeID, rs, errs), nil
		}
		if k == 0 {
			return nil, err
		}
		for _, later := range chunks[k:] {
			for j, i := range later.index {
				errs[i] = provision.Temporary(fmt.Errorf("result %s not delivered: %w", later.ids[j], err))
			}
		}
		break
	}
	return errs, nil
}

// feedbackEach delivers every rs[i] whose errs[i] is nil through Feedback
// and sets errs[i] to its outcome.
func (c *Client) feedbackEach(ctx context.Context, nodeID string, rs []*provision.Result, errs []error) []error {
	for i, r := range rs {
		if errs[i] == nil {
			errs[i] = c.Feedback(ctx, nodeID, r)
		}
	}
	return errs
}

// resultsChunk is the part of a batch that one request carries.
type resultsChunk struct {
	index []int    // positions in the caller's slice
	ids   []string // the results' IDs
	enc   [][]byte // the results' JSON
	size  int      // the body's size
}

// resultsFrame is the body of a request without its results.
const resultsFrame = len(`{"results":[]}`)

// body returns the request body of the chunk.
func (ch *resultsChunk) body() []byte {
	b := make([]byte, 0, ch.size)
	b = append(b, `{"results":[`...)
	for j, e := range ch.enc {
		if j > 0 {
			b = append(b, ',')
		}
		b = append(b, e...)
	}
	return append(b, "]}"...)
}

// chunkResults encodes rs and splits them, in order, into chunks of at
// most maxCount results and maxBody bytes of body. A result that does not
// encode or does not fit a body alone gets a permanent error in errs and
// is left out.
func chunkResults(rs []*provision.Result, errs []error, maxCount, maxBody int) []*resultsChunk {
	var chunks []*resultsChunk
	var cur *resultsChunk
	for i, r := range rs {
		enc, err := json.Marshal(r)
		if err != nil {
			errs[i] = provision.Permanent(&provision.Refusal{Reason: "unencodable", Err: fmt.Errorf("encoding result %d: %w", i, err)})
			continue
		}
		if resultsFrame+len(enc) > maxBody {
			errs[i] = provision.Permanent(&provision.Refusal{Reason: "too-large",
				Err: fmt.Errorf("result %s: %d bytes of JSON do not fit a request of at most %d", r.ID, len(enc), maxBody)})
			continue
		}
		if cur == nil || len(cur.enc) == maxCount || cur.size+1+len(enc) > maxBody {
			cur = &resultsChunk{size: resultsFrame - 1} // the first result needs no comma
			chunks = append(chunks, cur)
		}
		cur.index = append(cur.index, i)
		cur.ids = append(cur.ids, wireString(r.ID))
		cur.enc = append(cur.enc, enc)
		cur.size += 1 + len(enc)
	}
	return chunks
}

// wireString returns s as the receiver of its JSON encoding reads it:
// encoding/json replaces invalid UTF-8.
func wireString(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	b, _ := json.Marshal(s)
	_ = json.Unmarshal(b, &s)
	return s
}

// resultsReply decodes the reply to a batch of results for FeedbackBatch.
type resultsReply struct {
	ids  []string // the IDs sent, in order
	op   string   // names the request in errors
	errs []error
}

func (r *resultsReply) decodeReply(raw []byte) error {
	var err error
	r.errs, err = decodeResultsReply(raw, r.ids, r.op)
	return err
}

// decodeResultsReply decodes the reply to a batch of results with the
// given IDs, sent by request op, into one error per result: nil for a 2xx
// code, else an *APIError classified by classifyResult. The reply must
// hold one status per result, in order, each naming the ID sent and a
// code between 200 and 599; a reply that does not is an error of the
// whole request (temporary), never a verdict on a result.
func decodeResultsReply(raw []byte, ids []string, op string) ([]error, error) {
	var reply ResultsReply
	if err := json.Unmarshal(raw, &reply); err != nil {
		return nil, err
	}
	if len(reply.Results) != len(ids) {
		return nil, fmt.Errorf("%d statuses for %d results", len(reply.Results), len(ids))
	}
	errs := make([]error, len(ids))
	for i, st := range reply.Results {
		if st.ID != ids[i] {
			return nil, fmt.Errorf("status %d names result %q, not %q", i, st.ID, ids[i])
		}
		if st.Code < 200 || st.Code > 599 {
			return nil, fmt.Errorf("status %d of result %q: code %d", i, st.ID, st.Code)
		}
		if st.Code/100 == 2 {
			continue
		}
		msg := st.Error
		if msg == "" {
			msg = http.StatusText(st.Code)
		}
		errs[i] = classifyResult(&APIError{Status: st.Code, Message: msg, Op: op + ": result " + st.ID})
	}
	return errs, nil
}

// UpdateStats delivers the node's stats. Like Feedback, every failure is
// temporary: the outbox keeps the latest stats until they are delivered.
func (c *Client) UpdateStats(ctx context.Context, nodeID string, s *provision.Stats) error {
	return delivery(c.do(ctx, http.MethodPut, "/api/v1/nodes/"+url.PathEscape(nodeID)+"/stats", s, nil, c.opts.Timeout, MaxReplySize))
}

// Node returns what the explorer knows of a node.
func (c *Client) Node(ctx context.Context, nodeID string) (*NodeInfo, error) {
	var info NodeInfo
	if err := c.do(ctx, http.MethodGet, "/api/v1/nodes/"+url.PathEscape(nodeID), nil, &info, c.opts.Timeout, MaxReplySize); err != nil {
		return nil, err
	}
	return &info, nil
}

// CreateReservation submits r, which its owner has signed
// (Reservation.Sign), and sets r.ID to the ID the explorer assigned.
func (c *Client) CreateReservation(ctx context.Context, r *provision.Reservation) (string, error) {
	var reply CreateReply
	if err := c.do(ctx, http.MethodPost, "/api/v1/reservations", r, &reply, c.opts.Timeout, MaxReplySize); err != nil {
		return "", err
	}
	if reply.ID == "" {
		return "", provision.Temporary(fmt.Errorf("creating reservation: %w: no id", ErrBadReply))
	}
	r.ID = reply.ID
	return reply.ID, nil
}

// UpdateReservation submits r, the owner-signed next version of the
// reservation r.ID (see provision.CheckVersion), with PUT
// /api/v1/reservations/{id}. The node applies it or refuses it in a
// signed result, as for a new reservation.
func (c *Client) UpdateReservation(ctx context.Context, r *provision.Reservation) error {
	var reply CreateReply
	if err := c.do(ctx, http.MethodPut, "/api/v1/reservations/"+url.PathEscape(r.ID), r, &reply, c.opts.Timeout, MaxReplySize); err != nil {
		return err
	}
	if reply.ID != r.ID {
		return provision.Temporary(fmt.Errorf("updating reservation %s: %w: reply names %q", r.ID, ErrBadReply, reply.ID))
	}
	return nil
}

// GetReservation returns a reservation with the node's latest signed
// result (not verified here: see provision.Result.Verify).
func (c *Client) GetReservation(ctx context.Context, id string) (*provision.Reservation, error) {
	var r provision.Reservation
	if err := c.do(ctx, http.MethodGet, "/api/v1/reservations/"+url.PathEscape(id), nil, &r, c.opts.Timeout, maxUserReplySize); err != nil {
		return nil, err
	}
	return &r, nil
}

// MaxListed is the most reservations ListReservations collects, over all
// the pages it follows.
const MaxListed = 10000

// ListReservationsPage returns one page of the reservations of user (the
// client's own user ID when empty), oldest first, with their results:
// those after cursor ("" for the first page), at most limit of them (0:
// the explorer's default page size). reply.Next is the cursor of the next
// page, "" after the last.
func (c *Client) ListReservationsPage(ctx context.Context, user, cursor string, limit int) (*ReservationsReply, error) {
	if user == "" {
		user = hex.EncodeToString(c.key.Public().(ed25519.PublicKey))
	}
	q := url.Values{"user": {user}}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var reply ReservationsReply
	if err := c.do(ctx, http.MethodGet, "/api/v1/reservations?"+q.Encode(), nil, &reply, c.opts.Timeout, maxUserReplySize); err != nil {
		return nil, err
	}
	return &reply, nil
}

// ListReservations returns the reservations of user (the client's own user
// ID when empty), oldest first, with their results, following the pages
// of the explorer. It stops after MaxListed reservations: more is an error
// wrapping ErrTruncated, returned with the first MaxListed.
func (c *Client) ListReservations(ctx context.Context, user string) ([]*provision.Reservation, error) {
	var all []*provision.Reservation
	cursor := ""
	for {
		reply, err := c.ListReservationsPage(ctx, user, cursor, 0)
		if err != nil {
			return nil, err
		}
		all = append(all, reply.Reservations...)
		if len(all) > MaxListed {
			return all[:MaxListed], fmt.Errorf("%w: more than %d reservations (ListReservationsPage reads them all)", ErrTruncated, MaxListed)
		}
		if reply.Next == "" {
			return all, nil
		}
		if reply.Next == cursor || len(reply.Reservations) == 0 {
			return nil, provision.Permanent(fmt.Errorf("listing reservations: %w: the explorer's next page %q does not advance", ErrBadReply, reply.Next))
		}
		cursor = reply.Next
	}
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
	if err := c.do(ctx, http.MethodPost, "/api/v1/reservations/"+url.PathEscape(id)+"/delete", req, &out, c.opts.Timeout, maxUserReplySize); err != nil {
		return nil, err
	}
	return &out, nil
}

// State returns the explorer's full-state snapshot of the node: its active
// reservations (ID, digest, version) and the sequence number they are as
// of. A node reconciles from it when Poll fails with ErrCursorGone, and
// compares it with what it holds to find drift.
func (c *Client) State(ctx context.Context) (*NodeState, error) {
	reply := &stateReply{node: c.node}
	if err := c.do(ctx, http.MethodGet, "/api/v1/nodes/"+url.PathEscape(c.node)+"/state", nil, reply, c.opts.Timeout, MaxStateSize); err != nil {
		return nil, err
	}
	return reply.state, nil
}

// stateReply decodes a state reply for State.
type stateReply struct {
	node  string
	state *NodeState
}

func (s *stateReply) decodeReply(raw []byte) error {
	var err error
	s.state, err = decodeState(raw, s.node)
	return err
}

// decodeState decodes node's state snapshot and checks its shape: it names
// node, its low-water mark is not past its seq, and its reservations have
// IDs in increasing order (none twice) and sha256 digests in hex.
func decodeState(raw []byte, node string) (*NodeState, error) {
	var st NodeState
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, err
	}
	if st.NodeID != node {
		return nil, fmt.Errorf("the snapshot is of node %q, not %q", st.NodeID, node)
	}
	if st.Low > st.Seq {
		return nil, fmt.Errorf("low-water mark %d past the seq %d", st.Low, st.Seq)
	}
	for i, e := range st.Reservations {
		if e.ID == "" || (i > 0 && e.ID <= st.Reservations[i-1].ID) {
			return nil, fmt.Errorf("reservation %d: ID %q empty or out of order", i, e.ID)
		}
		if d, err := hex.DecodeString(e.Digest); err != nil || len(d) != sha256.Size {
			return nil, fmt.Errorf("reservation %s: digest %q is not a hex sha256", e.ID, e.Digest)
		}
	}
	if st.Reservations == nil {
		st.Reservations = []StateEntry{}
	}
	return &st, nil
}

var _ provision.Snapshotter = (*Client)(nil)

// Snapshot returns State as the node's provision.Snapshotter does.
func (c *Client) Snapshot(ctx context.Context) (*provision.Snapshot, error) {
	st, err := c.State(ctx)
	if err != nil {
		return nil, err
	}
	snap := &provision.Snapshot{Seq: st.Seq, Reservations: make([]provision.SnapshotEntry, len(st.Reservations))}
	for i, e := range st.Reservations {
		snap.Reservations[i] = provision.SnapshotEntry{ID: e.ID, Digest: e.Digest, Version: e.Version}
	}
	return snap, nil
}

// Fetch returns reservation id (GetReservation) for the node's
// provision.Snapshotter; the Engine verifies it as any event.
func (c *Client) Fetch(ctx context.Context, id string) (*provision.Reservation, error) {
	return c.GetReservation(ctx, id)
}
