package explorer_test

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/identity"
)

// smallOrderKeys are encodings of points of small order: the identity,
// and a point of order 4. With such a key one signature (R = identity,
// s = 0) verifies for every message.
var smallOrderKeys = []string{
	"0100000000000000000000000000000000000000000000000000000000000000",
	"0000000000000000000000000000000000000000000000000000000000000000",
}

// TestWeakUserKeyRefused: a request "signed" by a small-order user key
// verifies under crypto/ed25519 for any message; the header check refuses
// the key before anything else.
func TestWeakUserKeyRefused(t *testing.T) {
	now := time.Now()
	for _, k := range smallOrderKeys {
		pub, _ := hex.DecodeString(k)
		forged := make([]byte, ed25519.SignatureSize)
		copy(forged, pub) // R = the small-order point, s = 0
		req, _ := http.NewRequest(http.MethodPost, "http://x/api/v1/reservations", nil)
		req.Header.Set(explorer.HeaderKey, k)
		req.Header.Set(explorer.HeaderNonce, strings.Repeat("00", 16))
		req.Header.Set(explorer.HeaderSignature, hex.EncodeToString(forged))
		req.Header.Set(explorer.HeaderTimestamp, itoa(now.Unix()))
		_, err := explorer.VerifyRequest(req.Method, req.URL.RequestURI(), req.Header, []byte("{}"), now, explorer.MaxSkew)
		if !errors.Is(err, explorer.ErrBadKey) || !errors.Is(err, identity.ErrWeakKey) {
			t.Errorf("key %s: %v, want ErrBadKey wrapping ErrWeakKey", k, err)
		}
	}
}

func itoa(n int64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		if n /= 10; n == 0 {
			return string(b[i:])
		}
	}
}

// TestCheckHeaders: the shape and timestamp of the headers are checked
// without a body; the signature only by Verify.
func TestCheckHeaders(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(nil)
	now := time.Now()
	good := func() http.Header {
		req, _ := http.NewRequest(http.MethodGet, "http://x/api/v1/reservations", nil)
		if err := explorer.SignRequest(req, priv, identity.UserID(priv.Public().(ed25519.PublicKey)), nil, now); err != nil {
			t.Fatal(err)
		}
		return req.Header
	}
	tests := []struct {
		name string
		mut  func(http.Header)
		want error
	}{
		{"good", func(http.Header) {}, nil},
		{"no-key", func(h http.Header) { h.Del(explorer.HeaderKey) }, explorer.ErrUnsigned},
		{"long-key", func(h http.Header) { h.Set(explorer.HeaderKey, strings.Repeat("1", 4096)) }, explorer.ErrBadKey},
		{"bad-hex-key", func(h http.Header) { h.Set(explorer.HeaderKey, strings.Repeat("zz", 32)) }, explorer.ErrBadKey},
		{"stale", func(h http.Header) { h.Set(explorer.HeaderTimestamp, itoa(now.Add(-time.Hour).Unix())) }, explorer.ErrStale},
		{"future", func(h http.Header) { h.Set(explorer.HeaderTimestamp, itoa(now.Add(time.Hour).Unix())) }, explorer.ErrStale},
		{"long-timestamp", func(h http.Header) { h.Set(explorer.HeaderTimestamp, strings.Repeat("0", 21)) }, explorer.ErrBadSignature},
		{"nonce-not-hex", func(h http.Header) { h.Set(explorer.HeaderNonce, strings.Repeat("zz", 16)) }, explorer.ErrBadSignature},
		{"short-signature", func(h http.Header) { h.Set(explorer.HeaderSignature, "00") }, explorer.ErrBadSignature},
		{"long-signature", func(h http.Header) { h.Set(explorer.HeaderSignature, strings.Repeat("0", 1<<16)) }, explorer.ErrBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := good()
			tt.mut(h)
			hd, err := explorer.CheckHeaders(h, now, explorer.MaxSkew)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("CheckHeaders: %v, want %v", err, tt.want)
			}
			if err != nil {
				return
			}
			if _, err := hd.Verify(http.MethodGet, "/api/v1/reservations", nil); err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if _, err := hd.Verify(http.MethodGet, "/api/v1/reservations", []byte("x")); !errors.Is(err, explorer.ErrBadSignature) {
				t.Fatalf("Verify of another body: %v, want ErrBadSignature", err)
			}
		})
	}
}
