package server_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/provision"
)

// from returns a transport whose connections come from ip (a loopback
// address: 127.0.0.0/8 is all loopback on Linux), so that a test can be
// several remote addresses at once.
func from(ip string) *http.Transport {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = d.DialContext
	tr.MaxIdleConnsPerHost = 64
	return tr
}

// victim is a normal user and a normal node of one explorer, working from
// 127.0.0.1 at a modest pace: each round the user submits a reservation,
// the node polls it, sends its signed result, and the user reads it back
// and lists its reservations. Each request is tried once: a refusal is a
// failure, not something a retry hides.
type victim struct {
	xs      *explorertest.Server
	nodeKey ed25519.PrivateKey
	node    *explorer.Client
	user    *explorer.Client
	userKey ed25519.PrivateKey
	cursor  uint64
	n       int

	mu        sync.Mutex
	latencies []time.Duration
	failures  []string
}

func newVictim(t *testing.T, xs *explorertest.Server) *victim {
	t.Helper()
	opts := explorertest.ClientOptions()
	opts.MaxAttempts = 1
	opts.ReadLimit, opts.WriteLimit = rate.Inf, rate.Inf
	opts.Transport = from("127.0.0.1")
	v := &victim{xs: xs, nodeKey: explorertest.NewKey(t), userKey: explorertest.NewKey(t)}
	v.node = explorer.NewClient(xs.URL(), v.nodeKey, opts)
	v.user = explorer.NewUserClient(xs.URL(), v.userKey, opts)
	if err := v.node.Register(t.Context()); err != nil {
		t.Fatalf("registering the victim node: %v", err)
	}
	return v
}

// timed runs one request and records its latency, or its failure.
func (v *victim) timed(what string, fn func() error) bool {
	start := time.Now()
	err := fn()
	d := time.Since(start)
	v.mu.Lock()
	defer v.mu.Unlock()
	if err != nil {
		v.failures = append(v.failures, fmt.Sprintf("%s: %v", what, err))
		return false
	}
	v.latencies = append(v.latencies, d)
	return true
}

// round is one round of the victims' work; ctx bounds each request.
func (v *victim) round(ctx context.Context) {
	v.n++
	r := explorertest.Volume(explorertest.NodeID(v.nodeKey), int64(v.n))
	r.Sign(v.userKey)
	if !v.timed("create", func() error { _, err := v.user.CreateReservation(ctx, r); return err }) {
		return
	}
	var evs []provision.Event
	if !v.timed("poll", func() error {
		var err error
		evs, v.cursor, err = v.node.Poll(ctx, v.cursor)
		return err
	}) {
		return
	}
	for _, ev := range evs {
		if ev.Err != nil {
			v.timed("event", func() error { return ev.Err })
			continue
		}
		rv := ev.Reservation
		res := &provision.Result{Type: rv.Type, ID: rv.ID, NodeID: rv.NodeID, Digest: rv.Digest(), Version: rv.Version, Created: time.Now().UTC(), State: provision.StateOk}
		if err := res.Sign(provision.KeySigner(v.nodeKey)); err != nil {
			panic(err)
		}
		v.timed("result", func() error { return v.node.Feedback(ctx, rv.NodeID, res) })
	}
	v.timed("get", func() error { _, err := v.user.GetReservation(ctx, r.ID); return err })
	v.timed("list", func() error { _, err := v.user.ListReservationsPage(ctx, "", "", 10); return err })
}

// run does rounds every 200 ms until stop ends (about 15 requests a second
// of the user and 10 of the node); each request has 10 s.
func (v *victim) run(stop context.Context) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		v.round(ctx)
		cancel()
		select {
		case <-stop.Done():
			return
		case <-t.C:
		}
	}
}

// p99 returns the 99th percentile of the latencies so far and resets them.
func (v *victim) p99() (time.Duration, int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	l := slices.Clone(v.latencies)
	v.latencies = nil
	if len(l) == 0 {
		return 0, 0
	}
	slices.Sort(l)
	return l[min(len(l)-1, len(l)*99/100)], len(l)
}

// attackResult counts the statuses an attacker was answered.
type attackResult struct {
	mu         sync.Mutex
	status     map[int]int
	retryAfter int // refusals (429, 503) that carried Retry-After
	errors     int
	longest    time.Duration // the longest request
	lastErr    error
}

