package layer_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/edgeprov/provisiond/internal/layer"
	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/klauspost/compress/zstd"
)

type entry struct {
	hdr  tar.Header
	body string
}

func makeTar(t testing.TB, es []entry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range es {
		h := e.hdr
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if e.body != "" {
			tw.Write([]byte(e.body))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func gz(b []byte) []byte {
	var out bytes.Buffer
	w := gzip.NewWriter(&out)
	w.Write(b)
	w.Close()
	return out.Bytes()
}

func zst(t testing.TB, b []byte, opts ...zstd.EOption) []byte {
	t.Helper()
	var out bytes.Buffer
	w, err := zstd.NewWriter(&out, opts...)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

var big = layer.Limit{Bytes: 1 << 30, Entries: 1 << 20}

// A layer unpacks alike plain, gzip or zstd, with the diff ID of its tar;
// a zstd layer asking for a window past MaxZstdWindow is refused.
func TestUnpackCompressions(t *testing.T) {
	raw := makeTar(t, []entry{
		{hdr: tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755}},
		{hdr: tar.Header{Name: "etc/motd", Typeflag: tar.TypeReg}, body: strings.Repeat("hello ", 10000)},
	})
	sum := sha256.Sum256(raw)
	for _, c := range []struct {
		name string
		b    []byte
	}{{"tar", raw}, {"gzip", gz(raw)}, {"zstd", zst(t, raw)}} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			st, err := layer.Unpack(t.Context(), bytes.NewReader(c.b), dir, big)
			if err != nil || st.DiffID != hex.EncodeToString(sum[:]) || st.Entries != 2 {
				t.Fatalf("Unpack = %+v, %v", st, err)
			}
			if got, err := os.ReadFile(filepath.Join(dir, "etc/motd")); err != nil || len(got) != 60000 {
				t.Fatalf("etc/motd: %d bytes, %v", len(got), err)
			}
		})
	}
	// A frame whose window is 128 MiB (zstd --long=27).
	wide := zst(t, bytes.Repeat(raw, 40), zstd.WithWindowSize(128<<20), zstd.WithSingleSegment(false))
	if _, err := layer.Unpack(t.Context(), bytes.NewReader(wide), t.TempDir(), big); err == nil || !strings.Contains(err.Error(), "window") {
		t.Fatalf("a 128 MiB zstd window unpacked: %v", err)
	}
}

func TestUnpackWhiteoutsAndModes(t *testing.T) {
	testutil.RequiresRoot(t)
	raw := makeTar(t, []entry{
		{hdr: tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755}},
		{hdr: tar.Header{Name: "etc/.wh.passwd", Typeflag: tar.TypeReg}},
		{hdr: tar.Header{Name: "var/cache/", Typeflag: tar.TypeDir, Mode: 0o755}},
		{hdr: tar.Header{Name: "var/cache/.wh..wh..opq", Typeflag: tar.TypeReg}},
		{hdr: tar.Header{Name: "var/cache/new", Typeflag: tar.TypeReg}, body: "new"},
		{hdr: tar.Header{Name: "bin/su", Typeflag: tar.TypeReg, Mode: 0o4755, Uid: 0}, body: "su"},
		{hdr: tar.Header{Name: "home/u/f", Typeflag: tar.TypeReg, Uid: 1000, Gid: 1000}, body: "f"},
		{hdr: tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}},
		{hdr: tar.Header{Name: "../../escape", Typeflag: tar.TypeReg}, body: "x"},
		{hdr: tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "/"}},
		{hdr: tar.Header{Name: "link/outside", Typeflag: tar.TypeReg}, body: "x"},
		{hdr: tar.Header{Name: "hard", Typeflag: tar.TypeLink, Linkname: "bin/su"}},
	})
	parent := t.TempDir()
	dir := filepath.Join(parent, "l")
	os.Mkdir(dir, 0o700)
	st, err := layer.Unpack(t.Context(), bytes.NewReader(gz(raw)), dir, big)
	// "link/outside" goes through a symlink to "/": os.Root refuses it.
	if err == nil {
		t.Fatal("an entry through a symlink leaving the layer was unpacked")
	}
	// Everything before it is in place; check without the escape entries.
	_ = st
	raw = makeTar(t, []entry{
		{hdr: tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755}},
		{hdr: tar.Header{Name: "etc/.wh.passwd", Typeflag: tar.TypeReg}},
		{hdr: tar.Header{Name: "var/cache/", Typeflag: tar.TypeDir, Mode: 0o755}},
		{hdr: tar.Header{Name: "var/cache/.wh..wh..opq", Typeflag: tar.TypeReg}},
		{hdr: tar.Header{Name: "var/cache/new", Typeflag: tar.TypeReg}, body: "new"},
		{hdr: tar.Header{Name: "bin/su", Typeflag: tar.TypeReg, Mode: 0o4755}, body: "su"},
		{hdr: tar.Header{Name: "home/u/f", Typeflag: tar.TypeReg, Uid: 1000, Gid: 1000}, body: "f"},
		{hdr: tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}},
		{hdr: tar.Header{Name: "../../escape", Typeflag: tar.TypeReg}, body: "x"},
		{hdr: tar.Header{Name: "hard", Typeflag: tar.TypeLink, Linkname: "bin/su"}},
	})
	dir = filepath.Join(parent, "m")
	os.Mkdir(dir, 0o700)
	st, err = layer.Unpack(t.Context(), bytes.NewReader(gz(raw)), dir, big)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	if st.DiffID != hex.EncodeToString(sum[:]) || st.Entries != 10 || st.Bytes != int64(len("new")+len("su")+len("f")+len("x")) {
		t.Fatalf("stats = %+v, want diff id %x, 10 entries", st, sum)
	}
	var s unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, "etc/passwd"), &s); err != nil {
		t.Fatal(err)
	}
	if s.Mode&unix.S_IFMT != unix.S_IFCHR || s.Rdev != 0 {
		t.Fatalf("etc/passwd mode %o rdev %d, want a 0:0 character device", s.Mode, s.Rdev)
	}
	buf := make([]byte, 8)
	n, err := unix.Lgetxattr(filepath.Join(dir, "var/cache"), "trusted.overlay.opaque", buf)
	if err != nil || string(buf[:n]) != "y" {
		t.Fatalf("var/cache opaque xattr = %q, %v", buf[:n], err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "var/cache/.wh..wh..opq")); err == nil {
		t.Fatal("the opaque marker was unpacked as a file")
	}
	fi, err := os.Stat(filepath.Join(dir, "bin/su"))
	if err != nil || fi.Mode()&os.ModeSetuid == 0 {
		t.Fatalf("bin/su: %v, %v; want setuid kept", fi.Mode(), err)
	}
	if err := unix.Lstat(filepath.Join(dir, "home/u/f"), &s); err != nil || s.Uid != 1000 {
		t.Fatalf("home/u/f uid %d, %v", s.Uid, err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "dev/null")); err == nil {
		t.Fatal("a device node was unpacked")
	}
	if _, err := os.Stat(filepath.Join(dir, "escape")); err != nil {
		t.Fatalf("../../escape was not confined to the layer: %v", err)
	}
	if _, err := os.Stat(filepath.Join(parent, "escape")); err == nil {
		t.Fatal("../../escape written outside")
	}
}

