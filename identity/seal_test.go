package identity_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"testing"

	"golang.org/x/crypto/curve25519"

	"github.com/edgeprov/provisiond/identity"
)

func TestSealOpen(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	secret := []byte("0123456789abcdef0123456789abcdef")
	sealed, err := identity.Seal(pub, secret)
	if err != nil {
		t.Fatal(err)
	}
	got, err := identity.Open(key, sealed)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if _, err := identity.Open(other, sealed); !errors.Is(err, identity.ErrSeal) {
		t.Fatalf("another node opened it: %v", err)
	}
	if _, err := identity.Open(key, sealed[:len(sealed)-8]+"AAAAAAA="); !errors.Is(err, identity.ErrSeal) {
		t.Fatalf("a changed box opened: %v", err)
	}
	// The two conversions agree: the private key's public key is the
	// public key's Montgomery form.
	x, _ := curve25519.X25519(identity.X25519Private(key)[:], curve25519.Basepoint)
	xp, err := identity.X25519Public(pub)
	if err != nil || !bytes.Equal(x, xp[:]) {
		t.Fatalf("X25519 of the private key %x != Montgomery form of the public key %x (%v)", x, xp, err)
	}
}

// FuzzOpen checks that Open never panics and opens only what was
// sealed to its key.
func FuzzOpen(f *testing.F) {
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	sealed, _ := identity.Seal(pub, []byte("k"))
	f.Add(sealed)
	f.Add("")
	f.Add("!!")
	f.Add("AAAA")
	f.Fuzz(func(t *testing.T, s string) {
		if out, err := identity.Open(key, s); err == nil && string(out) != "k" {
			t.Fatalf("opened %q from a box never sealed: %q", out, s)
		}
	})
}
