package server

import (
	"container/list"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/edgeprov/provisiond/provision"
)

// Limits bound what one caller can make the explorer do, so that one
// caller's flood never spends another's budget: every door a stranger can
// knock on has a per-identity budget (a key, a remote address, a node, a
// user). A zero field takes its default, a negative rate turns that rate
// limit off; docs/explorer-api.md "Limits" lists them all.
type Limits struct {
	// Off turns the rate limits, the poll limit and the quota off: for
	// benchmarks only (default false).
	Off bool
	// KeyRate is the sustained rate of authenticated requests of one key
	// (a user or a node), per second (default 40: above what
	// explorer.Client sends).
	KeyRate float64
	// KeyBurst is the burst of KeyRate (default 200).
	KeyBurst int
	// AddrRate is the sustained rate of requests of one remote address
	// (an IPv4 address, an IPv6 /64), authenticated or not, per second
	// (default 200: nodes behind one NAT share it).
	AddrRate float64
	// AddrBurst is the burst of AddrRate (default 1000).
	AddrBurst int
	// RegisterRate is the sustained rate of new node registrations from
	// one remote address, per second (default 0.2: 12 a minute).
	RegisterRate float64
	// RegisterBurst is the burst of RegisterRate (default 20).
	RegisterBurst int
	// Tracked is how many keys, and how many addresses, the rate limiters
	// remember; the least recently seen is forgotten first (default 65536).
	Tracked int
	// MaxPollsPerNode is how many long-polls one node may have held at
	// once; one more is refused with 429 (default 2).
	MaxPollsPerNode int
	// MaxReplayPerKey is how many signatures of one key the replay set
	// holds; past it the key's requests are refused with 429 until its
	// old ones go stale (default 16384).
	MaxReplayPerKey int
	// MaxReplayPerAddr is the same per remote address (default 65536).
	MaxReplayPerAddr int
	// MaxActivePerUser is the most active (neither expired nor deleted)
	// reservations one user may have (default 1000; negative: no quota).
	MaxActivePerUser int
	// MaxUnitsPerUser is the most units (CRU, MRU, SRU, HRU) one user's
	// active reservations may hold together, each priced by the nodes'
	// units table (Units); a zero unit is no limit (default: none).
	MaxUnitsPerUser provision.Units
	// BodyTimeout is how long a request body may take to arrive after its
	// headers (default 30s).
	BodyTimeout time.Duration
	// WriteTimeout is how long an answer may take to be written, counted
	// after the body was read or a long-poll's hold ended (default 30s).
	WriteTimeout time.Duration
	// MaxBodyBytes is the most request body bytes held in memory at once
	// by all requests together (default 32 MiB); a request that would pass
	// it is refused with 503.
	MaxBodyBytes int64
	// MaxBodyBytesPerAddr is the same for one remote address (default 16 MiB).
	MaxBodyBytesPerAddr int64
	// AddrBodyRate is the sustained rate of request body bytes one remote
	// address may send, per second (default 16 MiB): reading and hashing
	// a body costs CPU before its signature can be checked.
	AddrBodyRate float64
	// AddrBodyBurst is the burst of AddrBodyRate, at least the largest
	// body (default 32 MiB).
	AddrBodyBurst int
	// MaxConnsPerAddr is how many connections one remote address may hold
	// open to Serve's listener; more are closed at once (default 256).
	MaxConnsPerAddr int
	// ListLimit is the page size of GET /api/v1/reservations without
	// ?limit= (default 100).
	ListLimit int
	// MaxListLimit is the largest ?limit= (default 500).
	MaxListLimit int
	// MaxListBytes bounds the stored bytes of one page of reservations;
	// a page holds at least one (default 2 MiB).
	MaxListBytes int
}

// DefaultLimits returns the limits a zero Limits stands for.
func DefaultLimits() Limits { return Limits{}.withDefaults() }

// withDefaults returns l with its zero fields set to their defaults.
func (l Limits) withDefaults() Limits {
	setF := func(v *float64, d float64) {
		if *v == 0 {
			*v = d
		}
	}
	setI := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	setI64 := func(v *int64, d int64) {
		if *v == 0 {
			*v = d
		}
	}
	setD := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	setF(&l.KeyRate, 40)
	setI(&l.KeyBurst, 200)
	setF(&l.AddrRate, 200)
	setI(&l.AddrBurst, 1000)
	setF(&l.RegisterRate, 0.2)
	setI(&l.RegisterBurst, 20)
	setI(&l.Tracked, 1<<16)
	setI(&l.MaxPollsPerNode, 2)
	setI(&l.MaxReplayPerKey, 1<<14)
	setI(&l.MaxReplayPerAddr, 1<<16)
	setI(&l.MaxActivePerUser, 1000)
	setD(&l.BodyTimeout, 30*time.Second)
	setD(&l.WriteTimeout, 30*time.Second)
	setI64(&l.MaxBodyBytes, 32<<20)
	setI64(&l.MaxBodyBytesPerAddr, 16<<20)
	setI(&l.MaxConnsPerAddr, 256)
	setF(&l.AddrBodyRate, 16<<20)
	setI(&l.AddrBodyBurst, 32<<20)
	setI(&l.ListLimit, 100)
	setI(&l.MaxListLimit, 500)
	setI(&l.MaxListBytes, 2<<20)
	l.ListLimit = min(l.ListLimit, l.MaxListLimit)
	if l.Off {
		l.MaxActivePerUser = -1
		l.MaxUnitsPerUser = provision.Units{}
	}
	return l
}

// retryError is a refusal that says when to try again (Retry-After).
type retryError struct {
	err   error
	after time.Duration
}

