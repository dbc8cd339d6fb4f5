package identity

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mr-tron/base58"
)

// writeKeyFile writes content to a file of mode perm in a temporary
// directory and returns its path.
func writeKeyFile(tb testing.TB, content string, perm os.FileMode) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "key")
	if err := os.WriteFile(p, []byte(content), perm); err != nil {
		tb.Fatal(err)
	}
	if err := os.Chmod(p, perm); err != nil { // the umask may have narrowed perm
		tb.Fatal(err)
	}
	return p
}

// testSeed is the fixed seed 0x01..0x20.
func testSeed() []byte {
	s := make([]byte, ed25519.SeedSize)
	for i := range s {
		s[i] = byte(i + 1)
	}
	return s
}

func TestCreateLoad(t *testing.T) {
	p := filepath.Join(t.TempDir(), "etc", "provisiond", "node.key")
	key, err := Create(p)
	if err != nil {
		t.Fatalf("Create() = %v", err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %04o, want 0600", fi.Mode().Perm())
	}
	di, err := os.Stat(filepath.Dir(p))
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Errorf("key directory mode = %04o, want 0700", di.Mode().Perm())
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != hex.EncodeToString(key.Seed())+"\n" {
		t.Errorf("key file holds %q, want the hex seed and a newline", b)
	}
	loaded, err := Load(p)
	if err != nil {
		t.Fatalf("Load() = %v", err)
	}
	if !loaded.Equal(key) {
		t.Error("Load() returned another key than Create()")
	}
	if _, err := Create(p); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Create() over an existing key = %v, want fs.ErrExist", err)
	}
	if again, err := Load(p); err != nil || !again.Equal(key) {
		t.Errorf("the key changed after a refused Create: %v", err)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(p), "*")); len(leftovers) != 1 {
		t.Errorf("key directory holds %v, want only the key", leftovers)
	}
}

func TestLoad(t *testing.T) {
	seed := testSeed()
	want := ed25519.NewKeyFromSeed(seed)
	seedHex := hex.EncodeToString(seed)
	tests := []struct {
		name    string
		content string
		perm    os.FileMode
		missing bool
		err     error
	}{
		{name: "valid", content: seedHex + "\n", perm: 0o600},
		{name: "valid-no-newline", content: seedHex, perm: 0o600},
		{name: "valid-surrounding-space", content: "  " + seedHex + " \r\n", perm: 0o600},
		{name: "valid-uppercase", content: strings.ToUpper(seedHex), perm: 0o600},
		{name: "valid-owner-read-only", content: seedHex, perm: 0o400},
		{name: "missing", missing: true, err: ErrNoKey},
		{name: "world-readable", content: seedHex, perm: 0o644, err: ErrPermissions},
		{name: "group-readable", content: seedHex, perm: 0o640, err: ErrPermissions},
		{name: "world-writable", content: seedHex, perm: 0o602, err: ErrPermissions},
		{name: "group-executable", content: seedHex, perm: 0o610, err: ErrPermissions},
		{name: "empty", content: "", perm: 0o600, err: ErrMalformed},
		{name: "not-hex", content: strings.Repeat("zz", 32), perm: 0o600, err: ErrMalformed},
		{name: "short-seed", content: seedHex[:62], perm: 0o600, err: ErrMalformed},
		{name: "odd-length", content: seedHex[:63], perm: 0o600, err: ErrMalformed},
		{name: "private-key-not-seed", content: hex.EncodeToString(want), perm: 0o600, err: ErrMalformed},
		{name: "two-lines", content: seedHex + "\n" + seedHex + "\n", perm: 0o600, err: ErrMalformed},
		{name: "raw-bytes", content: string(seed), perm: 0o600, err: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "absent")
			if !tt.missing {
				p = writeKeyFile(t, tt.content, tt.perm)
			}
			got, err := Load(p)
			if !errors.Is(err, tt.err) {
				t.Fatalf("Load() = %v, want %v", err, tt.err)
			}
			if tt.err == nil && !got.Equal(want) {
				t.Errorf("Load() returned another key")
			}
		})
	}
}

func TestLoadOrCreate(t *testing.T) {
	t.Run("missing-is-created", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "key")
		key, err := LoadOrCreate(p)
		if err != nil {
			t.Fatalf("LoadOrCreate() = %v", err)
		}
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("created key file: %v, mode %v", err, fi.Mode())
		}
		again, err := LoadOrCreate(p)
		if err != nil || !again.Equal(key) {
			t.Fatalf("second LoadOrCreate() = %v or another key", err)
		}
	})
	for _, tt := range []struct {
		name, content string
		perm          os.FileMode
		err           error
	}{
		{"world-readable-not-replaced", hex.EncodeToString(testSeed()), 0o644, ErrPermissions},
		{"malformed-not-replaced", "garbage", 0o600, ErrMalformed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := writeKeyFile(t, tt.content, tt.perm)
			if _, err := LoadOrCreate(p); !errors.Is(err, tt.err) {
				t.Fatalf("LoadOrCreate() = %v, want %v", err, tt.err)
			}
			b, err := os.ReadFile(p)
			if err != nil || string(b) != tt.content {
				t.Fatalf("key file changed to %q (%v)", b, err)
			}
		})
	}
}

