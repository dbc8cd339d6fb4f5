package provision

import (
	"crypto/ed25519"
	"fmt"
	"sync"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
)

// The node checks every owner signature it ingests and signs every result
// it writes, so ed25519 was a third of the Engine's CPU time (and the
// explorer checks each result). All three use curve25519-voi, which does
// them in about two thirds of the time of crypto/ed25519 (vector code on
// amd64), and checks a signature against an expanded public key (kept per
// key, see expandedKeys) in about half.
//
// Signatures are the same bytes as crypto/ed25519's (Ed25519 signing is
// deterministic; the golden vectors hold both to them), and verifyOptions
// makes voi accept exactly what crypto/ed25519 accepts: the cofactorless
// equation, small-order and non-canonical public keys allowed, non-canonical
// S refused. FuzzVerifyMatchesStdlib holds the two to the same answer.
var verifyOptions = &voi.Options{Verify: voi.VerifyOptionsStdLib}

// maxExpandedKeys bounds the expanded-key cache. An expanded key takes
// about 1.5 KiB, so the cache holds at most about 384 KiB.
const maxExpandedKeys = 256

// expandedKeys remembers the expanded form of the public keys that signed
// last: an owner signs many reservations with one key, a node many
// results, and expanding a key costs about a third of a check.
type expandedKeys struct {
	mu   sync.Mutex
	keys map[[ed25519.PublicKeySize]byte]*voi.ExpandedPublicKey
}

var signerKeys = &expandedKeys{keys: map[[ed25519.PublicKeySize]byte]*voi.ExpandedPublicKey{}}

// get returns the expanded form of pub, or an error when pub is not the
// encoding of a curve point.
func (c *expandedKeys) get(pub []byte) (*voi.ExpandedPublicKey, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("ed25519 public key is %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	k := [ed25519.PublicKeySize]byte(pub)
	c.mu.Lock()
	ek := c.keys[k]
	c.mu.Unlock()
	if ek != nil {
		return ek, nil
	}
	ek, err := voi.NewExpandedPublicKey(voi.PublicKey(pub))
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if len(c.keys) >= maxExpandedKeys {
		for old := range c.keys { // drop an arbitrary one
			delete(c.keys, old)
			break
		}
	}
	c.keys[k] = ek
	c.mu.Unlock()
	return ek, nil
}

// verify reports whether sig is pub's ed25519 signature of msg, as
// crypto/ed25519.Verify would.
func verify(pub, msg, sig []byte) bool {
	ek, err := signerKeys.get(pub)
	if err != nil {
		return false // not a point: crypto/ed25519 refuses it too
	}
	return voi.VerifyExpandedWithOptions(ek, msg, sig, verifyOptions)
}

// sign returns key's ed25519 signature of msg, the same bytes as
// crypto/ed25519.Sign returns. key must be ed25519.PrivateKeySize bytes.
func sign(key ed25519.PrivateKey, msg []byte) []byte {
	return voi.Sign(voi.PrivateKey(key), msg)
}
