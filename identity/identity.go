// Package identity manages ed25519 keys kept as seed files: the node's
// identity (whose base58 public key is the node ID) and users' keys for
// provctl. A key file holds the 32-byte seed, hex encoded; it is created
// with mode 0600 and refused when group or world may read it.
package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"filippo.io/edwards25519"
	"github.com/mr-tron/base58"
)

// Errors of the identity package.
var (
	ErrNoKey       = errors.New("identity: no key file")
	ErrPermissions = errors.New("identity: key file readable by group or others")
	ErrMalformed   = errors.New("identity: malformed key file")
	ErrBadNodeID   = errors.New("identity: malformed node id")
	ErrWeakKey     = errors.New("identity: public key refused")
)

// Load reads the seed file at path and returns its private key. It fails
// with ErrNoKey when the file does not exist, ErrPermissions when its mode
// lets group or others read or write it, ErrMalformed when it does not hold
// a hex-encoded 32-byte seed.
func Load(path string) (ed25519.PrivateKey, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNoKey, path)
	}
	if err != nil {
		return nil, fmt.Errorf("reading key %s: %w", path, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o, want 0600 (chmod 600 %s)", ErrPermissions, path, fi.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading key %s: %w", path, err)
	}
	seed, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("%w: %s does not hold a hex-encoded %d-byte seed", ErrMalformed, path, ed25519.SeedSize)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// Create makes a new key and writes its seed to path with mode 0600,
// creating the directory (0700) if needed. It never overwrites an existing
// file (the error then wraps fs.ErrExist), and the file appears complete or
// not at all: the seed is written and synced to a temporary file first,
// which is then hard-linked to path.
func Create(path string) (ed25519.PrivateKey, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating key: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating key directory: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("creating key %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	cherr := f.Chmod(0o600)
	_, werr := f.WriteString(hex.EncodeToString(key.Seed()) + "\n")
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(cherr, werr, serr, cerr); err != nil {
		return nil, fmt.Errorf("writing key %s: %w", path, err)
	}
	// Link, unlike rename, fails when path exists: a key is never replaced.
	if err := os.Link(tmp, path); err != nil {
		return nil, fmt.Errorf("creating key %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync() // best effort: make the new name durable
		d.Close()
	}
	return key, nil
}

// LoadOrCreate loads the key at path, creating it first when it does not
// exist. Any other problem (permissions, malformed content) is returned and
// nothing is overwritten.
func LoadOrCreate(path string) (ed25519.PrivateKey, error) {
	key, err := Load(path)
	if errors.Is(err, ErrNoKey) {
		key, err = Create(path)
		if errors.Is(err, fs.ErrExist) { // lost a race with another creator
			return Load(path)
		}
	}
	return key, err
}

// NodeID returns the node ID of a public key: its base58 encoding.
func NodeID(pub ed25519.PublicKey) string {
	return base58.Encode(pub)
}

// PublicKey decodes a node ID back into the node's public key. A key
// CheckPublicKey refuses is an error wrapping both ErrBadNodeID and
// ErrWeakKey.
func PublicKey(nodeID string) (ed25519.PublicKey, error) {
	b, err := decodeNodeID(nodeID)
	if err != nil {
		return nil, err
	}
	if err := CheckPublicKey(b); err != nil {
		return nil, fmt.Errorf("%w: %q: %w", ErrBadNodeID, nodeID, err)
	}
	return ed25519.PublicKey(b), nil
}

// decodeNodeID decodes the base58 of a node ID into its 32 bytes.
func decodeNodeID(nodeID string) ([]byte, error) {
	b, err := base58.Decode(nodeID)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: %q", ErrBadNodeID, nodeID)
	}
	return b, nil
}

// CheckPublicKey refuses, with an error wrapping ErrWeakKey, an ed25519
// public key that no honestly made key pair has: one that is not the
// canonical encoding of a curve point, or a point of small order (the
// identity among them). crypto/ed25519 verifies against such keys, and
// for a small-order key one signature verifies for many messages, so
// whoever registered it could have results or reservations "signed" by it
// forged by anyone. Registrations and the verification of what an explorer
// relays check keys with it.
func CheckPublicKey(pub []byte) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: %d bytes, want %d", ErrWeakKey, len(pub), ed25519.PublicKeySize)
	}
	p, err := new(edwards25519.Point).SetBytes(pub)
	if err != nil {
		return fmt.Errorf("%w: not a curve point", ErrWeakKey)
	}
	if string(p.Bytes()) != string(pub) {
		return fmt.Errorf("%w: not the canonical encoding of its point", ErrWeakKey)
	}
	if new(edwards25519.Point).MultByCofactor(p).Equal(edwards25519.NewIdentityPoint()) == 1 {
		return fmt.Errorf("%w: a point of small order", ErrWeakKey)
	}
	return nil
}

// UserID returns the user ID of a public key: its hex encoding.
func UserID(pub ed25519.PublicKey) string {
	return hex.EncodeToString(pub)
}