func (a *attackResult) add(resp *http.Response, err error, took time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.longest = max(a.longest, took)
	if a.status == nil {
		a.status = map[int]int{}
	}
	if err != nil {
		a.errors++
		a.lastErr = err
		return
	}
	a.status[resp.StatusCode]++
	if (resp.StatusCode == 429 || resp.StatusCode == 503) && resp.Header.Get("Retry-After") != "" {
		a.retryAfter++
	}
}

// attack is one kind of flood: it sends requests from the addresses it is
// given until ctx ends.
type attack struct {
	name   string
	limits server.Limits
	cfg    func(*server.Config)
	// flood runs in each of workers goroutines; hc sends from the
	// attacker's addresses.
	flood   func(ctx context.Context, t *testing.T, xs *explorertest.Server, hc *http.Client, w int, res *attackResult)
	workers int
	// refused is the status the attack must have met at least once.
	refused int
	// check, when set, checks what the attacker met instead.
	check func(*attackResult) error
}

// signedReq returns a request signed by key (keyID: its user ID, or its
// node ID when node).
func signedReq(t testing.TB, method, url string, key ed25519.PrivateKey, node bool, body []byte) *http.Request {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Error(err)
		return nil
	}
	id := explorertest.UserID(key)
	if node {
		id = explorertest.NodeID(key)
	}
	if err := explorer.SignRequest(req, key, id, body, time.Now()); err != nil {
		t.Error(err)
	}
	return req
}

func send(hc *http.Client, req *http.Request, res *attackResult) {
	if req == nil {
		return
	}
	start := time.Now()
	resp, err := hc.Do(req)
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	res.add(resp, err, time.Since(start))
}

