package explorer

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/edgeprov/provisiond/identity"
	"github.com/edgeprov/provisiond/provision"
)

// Owner logs. The owner of a container signs a LogRequest; the explorer
// keeps it for the node, which learns of it by polling (GET
// /api/v1/nodes/{node}/logs: a node behind NAT needs no open port),
// checks it, reads the tail of the container's output and uploads it
// sealed to the owner's key (identity.Seal), with the node's signature
// inside the box. The explorer stores the sealed blob for the owner and
// can neither read nor forge it.

// Domain tags of the signed parts of owner logs.
const (
	logsDomain      = "provisiond/logs/v1"
	logsReplyDomain = "provisiond/logs-reply/v1"
)

// Limits of owner logs.
const (
	// DefaultLogTail is the tail a request asks for when it names none
	// (16 KiB).
	DefaultLogTail = 16 << 10
	// MaxLogTail is the largest tail one request may ask for (64 KiB).
	MaxLogTail = 64 << 10
	// LogRequestTTL is how long after its creation a request is honoured
	// (2 minutes); a node refuses it after, and the explorer no longer
	// hands it out.
	LogRequestTTL = 2 * time.Minute
	// LogTTL is how long the explorer keeps a request and its sealed
	// answer (10 minutes).
	LogTTL = 10 * time.Minute
	// MaxLogRequestsPerUser is how many requests one user may have kept
	// at once (within LogTTL; 32): one more is refused with 429.
	MaxLogRequestsPerUser = 32
	// MaxLogRequestsPerPoll is the most requests one node poll returns (16).
	MaxLogRequestsPerPoll = 16
	// MaxSealedLog is the largest sealed answer (base64 of a box holding
	// the node's signature and MaxLogTail bytes).
	MaxSealedLog = (MaxLogTail+ed25519.SignatureSize+48+2)/3*4 + 4
	// MaxLogError is the longest error a node may answer instead (256 bytes).
	MaxLogError = 256
)

// States of a log request (LogStatus.State).
const (
	// LogPending: the node has not answered yet.
	LogPending = "pending"
	// LogAnswered: the node uploaded the sealed tail.
	LogAnswered = "answered"
	// LogRefused: the node answered with an error (not a container, not
	// the owner, expired…).
	LogRefused = "refused"
)

// ErrBadLogRequest is a log request that is malformed, expired or not
// signed by its user.
var ErrBadLogRequest = errors.New("explorer: bad log request")

// LogRequest is the owner's signed request for the tail of a container's
// output, the body of POST /api/v1/reservations/{id}/logs.
type LogRequest struct {
	// ID is the container reservation's ID.
	ID string `json:"id"`
	// NodeID is the reservation's node.
	NodeID string `json:"node_id"`
	// UserID is the reservation's owner, who signs.
	UserID string `json:"user_id"`
	// Tail is how many bytes of the end of the output are wanted (1 to
	// MaxLogTail).
	Tail int `json:"tail"`
	// Created is when the owner signed; the request is honoured until
	// LogRequestTTL after it.
	Created time.Time `json:"created"`
	// Nonce is 16 random bytes, hex: two requests are never the same.
	Nonce string `json:"nonce"`
	// Signature is the owner's hex ed25519 signature over Bytes.
	Signature string `json:"signature"`
}

// Bytes returns the canonical bytes the owner signs: the domain tag
// "provisiond/logs/v1", id, node_id, user_id, tail (decimal), created
// (UTC, RFC 3339 nano) and nonce, each length-prefixed.
func (q *LogRequest) Bytes() []byte {
	return provision.LengthPrefixed(logsDomain, q.ID, q.NodeID, q.UserID, strconv.Itoa(q.Tail),
		q.Created.UTC().Format(time.RFC3339Nano), q.Nonce)
}

// Name returns the request's name: the first 16 bytes, hex, of the
// sha256 of Bytes. It names the request in the API's paths.
func (q *LogRequest) Name() string {
	sum := sha256.Sum256(q.Bytes())
	return hex.EncodeToString(sum[:16])
}

// Sign fills Created (now), a fresh Nonce and the Signature with the
// owner's key.
func (q *LogRequest) Sign(key ed25519.PrivateKey, now time.Time) error {
	var n [16]byte
	if _, err := rand.Read(n[:]); err != nil {
		return fmt.Errorf("drawing log request nonce: %w", err)
	}
	q.Created, q.Nonce = now.UTC(), hex.EncodeToString(n[:])
	q.Signature = hex.EncodeToString(ed25519.Sign(key, q.Bytes()))
	return nil
}

