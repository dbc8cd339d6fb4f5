package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"

	"filippo.io/edwards25519"
	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/nacl/box"
)

// maxSealed bounds what Open accepts (a sealed secret of this project is
// a 32-byte key: 80 bytes sealed).
const maxSealed = 4096

// ErrSeal is returned when a sealed secret cannot be opened or made.
var ErrSeal = errors.New("identity: sealed secret")

// X25519Public returns the X25519 (curve25519) public key of an ed25519
// public key: the Montgomery form of its point, as libsodium's
// crypto_sign_ed25519_pk_to_curve25519 computes it.
func X25519Public(pub ed25519.PublicKey) (*[32]byte, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: ed25519 public key of %d bytes", ErrSeal, len(pub))
	}
	p, err := new(edwards25519.Point).SetBytes(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSeal, err)
	}
	var out [32]byte
	copy(out[:], p.BytesMontgomery())
	return &out, nil
}

// X25519Private returns the X25519 private key of an ed25519 key: the
// clamped first half of sha512 of its seed (libsodium's
// crypto_sign_ed25519_sk_to_curve25519).
func X25519Private(key ed25519.PrivateKey) *[32]byte {
	h := sha512.Sum512(key.Seed())
	var out [32]byte
	copy(out[:], h[:32])
	out[0] &= 248
	out[31] &= 127
	out[31] |= 64
	return &out
}

// Seal encrypts secret so that only the node whose ed25519 public key is
// pub can read it: an anonymous NaCl box to the node's X25519 key, in
// base64.
func Seal(pub ed25519.PublicKey, secret []byte) (string, error) {
	to, err := X25519Public(pub)
	if err != nil {
		return "", err
	}
	out, err := box.SealAnonymous(nil, secret, to, rand.Reader)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrSeal, err)
	}
	return base64.StdEncoding.EncodeToString(out), nil
}

// Open decrypts what Seal sealed to key's public key: a secret of at most
// 4096 characters sealed.
func Open(key ed25519.PrivateKey, sealed string) ([]byte, error) {
	return OpenMax(key, sealed, maxSealed)
}

// OpenMax is Open for sealed data of at most limit characters (a sealed
// log tail is larger than a secret).
func OpenMax(key ed25519.PrivateKey, sealed string, limit int) ([]byte, error) {
	if len(sealed) > limit {
		return nil, fmt.Errorf("%w: longer than %d characters", ErrSeal, limit)
	}
	b, err := base64.StdEncoding.DecodeString(sealed)
	if err != nil {
		return nil, fmt.Errorf("%w: not base64", ErrSeal)
	}
	priv := X25519Private(key)
	pub, err := curve25519.X25519(priv[:], curve25519.Basepoint)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSeal, err)
	}
	var pub32 [32]byte
	copy(pub32[:], pub)
	out, ok := box.OpenAnonymous(nil, b, &pub32, priv)
	if !ok {
		return nil, fmt.Errorf("%w: not sealed to this node", ErrSeal)
	}
	return out, nil
}