// TestAbuseAttackerVictim floods the explorer as the attacker did,
// with nothing but self-made keys, from addresses of its own, while a
// normal user and node work from 127.0.0.1. The victims' requests must all
// succeed at once, at a p99 latency within a generous bound of their
// latency without the attack; the attacker must have met the limit that
// stops it, with Retry-After where it applies.
func TestAbuseAttackerVictim(t *testing.T) {
	attacks := []attack{
		{
			name: "one-key-floods", workers: 8, refused: http.StatusTooManyRequests,
			limits: server.Limits{KeyRate: 30, KeyBurst: 30, AddrRate: -1},
			flood: func(ctx context.Context, t *testing.T, xs *explorertest.Server, hc *http.Client, _ int, res *attackResult) {
				key := attackerKey
				for ctx.Err() == nil {
					send(hc, signedReq(t, http.MethodGet, xs.URL()+"/api/v1/reservations", key, false, nil), res)
				}
			},
		},
		{
			// The issue: one key filled the global replay set in 38 s and
			// everyone got 503 for 8 minutes. The key's share fills
			// first, and only the key is refused.
			name: "one-key-fills-its-replay-share", workers: 8, refused: http.StatusTooManyRequests,
			limits: server.Limits{KeyRate: -1, AddrRate: -1, MaxReplayPerKey: 300, MaxReplayPerAddr: 1 << 20},
			cfg:    func(c *server.Config) { c.MaxReplay = 2000 },
			flood: func(ctx context.Context, t *testing.T, xs *explorertest.Server, hc *http.Client, _ int, res *attackResult) {
				for ctx.Err() == nil {
					send(hc, signedReq(t, http.MethodGet, xs.URL()+"/api/v1/reservations", attackerKey, false, nil), res)
				}
			},
		},
		{
			name: "fresh-key-per-request", workers: 8, refused: http.StatusTooManyRequests,
			limits: server.Limits{AddrRate: 60, AddrBurst: 60},
			flood: func(ctx context.Context, t *testing.T, xs *explorertest.Server, hc *http.Client, _ int, res *attackResult) {
				for ctx.Err() == nil {
					send(hc, signedReq(t, http.MethodGet, xs.URL()+"/api/v1/reservations", explorertest.NewKey(t), false, nil), res)
				}
			},
		},
		{
			name: "bad-signatures", workers: 8, refused: http.StatusTooManyRequests,
			limits: server.Limits{AddrRate: 60, AddrBurst: 60},
			flood: func(ctx context.Context, t *testing.T, xs *explorertest.Server, hc *http.Client, _ int, res *attackResult) {
				for ctx.Err() == nil {
					req := signedReq(t, http.MethodPost, xs.URL()+"/api/v1/reservations", attackerKey, false, []byte("{}"))
					req.Header.Set(explorer.HeaderSignature, strings.Repeat("ab", 64))
					send(hc, req, res)
				}
			},
		},
		{
			name: "registrations", workers: 4, refused: http.StatusTooManyRequests,
			limits: server.Limits{RegisterRate: 1, RegisterBurst: 5},
			flood: func(ctx context.Context, t *testing.T, xs *explorertest.Server, hc *http.Client, _ int, res *attackResult) {
				for ctx.Err() == nil {
					k := explorertest.NewKey(t)
					body, _ := json.Marshal(explorer.RegisterRequest{NodeID: explorertest.NodeID(k)})
					send(hc, signedReq(t, http.MethodPost, xs.URL()+"/api/v1/nodes", k, true, body), res)
				}
			},
		},
		{
			name: "quota", workers: 4, refused: http.StatusForbidden,
			limits: server.Limits{MaxActivePerUser: 20, KeyRate: 1000, KeyBurst: 1000},
			flood: func(ctx context.Context, t *testing.T, xs *explorertest.Server, hc *http.Client, w int, res *attackResult) {
				node := explorertest.NodeID(attackerNode)
				for i := 0; ctx.Err() == nil; i++ {
					r := explorertest.Volume(node, int64(1+w*1_000_000+i))
					r.Sign(attackerKey)
					body, _ := json.Marshal(r)
					send(hc, signedReq(t, http.MethodPost, xs.URL()+"/api/v1/reservations", attackerKey, false, body), res)
				}
			},
		},
		{
			name: "long-polls", workers: 6, refused: http.StatusTooManyRequests,
			flood: func(ctx context.Context, t *testing.T, xs *explorertest.Server, hc *http.Client, _ int, res *attackResult) {
				node := explorertest.NodeID(attackerNode)
				for ctx.Err() == nil {
					req := signedReq(t, http.MethodGet, xs.URL()+"/api/v1/nodes/"+node+"/events?from=1000000&wait=1s", attackerNode, true, nil)
					send(hc, req.WithContext(ctx), res)
				}
			},
		},
		{
			// The issue: 16 batches of 4 MiB took the server to 2.36 GB.
			name: "huge-batches", workers: 16, refused: http.StatusRequestEntityTooLarge,
			limits: server.Limits{KeyRate: -1, AddrRate: -1},
			check: func(res *attackResult) error {
				if res.status[http.StatusRequestEntityTooLarge] == 0 || res.status[http.StatusTooManyRequests] == 0 {
					return fmt.Errorf("want 413 (past 256 results) and 429 (body bytes a second): %v", res.status)
				}
				return nil
			},
			flood: func(ctx context.Context, t *testing.T, xs *explorertest.Server, hc *http.Client, _ int, res *attackResult) {
				node := explorertest.NodeID(attackerNode)
				body := hugeBatch()
				sum := sha256.Sum256(body) // once: the attacker's CPU is the victims' here
				for ctx.Err() == nil {
					req, _ := http.NewRequest(http.MethodPost, xs.URL()+"/api/v1/nodes/"+node+"/results", bytes.NewReader(body))
					signHashed(req, attackerNode, node, hex.EncodeToString(sum[:]))
					send(hc, req, res)
				}
			},
		},
		{
			// The issue: slow bodies stayed open 170 s. Signed headers of
			// the right shape, then a body that never ends in time.
			name: "slow-bodies", workers: 24,
			limits: server.Limits{BodyTimeout: 500 * time.Millisecond},
			check: func(res *attackResult) error {
				// Each body would take 2 s; the server ends it at 0.5 s
				// with 408.
				n := res.status[http.StatusRequestTimeout]
				if n < 24 || res.longest > 1500*time.Millisecond {
					return fmt.Errorf("%d slow bodies, the longest open %v: want them ended after the 500 ms body timeout", n, res.longest)
				}
				return nil
			},
			flood: func(ctx context.Context, t *testing.T, xs *explorertest.Server, _ *http.Client, _ int, res *attackResult) {
				for ctx.Err() == nil {
					slowBody(t, xs, res)
				}
			},
		},
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			cfg := server.Config{NoSync: true, Limits: a.limits}
			if a.cfg != nil {
				a.cfg(&cfg)
			}
			xs := explorertest.NewWithConfig(t, cfg)
			// The attacker's own user key and node, registered from its
			// address before the flood.
			atk := &http.Client{Transport: from("127.0.0.2"), Timeout: 30 * time.Second}
			body, _ := json.Marshal(explorer.RegisterRequest{NodeID: explorertest.NodeID(attackerNode)})
			var setup attackResult
			send(atk, signedReq(t, http.MethodPost, xs.URL()+"/api/v1/nodes", attackerNode, true, body), &setup)
			if setup.status[http.StatusCreated] != 1 {
				t.Fatalf("registering the attacker's node: %v", setup.status)
			}
			v := newVictim(t, xs)

			// Without the attack: the victims' own latency.
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			v.run(ctx)
			cancel()
			base, nBase := v.p99()

			ctx, cancel = context.WithTimeout(t.Context(), 3*time.Second)
			defer cancel()
			var res attackResult
			var wg sync.WaitGroup
			for w := range a.workers {
				wg.Go(func() { a.flood(ctx, t, xs, atk, w, &res) })
			}
			time.Sleep(300 * time.Millisecond) // the flood is on
			vctx, vcancel := context.WithTimeout(t.Context(), 2*time.Second)
			v.run(vctx)
			vcancel()
			cancel()
			wg.Wait()
			under, nUnder := v.p99()

			t.Logf("victims: p99 %v over %d requests alone, %v over %d under attack; attacker: %v, %d with Retry-After, %d transport errors, longest %v",
				base, nBase, under, nUnder, res.status, res.retryAfter, res.errors, res.longest)
			if len(v.failures) > 0 {
				t.Fatalf("%d victim requests failed under attack, first: %s", len(v.failures), v.failures[0])
			}
			if nUnder < 10 {
				t.Fatalf("the victims made only %d requests in 2 s of attack", nUnder)
			}
			bound := max(20*base, time.Second)
			if under > bound {
				t.Fatalf("victim p99 %v under attack, more than %v (20× their %v alone)", under, bound, base)
			}
			if a.check != nil {
				if err := a.check(&res); err != nil {
					t.Fatal(err)
				}
			} else if res.status[a.refused] == 0 {
				t.Fatalf("the attacker never met %d: %v", a.refused, res.status)
			}
			if a.refused == http.StatusTooManyRequests && res.retryAfter == 0 {
				t.Fatalf("no 429 carried Retry-After")
			}
		})
	}
}

