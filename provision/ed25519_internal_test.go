package provision

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"testing"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
)

// smallOrder are encodings of points of small order (and non-canonical
// encodings of them), where Ed25519 implementations are known to differ.
var smallOrder = []string{
	"0100000000000000000000000000000000000000000000000000000000000000", // identity
	"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // order 2
	"0000000000000000000000000000000000000000000000000000000000000000", // order 4
	"0000000000000000000000000000000000000000000000000000000000000080", // order 4, x sign set
	"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a", // order 8
	"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", // order 8
	"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // y = p + 1, non-canonical identity
	"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // y = p, non-canonical 0
	"0200000000000000000000000000000000000000000000000000000000000000", // y = 2: not on the curve
}

// FuzzVerifyMatchesStdlib holds verify and sign to crypto/ed25519: for any
// key, message and signature both verifiers give the same answer, and both
// signers the same bytes. With a 32-byte seed the key pair is derived from
// it and pub and sig are XORed into the real key and signature (so valid
// and nearly valid signatures are explored too); otherwise pub and sig are
// used as they are (small-order and non-canonical points among the seeds).
func FuzzVerifyMatchesStdlib(f *testing.F) {
	seed := bytes.Repeat([]byte{7}, ed25519.SeedSize)
	f.Add(seed, []byte("message"), []byte(nil), []byte(nil))
	f.Add(seed, []byte("message"), []byte(nil), []byte{0: 1})
	f.Add(seed, []byte(""), []byte{31: 0x80}, []byte(nil))
	// S + ℓ: the same signature with a non-canonical S.
	ell, _ := hex.DecodeString("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010")
	f.Add(seed, []byte("message"), []byte(nil), append(make([]byte, 32), ell...))
	for _, a := range smallOrder {
		pub, _ := hex.DecodeString(a)
		for _, r := range smallOrder {
			rb, _ := hex.DecodeString(r)
			f.Add([]byte(nil), []byte("m"), pub, append(rb, make([]byte, 32)...))
		}
	}
	f.Fuzz(func(t *testing.T, seed, msg, pub, sig []byte) {
		if len(seed) == ed25519.SeedSize {
			key := ed25519.NewKeyFromSeed(seed)
			want := ed25519.Sign(key, msg)
			if got := sign(key, msg); !bytes.Equal(got, want) {
				t.Fatalf("sign = %x, crypto/ed25519 signs %x", got, want)
			}
			pub = xor(key.Public().(ed25519.PublicKey), pub)
			sig = xor(want, sig)
		}
		if len(pub) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize {
			return // verifyHex refuses these before verify
		}
		if got, want := verify(pub, msg, sig), ed25519.Verify(pub, msg, sig); got != want {
			t.Fatalf("verify(%x, %x, %x) = %v, crypto/ed25519 says %v", pub, msg, sig, got, want)
		}
	})
}

// xor returns a copy of a with b XORed into its first bytes.
func xor(a, b []byte) []byte {
	out := bytes.Clone(a)
	for i := 0; i < len(out) && i < len(b); i++ {
		out[i] ^= b[i]
	}
	return out
}

// TestVerifySmallOrder checks the edge cases of the seeds above one by
// one, with a signature both accept: identity R and A with S = 0 verifies
// under the cofactorless equation that crypto/ed25519 uses.
func TestVerifySmallOrder(t *testing.T) {
	accepted := 0
	for _, a := range smallOrder {
		pub, _ := hex.DecodeString(a)
		for _, r := range smallOrder {
			rb, _ := hex.DecodeString(r)
			sig := append(rb, make([]byte, 32)...)
			got, want := verify(pub, []byte("m"), sig), ed25519.Verify(pub, []byte("m"), sig)
			if got != want {
				t.Errorf("A %s, R %s: verify = %v, crypto/ed25519 says %v", a, r, got, want)
			}
			if want {
				accepted++
			}
		}
	}
	if accepted == 0 {
		t.Fatal("no small-order case verified: the test compares only refusals")
	}
}

// TestExpandedKeysBounded checks that the cache of expanded keys holds at
// most maxExpandedKeys keys and that every key still verifies after it was
// dropped.
func TestExpandedKeysBounded(t *testing.T) {
	c := &expandedKeys{keys: map[[ed25519.PublicKeySize]byte]*voi.ExpandedPublicKey{}}
	msg := []byte("bounded")
	keys := make([]ed25519.PrivateKey, maxExpandedKeys+44)
	for i := range keys {
		keys[i] = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{byte(i), byte(i >> 8)}, 16))
	}
	for round := range 2 {
		for i, key := range keys {
			ek, err := c.get(key.Public().(ed25519.PublicKey))
			if err != nil {
				t.Fatal(err)
			}
			if !voi.VerifyExpandedWithOptions(ek, msg, ed25519.Sign(key, msg), verifyOptions) {
				t.Fatalf("round %d: key %d does not verify", round, i)
			}
			if n := len(c.keys); n > maxExpandedKeys {
				t.Fatalf("cache holds %d keys, at most %d", n, maxExpandedKeys)
			}
		}
	}
	if _, err := c.get(make([]byte, 31)); err == nil {
		t.Fatal("a 31-byte key expanded")
	}
}