// TestLoadOrCreateConcurrent starts many creators of one key at once (a
// daemon and a CLI started together): all must end with the same key, and
// none may see a half-written file.
func TestLoadOrCreateConcurrent(t *testing.T) {
	for round := range 20 {
		p := filepath.Join(t.TempDir(), "key")
		const n = 8
		keys := make([]ed25519.PrivateKey, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { keys[i], errs[i] = LoadOrCreate(p) })
		}
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("round %d: LoadOrCreate() = %v", round, errs[i])
			}
			if !keys[i].Equal(keys[0]) {
				t.Fatalf("round %d: creators ended with different keys", round)
			}
		}
	}
}

func TestNodeID(t *testing.T) {
	zero := make(ed25519.PublicKey, ed25519.PublicKeySize)
	leadingZero := make(ed25519.PublicKey, ed25519.PublicKeySize)
	leadingZero[5] = 7
	allOnes := ed25519.PublicKey(bytes.Repeat([]byte{0xff}, ed25519.PublicKeySize))
	for _, tt := range []struct {
		name string
		pub  ed25519.PublicKey
	}{
		{"fixed-seed", ed25519.NewKeyFromSeed(testSeed()).Public().(ed25519.PublicKey)},
		{"all-zero", zero},
		{"leading-zero-bytes", leadingZero},
		{"all-ones", allOnes},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// The encoding round-trips any 32 bytes; PublicKey then also
			// refuses those that are no usable key (TestCheckPublicKey).
			id := NodeID(tt.pub)
			got, err := decodeNodeID(id)
			if err != nil {
				t.Fatalf("decodeNodeID(%q) = %v", id, err)
			}
			if !tt.pub.Equal(ed25519.PublicKey(got)) {
				t.Fatalf("PublicKey(NodeID(pub)) = %x, want %x", got, tt.pub)
			}
		})
	}
	if got := NodeID(zero); got != strings.Repeat("1", 32) {
		t.Errorf("NodeID(zero key) = %q, want 32 '1's", got)
	}
}

func TestPublicKeyRefused(t *testing.T) {
	valid := NodeID(ed25519.NewKeyFromSeed(testSeed()).Public().(ed25519.PublicKey))
	for _, tt := range []struct{ name, id string }{
		{"empty", ""},
		{"invalid-characters", "0OIl" + valid[4:]},
		{"short", valid[:20]},
		{"too-long", base58.Encode(bytes.Repeat([]byte{0xff}, 33))},
		{"thirty-one-bytes", base58.Encode(bytes.Repeat([]byte{0xff}, 31))},
		{"space", valid + " "},
		{"hex-user-id", UserID(ed25519.NewKeyFromSeed(testSeed()).Public().(ed25519.PublicKey))},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := PublicKey(tt.id); !errors.Is(err, ErrBadNodeID) {
				t.Fatalf("PublicKey(%q) = %v, want ErrBadNodeID", tt.id, err)
			}
		})
	}
}

func TestUserID(t *testing.T) {
	pub := ed25519.NewKeyFromSeed(testSeed()).Public().(ed25519.PublicKey)
	id := UserID(pub)
	if id != hex.EncodeToString(pub) || len(id) != 64 || strings.ToLower(id) != id {
		t.Fatalf("UserID() = %q, want lowercase hex of the key", id)
	}
}

// FuzzPublicKey decodes arbitrary node IDs: never a panic, and an accepted
// ID is the canonical encoding of a 32-byte key.
func FuzzPublicKey(f *testing.F) {
	f.Add(NodeID(ed25519.NewKeyFromSeed(testSeed()).Public().(ed25519.PublicKey)))
	f.Add(strings.Repeat("1", 32))
	f.Add("")
	f.Add("0OIl")
	f.Add(strings.Repeat("z", 44))
	f.Fuzz(func(t *testing.T, id string) {
		pub, err := PublicKey(id)
		if err != nil {
			if !errors.Is(err, ErrBadNodeID) {
				t.Fatalf("PublicKey(%q) = %v, want ErrBadNodeID", id, err)
			}
			return
		}
		if len(pub) != ed25519.PublicKeySize {
			t.Fatalf("PublicKey(%q) returned %d bytes", id, len(pub))
		}
		if again := NodeID(pub); again != id {
			t.Fatalf("PublicKey accepted non-canonical %q (canonical %q)", id, again)
		}
	})
}