var (
	attackerKey  = mustKey()
	attackerNode = mustKey()
)

func mustKey() ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(nil)
	if err != nil {
		panic(err)
	}
	return k
}

// signHashed signs req as explorer.SignRequest does, from the hex sha256
// of its body (docs/explorer-api.md "Signed requests").
func signHashed(req *http.Request, key ed25519.PrivateKey, keyID, sumHex string) {
	var nonce [16]byte
	rand.Read(nonce[:])
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	n := hex.EncodeToString(nonce[:])
	msg := provision.LengthPrefixed("provisiond/request/v1", req.Method, req.URL.RequestURI(), ts, n, sumHex)
	req.Header.Set(explorer.HeaderKey, keyID)
	req.Header.Set(explorer.HeaderTimestamp, ts)
	req.Header.Set(explorer.HeaderNonce, n)
	req.Header.Set(explorer.HeaderSignature, hex.EncodeToString(ed25519.Sign(key, msg)))
}

// hugeBatch is a 4 MiB batch of results of tiny, empty entries: about a
// million of them.
var hugeBatch = sync.OnceValue(func() []byte {
	const size = explorer.MaxBatchBodySize
	var b bytes.Buffer
	b.WriteString(`{"results":[{}`)
	for b.Len() < size-len(`,{}]}`) {
		b.WriteString(`,{}`)
	}
	b.WriteString(`]}`)
	return b.Bytes()
})