func TestUnpackLimits(t *testing.T) {
	raw := makeTar(t, []entry{
		{hdr: tar.Header{Name: "a", Typeflag: tar.TypeReg}, body: "0123456789"},
		{hdr: tar.Header{Name: "b", Typeflag: tar.TypeReg}, body: "0123456789"},
	})
	for _, tc := range []struct {
		name  string
		limit layer.Limit
	}{
		{"bytes", layer.Limit{Bytes: 15, Entries: 10}},
		{"entries", layer.Limit{Bytes: 100, Entries: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := layer.Unpack(t.Context(), bytes.NewReader(raw), t.TempDir(), tc.limit); !errors.Is(err, layer.ErrTooLarge) {
				t.Fatalf("Unpack = %v, want ErrTooLarge", err)
			}
		})
	}
}

func TestUnpackBadWhiteout(t *testing.T) {
	raw := makeTar(t, []entry{{hdr: tar.Header{Name: "a/.wh..", Typeflag: tar.TypeReg}}})
	if _, err := layer.Unpack(t.Context(), bytes.NewReader(raw), t.TempDir(), big); err == nil {
		t.Fatal("a whiteout of .. was accepted")
	}
}

// FuzzUnpack checks that no layer, however made, writes outside its
// directory or panics.
func FuzzUnpack(f *testing.F) {
	f.Add(makeTar(f, []entry{{hdr: tar.Header{Name: "a/.wh.b", Typeflag: tar.TypeReg}}, {hdr: tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "../.."}}}))
	f.Add(makeTar(f, []entry{{hdr: tar.Header{Name: "d/.wh..wh..opq", Typeflag: tar.TypeReg}}, {hdr: tar.Header{Name: "../x", Typeflag: tar.TypeReg}, body: "x"}}))
	f.Add(zst(f, makeTar(f, []entry{{hdr: tar.Header{Name: "z/../../x", Typeflag: tar.TypeReg}, body: "x"}})))
	f.Add(gz(makeTar(f, []entry{{hdr: tar.Header{Name: "g", Typeflag: tar.TypeSymlink, Linkname: "/etc"}}, {hdr: tar.Header{Name: "g/passwd", Typeflag: tar.TypeReg}, body: "x"}})))
	f.Fuzz(func(t *testing.T, b []byte) {
		parent := t.TempDir()
		dir := filepath.Join(parent, "l")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		layer.Unpack(t.Context(), bytes.NewReader(b), dir, layer.Limit{Bytes: 1 << 20, Entries: 100})
		es, err := os.ReadDir(parent)
		if err != nil || len(es) != 1 {
			t.Fatalf("the layer wrote outside its directory: %v %v", es, err)
		}
	})
}