// FuzzLoad reads arbitrary key file content: never a panic, and an accepted
// file holds exactly one hex seed.
func FuzzLoad(f *testing.F) {
	f.Add([]byte(hex.EncodeToString(testSeed()) + "\n"))
	f.Add([]byte(""))
	f.Add([]byte("zz"))
	f.Fuzz(func(t *testing.T, content []byte) {
		p := filepath.Join(t.TempDir(), "key")
		if err := os.WriteFile(p, content, 0o600); err != nil {
			t.Fatal(err)
		}
		key, err := Load(p)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Load() = %v, want ErrMalformed", err)
			}
			return
		}
		seed, herr := hex.DecodeString(strings.TrimSpace(string(content)))
		if herr != nil || !bytes.Equal(seed, key.Seed()) {
			t.Fatalf("Load(%q) accepted content that is not the key's seed", content)
		}
	})
}

// smallOrder are the encodings of the eight points of order dividing 8,
// as the curve's references list them (libsodium's blocklist).
var smallOrder = []string{
	"0100000000000000000000000000000000000000000000000000000000000000", // the identity
	"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // order 2
	"0000000000000000000000000000000000000000000000000000000000000000", // order 4
	"0000000000000000000000000000000000000000000000000000000000000080", // order 4
	"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a", // order 8
	"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa", // order 8
	"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", // order 8
	"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85", // order 8
}

func TestCheckPublicKey(t *testing.T) {
	for i := range 200 {
		seed := make([]byte, ed25519.SeedSize)
		seed[0], seed[1] = byte(i), byte(i>>8)
		pub := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
		if err := CheckPublicKey(pub); err != nil {
			t.Fatalf("a real key refused: %v", err)
		}
		if _, err := PublicKey(NodeID(pub)); err != nil {
			t.Fatalf("a real node ID refused: %v", err)
		}
	}
	for _, h := range smallOrder {
		pub, _ := hex.DecodeString(h)
		err := CheckPublicKey(pub)
		if !errors.Is(err, ErrWeakKey) || !strings.Contains(err.Error(), "small order") {
			t.Errorf("%s: %v, want a small-order refusal", h, err)
		}
		// The identity forges: one signature (R = identity, S = 0) verifies
		// for every message under it, which is why it is refused.
		if _, err := PublicKey(NodeID(pub)); !errors.Is(err, ErrBadNodeID) || !errors.Is(err, ErrWeakKey) {
			t.Errorf("node ID of %s: %v", h, err)
		}
	}
	identity, _ := hex.DecodeString(smallOrder[0])
	forged := append(bytes.Clone(identity), make([]byte, 32)...)
	if !ed25519.Verify(identity, []byte("any result"), forged) || !ed25519.Verify(identity, []byte("another"), forged) {
		t.Fatal("the premise fails: crypto/ed25519 refuses the identity's forgery")
	}
	// Non-canonical: y ≥ p, written y - p + p, for the few y on the curve.
	nonCanonical := 0
	for k := range 19 {
		pub := make([]byte, 32)
		for i := range pub {
			pub[i] = 0xff
		}
		pub[0] = 0xed + byte(k) // p = 2^255 - 19 = 0x7fff…ffed
		pub[31] = 0x7f
		err := CheckPublicKey(pub)
		if err == nil {
			t.Fatalf("non-canonical y = p + %d accepted", k)
		}
		if strings.Contains(err.Error(), "canonical") {
			nonCanonical++
		}
	}
	if nonCanonical == 0 {
		t.Fatal("no non-canonical encoding of a point was tried")
	}
	for _, bad := range [][]byte{nil, make([]byte, 31), make([]byte, 33)} {
		if err := CheckPublicKey(bad); !errors.Is(err, ErrWeakKey) {
			t.Errorf("%d bytes: %v", len(bad), err)
		}
	}
}

// FuzzCheckPublicKey checks arbitrary keys: never a panic, and an accepted
// key is what crypto/ed25519 and our checks agree is a usable key: the
// canonical encoding of a point outside the small-order subgroup.
func FuzzCheckPublicKey(f *testing.F) {
	for _, h := range smallOrder {
		b, _ := hex.DecodeString(h)
		f.Add(b)
	}
	f.Add([]byte(ed25519.NewKeyFromSeed(testSeed()).Public().(ed25519.PublicKey)))
	f.Fuzz(func(t *testing.T, pub []byte) {
		if CheckPublicKey(pub) != nil {
			return
		}
		for _, h := range smallOrder {
			if hex.EncodeToString(pub) == h {
				t.Fatalf("small-order key %s accepted", h)
			}
		}
		if len(pub) != 32 || pub[31]&0x7f == 0x7f && pub[0] >= 0xed && allFF(pub[1:31]) {
			t.Fatalf("non-canonical or short key %x accepted", pub)
		}
	})
}

func allFF(b []byte) bool {
	for _, c := range b {
		if c != 0xff {
			return false
		}
	}
	return true
}