// slowBody sends, from 127.0.0.2 on a raw connection, a request with
// signature headers of the right shape and a body of 1000 bytes that
// comes one byte every 100 ms, and records the status the server answers
// (or an error when it just closes) and how long it kept the request.
func slowBody(t *testing.T, xs *explorertest.Server, res *attackResult) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	conn, err := d.Dial("tcp", strings.TrimPrefix(xs.URL(), "http://"))
	if err != nil {
		res.add(nil, err, 0)
		return
	}
	defer conn.Close()
	req := signedReq(t, http.MethodPost, xs.URL()+"/api/v1/reservations", attackerKey, false, bytes.Repeat([]byte(" "), 1000))
	start := time.Now()
	fmt.Fprintf(conn, "POST /api/v1/reservations HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n")
	for _, h := range []string{explorer.HeaderKey, explorer.HeaderTimestamp, explorer.HeaderNonce, explorer.HeaderSignature} {
		fmt.Fprintf(conn, "%s: %s\r\n", h, req.Header.Get(h))
	}
	fmt.Fprintf(conn, "\r\n")
	answered := make(chan string, 1)
	go func() {
		line := make([]byte, 12)
		n, _ := io.ReadFull(conn, line)
		answered <- string(line[:n])
	}()
	for range 20 {
		select {
		case line := <-answered:
			took := time.Since(start)
			var code int
			if _, err := fmt.Sscanf(line, "HTTP/1.1 %d", &code); err != nil {
				res.add(nil, fmt.Errorf("closed: %q", line), took)
				return
			}
			res.add(&http.Response{StatusCode: code, Header: http.Header{}}, nil, took)
			return
		case <-time.After(100 * time.Millisecond):
			conn.Write([]byte(" "))
		}
	}
	res.add(nil, fmt.Errorf("not answered"), time.Since(start))
}

// TestSlowBodiesCostNoReading: requests refused before their body is read
// (no signature headers, a stale timestamp, a key out of budget) are
// answered at once, however slowly the body would come: the server reads
// none of it.
func TestSlowBodiesCostNoReading(t *testing.T) {
	xs := explorertest.NewWithConfig(t, server.Config{NoSync: true, Limits: server.Limits{KeyRate: 1, KeyBurst: 1}})
	spent := explorertest.NewKey(t)
	xs.UserClient(spent).ListReservations(t.Context(), "") // its one token
	tests := []struct {
		name string
		sign func(*http.Request)
		want int
	}{
		{"unsigned", func(*http.Request) {}, http.StatusUnauthorized},
		{"stale", func(req *http.Request) {
			explorer.SignRequest(req, explorertest.NewKey(t), explorertest.UserID(explorertest.NewKey(t)), nil, time.Now().Add(-time.Hour))
		}, http.StatusUnauthorized},
		{"key-out-of-budget", func(req *http.Request) {
			explorer.SignRequest(req, spent, explorertest.UserID(spent), nil, time.Now())
		}, http.StatusTooManyRequests},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var wg sync.WaitGroup
			var answered atomic.Int32
			for range 20 {
				wg.Go(func() {
					pr, pw := io.Pipe() // a body that never comes
					defer pw.Close()
					req, _ := http.NewRequest(http.MethodPost, xs.URL()+"/api/v1/reservations", pr)
					req.ContentLength = 1000
					tt.sign(req)
					start := time.Now()
					resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
					if err != nil {
						t.Error(err)
						return
					}
					resp.Body.Close()
					if resp.StatusCode == tt.want && time.Since(start) < 5*time.Second {
						answered.Add(1)
					}
				})
			}
			wg.Wait()
			if answered.Load() != 20 {
				t.Fatalf("%d of 20 slow bodies answered %d at once", answered.Load(), tt.want)
			}
		})
	}
}

// weakPub is the identity point, a small-order ed25519 "key": with it,
// the signature R = weakPub, s = 0 verifies for every message under
// crypto/ed25519, so whoever registered it could be impersonated by all.
var weakPub = ed25519.PublicKey(append([]byte{1}, make([]byte, 31)...))

// forgedBy returns a request whose signature headers name pub and carry
// the universal forgery for a small-order key.
func forgedBy(t *testing.T, method, url, keyID string, body []byte) *http.Request {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, ed25519.SignatureSize)
	copy(sig, weakPub)
	var nonce [16]byte
	req.Header.Set(explorer.HeaderKey, keyID)
	req.Header.Set(explorer.HeaderTimestamp, strconv.FormatInt(time.Now().Unix(), 10))
	req.Header.Set(explorer.HeaderNonce, hex.EncodeToString(nonce[:]))
	req.Header.Set(explorer.HeaderSignature, hex.EncodeToString(sig))
	if !ed25519.Verify(weakPub, []byte("any message"), sig) {
		t.Fatal("the forgery does not verify: the test proves nothing")
	}
	return req
}

