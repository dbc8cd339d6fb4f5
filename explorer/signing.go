package explorer

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/edgeprov/provisiond/identity"
	"github.com/edgeprov/provisiond/provision"
)

// requestDomain separates request signatures from every other signed message.
const requestDomain = "provisiond/request/v1"

// nonceSize is the number of random bytes in X-Provisiond-Nonce.
const nonceSize = 16

// RequestChallenge returns the canonical bytes a request signature covers:
// the domain tag "provisiond/request/v1", the method, the request URI (path
// and raw query, exactly as sent on the request line), the timestamp (unix
// seconds, decimal), the nonce and the hex sha256 of the body, each preceded
// by its length as a big-endian uint32.
func RequestChallenge(method, requestURI, timestamp, nonce string, body []byte) []byte {
	sum := sha256.Sum256(body)
	return provision.LengthPrefixed(requestDomain, method, requestURI, timestamp, nonce, hex.EncodeToString(sum[:]))
}

// SignRequest sets the signature headers of req, whose body is body, with
// key: keyID names the key (a node ID or a user's hex public key), now is
// the timestamp. A fresh random nonce is drawn for every call.
func SignRequest(req *http.Request, key ed25519.PrivateKey, keyID string, body []byte, now time.Time) error {
	var nonce [nonceSize]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return fmt.Errorf("drawing request nonce: %w", err)
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	n := hex.EncodeToString(nonce[:])
	sig := ed25519.Sign(key, RequestChallenge(req.Method, req.URL.RequestURI(), ts, n, body))
	req.Header.Set(HeaderKey, keyID)
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderNonce, n)
	req.Header.Set(HeaderSignature, hex.EncodeToString(sig))
	return nil
}

// ParseKey returns the public key a key ID names: a user's 64-character hex
// public key, or a node's base58 node ID. A key identity.CheckPublicKey
// refuses (a small-order point, a non-canonical encoding) fails with
// ErrBadKey: whoever holds such a "key" lets anyone sign in its name.
func ParseKey(keyID string) (ed25519.PublicKey, error) {
	if len(keyID) == 2*ed25519.PublicKeySize {
		b, err := hex.DecodeString(keyID)
		if err != nil {
			return nil, fmt.Errorf("%w: %q is neither hex nor base58", ErrBadKey, keyID)
		}
		if err := identity.CheckPublicKey(b); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrBadKey, keyID, err)
		}
		return ed25519.PublicKey(b), nil
	}
	if len(keyID) > maxNodeIDLen {
		return nil, fmt.Errorf("%w: %d characters, neither a user ID nor a node ID", ErrBadKey, len(keyID))
	}
	pub, err := identity.PublicKey(keyID)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadKey, err)
	}
	return pub, nil
}

// maxNodeIDLen is the longest base58 encoding of 32 bytes.
const maxNodeIDLen = 44

// maxTimestampLen is the longest decimal timestamp header accepted.
const maxTimestampLen = 20

// Signed describes a request whose signature verified.
type Signed struct {
	// Key is the signer's public key.
	Key ed25519.PublicKey
	// KeyID is the X-Provisiond-Key header as sent.
	KeyID string
	// Signature is the hex signature, unique per request (it covers the nonce).
	Signature string
	// Timestamp is the request's timestamp.
	Timestamp time.Time
}

// Headers are the signature headers of a request whose shape and timestamp
// CheckHeaders accepted; the signature is not verified yet. A server checks
// them before it reads a body, so that a request that can never verify
// costs it no body.
type Headers struct {
	// Key is the public key X-Provisiond-Key names.
	Key ed25519.PublicKey
	// KeyID is the X-Provisiond-Key header as sent.
	KeyID string
	// Timestamp is the request's timestamp.
	Timestamp time.Time

	ts, nonce string
	sig       []byte
}

// CheckHeaders checks the signature headers of h at now, everything but
// the signature itself: it fails with ErrUnsigned when a header is missing,
// ErrBadKey when the key ID does not name a usable key, ErrBadSignature
// when the timestamp, nonce or signature is malformed and ErrStale when the
// timestamp is further than skew from now.
func CheckHeaders(h http.Header, now time.Time, skew time.Duration) (*Headers, error) {
	keyID, ts, nonce, sigHex := h.Get(HeaderKey), h.Get(HeaderTimestamp), h.Get(HeaderNonce), h.Get(HeaderSignature)
	for _, f := range []struct{ name, v string }{{HeaderKey, keyID}, {HeaderTimestamp, ts}, {HeaderNonce, nonce}, {HeaderSignature, sigHex}} {
		if f.v == "" {
			return nil, fmt.Errorf("%w: missing %s header", ErrUnsigned, f.name)
		}
	}
	pub, err := ParseKey(keyID)
	if err != nil {
		return nil, err
	}
	if len(ts) > maxTimestampLen {
		return nil, fmt.Errorf("%w: %s is longer than %d characters", ErrBadSignature, HeaderTimestamp, maxTimestampLen)
	}
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: %s %q is not unix seconds", ErrBadSignature, HeaderTimestamp, ts)
	}
	if n, err := hex.DecodeString(nonce); err != nil || len(n) != nonceSize {
		return nil, fmt.Errorf("%w: %s is not %d hex-encoded bytes", ErrBadSignature, HeaderNonce, nonceSize)
	}
	at := time.Unix(secs, 0)
	if d := now.Sub(at); d > skew || d < -skew {
		return nil, fmt.Errorf("%w: timestamp %s is %s away from the server's clock %s (at most %s)",
			ErrStale, at.UTC().Format(time.RFC3339), d.Round(time.Second), now.UTC().Format(time.RFC3339), skew)
	}
	if len(sigHex) != 2*ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: %s is not %d hex-encoded bytes", ErrBadSignature, HeaderSignature, ed25519.SignatureSize)
	}
	sig, err := hex.DecodeString(sigHex)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not %d hex-encoded bytes", ErrBadSignature, HeaderSignature, ed25519.SignatureSize)
	}
	return &Headers{Key: pub, KeyID: keyID, Timestamp: at, ts: ts, nonce: nonce, sig: sig}, nil
}

// Verify checks the signature of the request the headers came with, whose
// method, request URI (as on the request line) and body are given. It
// fails with ErrBadSignature when the signature does not verify.
func (hd *Headers) Verify(method, requestURI string, body []byte) (*Signed, error) {
	if !ed25519.Verify(hd.Key, RequestChallenge(method, requestURI, hd.ts, hd.nonce, body), hd.sig) {
		return nil, fmt.Errorf("%w: does not verify against %s %s", ErrBadSignature, HeaderKey, hd.KeyID)
	}
	return &Signed{Key: hd.Key, KeyID: hd.KeyID, Signature: hex.EncodeToString(hd.sig), Timestamp: hd.Timestamp}, nil
}

// VerifyRequest checks the signature headers of a request with the given
// method, request URI (as on the request line) and body at now: it is
// CheckHeaders, then Headers.Verify. It does not detect replays: the
// caller remembers Signed.Signature until it is stale.
func VerifyRequest(method, requestURI string, h http.Header, body []byte, now time.Time, skew time.Duration) (*Signed, error) {
	hd, err := CheckHeaders(h, now, skew)
	if err != nil {
		return nil, err
	}
	return hd.Verify(method, requestURI, body)
}