func (e *retryError) Error() string { return e.err.Error() }
func (e *retryError) Unwrap() error { return e.err }

// tooMany returns an ErrTooMany saying what ran out and when to retry.
func tooMany(after time.Duration, format string, args ...any) error {
	return &retryError{err: fmt.Errorf("%w: %s", ErrTooMany, fmt.Sprintf(format, args...)), after: after}
}

// retryAfter returns the Retry-After of err in whole seconds (at least 1),
// or 0 when err does not say.
func retryAfter(err error) int {
	var re *retryError
	if !errors.As(err, &re) {
		return 0
	}
	return max(1, int(math.Ceil(re.after.Seconds())))
}

// keyed is a set of token buckets, one per key, that remembers at most max
// keys: the least recently used is forgotten first, which only ever gives
// a forgotten key a full bucket again. A nil *keyed allows everything.
type keyed struct {
	mu    sync.Mutex
	limit rate.Limit
	burst int
	max   int
	m     map[string]*list.Element
	lru   list.List // of *bucket, most recently used at the front
}

type bucket struct {
	key string
	lim *rate.Limiter
}

func newKeyed(perSec float64, burst, max int) *keyed {
	if perSec < 0 {
		return nil
	}
	return &keyed{limit: rate.Limit(perSec), burst: burst, max: max, m: map[string]*list.Element{}}
}

// get returns key's bucket; k.mu is held.
func (k *keyed) get(key string) *rate.Limiter {
	if e, ok := k.m[key]; ok {
		k.lru.MoveToFront(e)
		return e.Value.(*bucket).lim
	}
	if k.lru.Len() >= k.max {
		old := k.lru.Back()
		k.lru.Remove(old)
		delete(k.m, old.Value.(*bucket).key)
	}
	b := &bucket{key: key, lim: rate.NewLimiter(k.limit, k.burst)}
	k.m[key] = k.lru.PushFront(b)
	return b.lim
}

// until returns how long after now lim has a token; k.mu is held.
func (k *keyed) until(lim *rate.Limiter, now time.Time) time.Duration {
	tokens := lim.TokensAt(now)
	if tokens >= 1 {
		return 0
	}
	if k.limit <= 0 {
		return time.Hour
	}
	return max(time.Millisecond, time.Duration((1-tokens)/float64(k.limit)*float64(time.Second)))
}

// take takes one of key's tokens at now; when there is none it takes
// nothing and returns how long until there is one.
func (k *keyed) take(key string, now time.Time) time.Duration {
	return k.takeN(key, now, 1)
}

// takeN takes n of key's tokens at now; when there are fewer it takes
// nothing and returns how long until there are n (n above the burst:
// never, reported as an hour).
func (k *keyed) takeN(key string, now time.Time, n int) time.Duration {
	if k == nil || n <= 0 {
		return 0
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	lim := k.get(key)
	if lim.AllowN(now, n) {
		return 0
	}
	if n > k.burst || k.limit <= 0 {
		return time.Hour
	}
	return max(time.Millisecond, time.Duration((float64(n)-lim.TokensAt(now))/float64(k.limit)*float64(time.Second)))
}

// check returns how long after now key has a token, taking none.
func (k *keyed) check(key string, now time.Time) time.Duration {
	if k == nil {
		return 0
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.until(k.get(key), now)
}

// size returns how many keys k remembers.
func (k *keyed) size() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.m)
}

// counter counts what each key holds (long-polls, body bytes) against a
// per-key and a total maximum. Keys holding nothing have no entry, so it
// is as large as what is held at once.
type counter struct {
	mu     sync.Mutex
	perKey int64
	total  int64 // ≤ 0: no total
	sum    int64
	held   map[string]int64
}

func newCounter(perKey, total int64) *counter {
	return &counter{perKey: perKey, total: total, held: map[string]int64{}}
}

// acquire adds n to key's count and reports true, or reports false and
// adds nothing when that would pass a maximum.
func (c *counter) acquire(key string, n int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held[key]+n > c.perKey || (c.total > 0 && c.sum+n > c.total) {
		return false
	}
	c.held[key] += n
	c.sum += n
	return true
}

// release takes n off key's count.
func (c *counter) release(key string, n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held[key] -= n; c.held[key] <= 0 {
		delete(c.held, key)
	}
	c.sum -= n
}

// addrOf returns the rate-limit identity of a request's remote address:
// the IPv4 address, or the /64 of an IPv6 one (one host's usual share).
func addrOf(r *http.Request) string {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return addrKey(ap.Addr())
}

func addrKey(a netip.Addr) string {
	a = a.Unmap()
	if a.Is4() {
		return a.String()
	}
	p, _ := a.Prefix(64)
	return p.String()
}

// connLimiter is a listener that closes, at once, a connection from an
// address that already holds max of them.
type connLimiter struct {
	net.Listener
	counts *counter
	log    func(addr string)
}

// Accept returns the next connection whose address is within its limit.
func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key := c.RemoteAddr().String()
		if ap, err := netip.ParseAddrPort(key); err == nil {
			key = addrKey(ap.Addr())
		}
		if !l.counts.acquire(key, 1) {
			c.Close()
			if l.log != nil {
				l.log(key)
			}
			continue
		}
		return &limitedConn{Conn: c, release: sync.OnceFunc(func() { l.counts.release(key, 1) })}, nil
	}
}

type limitedConn struct {
	net.Conn
	release func()
}

// Close closes the connection and gives its place back.
func (c *limitedConn) Close() error {
	c.release()
	return c.Conn.Close()
}