// TestWeakKeysAndLooseBodiesRefused: small-order keys are refused as a
// node's ID at registration, as a user's request key and as a
// reservation's user_id; bodies with invalid UTF-8, case-folded or
// duplicate field names are refused with 400, as the node refuses them.
func TestWeakKeysAndLooseBodiesRefused(t *testing.T) {
	xs := explorertest.New(t)
	node, user := explorertest.NewKey(t), explorertest.NewKey(t)
	xs.RegisterNode(t, node)
	nodeID := explorertest.NodeID(node)
	weakNode := base58Encode(weakPub)
	weakUser := hex.EncodeToString(weakPub)

	good := explorertest.Volume(nodeID, 1)
	good.Sign(user)
	goodJSON, _ := json.Marshal(good)
	swap := func(old, new string) []byte {
		if !bytes.Contains(goodJSON, []byte(old)) {
			t.Fatalf("%q not in %s", old, goodJSON)
		}
		return bytes.Replace(goodJSON, []byte(old), []byte(new), 1)
	}
	post := func(body []byte) *http.Request {
		return signedReq(t, http.MethodPost, xs.URL()+"/api/v1/reservations", user, false, body)
	}
	weakOwned := explorertest.Volume(nodeID, 2)
	weakOwned.UserID = weakUser
	weakOwned.Signature = hex.EncodeToString(append(append([]byte{}, weakPub...), make([]byte, 32)...))
	weakOwnedJSON, _ := json.Marshal(weakOwned)

	tests := []struct {
		name   string
		req    *http.Request
		status int
		msg    string
	}{
		{"register-small-order-node", forgedBy(t, http.MethodPost, xs.URL()+"/api/v1/nodes", weakNode,
			testutilJSON(explorer.RegisterRequest{NodeID: weakNode})), http.StatusUnauthorized, "small order"},
		{"small-order-user-key", forgedBy(t, http.MethodGet, xs.URL()+"/api/v1/reservations", weakUser, nil), http.StatusUnauthorized, "small order"},
		{"small-order-user-id", forgedBy(t, http.MethodPost, xs.URL()+"/api/v1/reservations", weakUser, weakOwnedJSON), http.StatusUnauthorized, "small order"},
		{"small-order-user-id-signed-by-another", post(weakOwnedJSON), http.StatusBadRequest, "small order"},
		{"list-of-small-order-user", signedReq(t, http.MethodGet, xs.URL()+"/api/v1/reservations?user="+weakUser, user, false, nil), http.StatusBadRequest, "small order"},
		{"invalid-utf8-in-data", post(swap(`"ssd"`, "\"s\xffd\"")), http.StatusBadRequest, "UTF-8"},
		{"invalid-utf8-in-reference", post(swap(`"version"`, "\"reference\":\"\xc0\",\"version\"")), http.StatusBadRequest, "UTF-8"},
		{"case-folded-field", post(swap(`"user_id"`, `"User_ID"`)), http.StatusBadRequest, `use "user_id"`},
		{"duplicate-field", post(swap(`"type":"volume"`, `"type":"volume","type":"container"`)), http.StatusBadRequest, "duplicate key"},
		{"case-folded-field-in-data", post(swap(`"size"`, `"Size"`)), http.StatusBadRequest, `use "size"`},
		{"duplicate-field-in-data", post(swap(`"size":1`, `"size":1,"size":9`)), http.StatusBadRequest, "duplicate key"},
		{"unknown-field", post(swap(`"user_id"`, `"owner":"x","user_id"`)), http.StatusBadRequest, "unknown field"},
		{"the-good-one", post(goodJSON), http.StatusCreated, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := do(t, tt.req)
			if got.status != tt.status || !strings.Contains(got.msg, tt.msg) {
				t.Fatalf("got %d %q, want %d with %q", got.status, got.msg, tt.status, tt.msg)
			}
		})
	}
}

func testutilJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// base58Encode is the node ID of a public key (identity.NodeID), written
// here so that the weak key needs no help from the code under test.
func base58Encode(b []byte) string {
	const alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
	var out []byte
	num := append([]byte{}, b...)
	for len(num) > 0 {
		var rem int
		var q []byte
		for _, d := range num {
			acc := rem*256 + int(d)
			if len(q) > 0 || acc/58 > 0 {
				q = append(q, byte(acc/58))
			}
			rem = acc % 58
		}
		out = append(out, alphabet[rem])
		num = q
	}
	for _, d := range b {
		if d != 0 {
			break
		}
		out = append(out, '1')
	}
	slices.Reverse(out)
	return string(out)
}