// Verify checks the request at now: its fields (a valid ID, a tail within
// 1…MaxLogTail, a 16-byte hex nonce), its time (not more than MaxSkew
// ahead of now, not older than LogRequestTTL) and its signature against
// UserID. It fails with ErrBadLogRequest.
func (q *LogRequest) Verify(now time.Time) error {
	if err := provision.ValidName("id", q.ID); err != nil {
		return fmt.Errorf("%w: id: %v", ErrBadLogRequest, err)
	}
	if q.Tail < 1 || q.Tail > MaxLogTail {
		return fmt.Errorf("%w: tail %d not within 1…%d bytes", ErrBadLogRequest, q.Tail, MaxLogTail)
	}
	if n, err := hex.DecodeString(q.Nonce); err != nil || len(n) != 16 {
		return fmt.Errorf("%w: nonce is not 16 hex-encoded bytes", ErrBadLogRequest)
	}
	if q.Created.After(now.Add(MaxSkew)) {
		return fmt.Errorf("%w: created %s is ahead of %s", ErrBadLogRequest, q.Created.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if now.Sub(q.Created) > LogRequestTTL {
		return fmt.Errorf("%w: expired: created %s, honoured for %s", ErrBadLogRequest, q.Created.UTC().Format(time.RFC3339), LogRequestTTL)
	}
	pub, err := ParseKey(q.UserID)
	if err != nil || len(q.UserID) != 2*ed25519.PublicKeySize {
		return fmt.Errorf("%w: user_id %q is not a user's key", ErrBadLogRequest, q.UserID)
	}
	sig, err := hex.DecodeString(q.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize || !ed25519.Verify(pub, q.Bytes(), sig) {
		return fmt.Errorf("%w: signature does not verify against user %s", ErrBadLogRequest, q.UserID)
	}
	return nil
}

// LogCreated is the body answering POST /api/v1/reservations/{id}/logs.
type LogCreated struct {
	// Request is the request's name (LogRequest.Name).
	Request string `json:"request"`
}

// LogRequestsReply is the body of GET /api/v1/nodes/{node}/logs: the
// node's pending requests, oldest first.
type LogRequestsReply struct {
	// Requests are at most MaxLogRequestsPerPoll pending requests.
	Requests []LogRequest `json:"requests"`
}

// LogReply is the node's answer to a request, the body of
// PUT /api/v1/nodes/{node}/logs/{request}: the sealed tail or an error.
type LogReply struct {
	// Request is the request's name.
	Request string `json:"request"`
	// Sealed is the tail sealed to the owner's key (SealLogs), base64.
	Sealed string `json:"sealed,omitempty"`
	// Error says why the node refused the request (at most MaxLogError
	// bytes), when Sealed is empty.
	Error string `json:"error,omitempty"`
}

// LogStatus is the body of GET /api/v1/reservations/{id}/logs/{request}.
type LogStatus struct {
	// Request is the request's name.
	Request string `json:"request"`
	// ID is the reservation's ID.
	ID string `json:"id"`
	// NodeID is the node asked.
	NodeID string `json:"node_id"`
	// State is LogPending, LogAnswered or LogRefused.
	State string `json:"state"`
	// Created is when the owner signed the request.
	Created time.Time `json:"created"`
	// Answered is when the node answered (absent: pending).
	Answered *time.Time `json:"answered,omitempty"`
	// Sealed is the sealed tail (LogAnswered).
	Sealed string `json:"sealed,omitempty"`
	// Error is the node's refusal (LogRefused).
	Error string `json:"error,omitempty"`
}

// logsSigned returns the bytes the node signs inside the sealed box.
func logsSigned(q *LogRequest, tail []byte) []byte {
	return provision.LengthPrefixed(logsReplyDomain, q.Name(), q.NodeID, q.ID, string(tail))
}

// SealLogs seals tail for the owner of q: the node's signature over
// (domain "provisiond/logs-reply/v1", the request's name, node_id, id,
// tail) followed by the tail, in an anonymous box to the owner's key.
func SealLogs(q *LogRequest, node ed25519.PrivateKey, tail []byte) (string, error) {
	owner, err := ParseKey(q.UserID)
	if err != nil {
		return "", err
	}
	sig := ed25519.Sign(node, logsSigned(q, tail))
	return identity.Seal(owner, append(sig, tail...))
}

// OpenLogs opens what SealLogs sealed for the owner's key and checks the
// node's signature inside against q's node: the tail is the node's, for
// this request.
func OpenLogs(q *LogRequest, owner ed25519.PrivateKey, sealed string) ([]byte, error) {
	if len(sealed) > MaxSealedLog {
		return nil, fmt.Errorf("%w: sealed logs of %d characters, at most %d", ErrBadReply, len(sealed), MaxSealedLog)
	}
	raw, err := identity.OpenMax(owner, sealed, MaxSealedLog)
	if err != nil {
		return nil, err
	}
	if len(raw) < ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: sealed logs without the node's signature", ErrBadReply)
	}
	sig, tail := raw[:ed25519.SignatureSize], raw[ed25519.SignatureSize:]
	pub, err := identity.PublicKey(q.NodeID)
	if err != nil {
		return nil, err
	}
	if !ed25519.Verify(pub, logsSigned(q, tail), sig) {
		return nil, fmt.Errorf("%w: the logs are not signed by node %s for this request", ErrBadReply, q.NodeID)
	}
	return tail, nil
}

// RequestLogs asks the node of reservation r (fetched and checked by the
// caller) for the last tail bytes of its output: it signs a LogRequest
// with the client's key and submits it. The explorer answers 403 unless
// the key is r's owner's, 404 for an unknown reservation, 400 for one
// that is not a container.
func (c *Client) RequestLogs(ctx context.Context, r *provision.Reservation, tail int) (*LogRequest, error) {
	q := &LogRequest{ID: r.ID, NodeID: r.NodeID, UserID: c.keyID, Tail: tail}
	if err := q.Sign(c.key, c.opts.Now()); err != nil {
		return nil, err
	}
	var reply LogCreated
	if err := c.do(ctx, http.MethodPost, "/api/v1/reservations/"+url.PathEscape(r.ID)+"/logs", q, &reply, c.opts.Timeout, MaxReplySize); err != nil {
		return nil, err
	}
	if reply.Request != q.Name() {
		return nil, provision.Temporary(fmt.Errorf("%w: the explorer named the request %q, not %q", ErrBadReply, reply.Request, q.Name()))
	}
	return q, nil
}

// LogStatus returns the state of the log request q (GET
// /api/v1/reservations/{id}/logs/{request}).
func (c *Client) LogStatus(ctx context.Context, q *LogRequest) (*LogStatus, error) {
	var st LogStatus
	path := "/api/v1/reservations/" + url.PathEscape(q.ID) + "/logs/" + url.PathEscape(q.Name())
	if err := c.do(ctx, http.MethodGet, path, nil, &st, c.opts.Timeout, MaxReplySize); err != nil {
		return nil, err
	}
	if st.Request != q.Name() {
		return nil, provision.Temporary(fmt.Errorf("%w: status of request %q, not %q", ErrBadReply, st.Request, q.Name()))
	}
	return &st, nil
}

// LogRequests long-polls the node's pending log requests (GET
// /api/v1/nodes/{node}/logs?wait=): it returns at once when there are
// some, else when one comes or PollWait passes. The requests are not
// verified here.
func (c *Client) LogRequests(ctx context.Context) ([]LogRequest, error) {
	var reply LogRequestsReply
	path := fmt.Sprintf("/api/v1/nodes/%s/logs?wait=%s", url.PathEscape(c.node), c.opts.PollWait)
	if err := c.do(ctx, http.MethodGet, path, nil, &reply, c.opts.PollWait+c.opts.Timeout, MaxReplySize); err != nil {
		return nil, err
	}
	if len(reply.Requests) > MaxLogRequestsPerPoll {
		reply.Requests = reply.Requests[:MaxLogRequestsPerPoll]
	}
	return reply.Requests, nil
}

// PutLogs uploads the node's answer to a log request.
func (c *Client) PutLogs(ctx context.Context, reply *LogReply) error {
	path := "/api/v1/nodes/" + url.PathEscape(c.node) + "/logs/" + url.PathEscape(reply.Request)
	return c.do(ctx, http.MethodPut, path, reply, nil, c.opts.Timeout, MaxReplySize)
}

// checkSealed reports whether s is base64 of a plausible size for a
// sealed tail.
func checkSealed(s string) error {
	if len(s) > MaxSealedLog {
		return fmt.Errorf("%w: sealed logs of %d characters, at most %d", ErrBadLogRequest, len(s), MaxSealedLog)
	}
	if _, err := base64.StdEncoding.DecodeString(s); err != nil {
		return fmt.Errorf("%w: sealed logs are not base64", ErrBadLogRequest)
	}
	return nil
}

// CheckLogReply refuses a node's answer that is neither a sealed tail of
// at most MaxSealedLog base64 characters nor an error of at most
// MaxLogError bytes, or that names another request than name.
func CheckLogReply(r *LogReply, name string) error {
	switch {
	case r.Request != name:
		return fmt.Errorf("%w: the answer names request %q, not %q", ErrBadLogRequest, r.Request, name)
	case (r.Sealed == "") == (r.Error == ""):
		return fmt.Errorf("%w: an answer holds either sealed logs or an error", ErrBadLogRequest)
	case len(r.Error) > MaxLogError:
		return fmt.Errorf("%w: error longer than %d bytes", ErrBadLogRequest, MaxLogError)
	case r.Sealed != "":
		return checkSealed(r.Sealed)
	}
	return nil
}
