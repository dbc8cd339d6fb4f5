package network

import (
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/edgeprov/provisiond/internal/testutil"
)

// A link that vanished between finding it and deleting it (the kernel
// tears down a veth with its peer's namespace, asynchronously) is deleted
// already: delLink says so without an error. CI once failed on the raw
// ENODEV ("deleting stale port …: no such device").
func TestDelLinkGone(t *testing.T) {
	testutil.RequiresRoot(t)
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	ns, err := netns.New()
	if serr := netns.Set(orig); serr != nil {
		panic(serr) // this thread must not run anything else in the wrong namespace
	}
	orig.Close()
	runtime.UnlockOSThread()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "gone0"}, PeerName: "gone1"}); err != nil {
		t.Fatal(err)
	}
	l, err := h.LinkByName("gone0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkDel(l); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkDel(l); err == nil {
		t.Fatal("deleting a deleted link succeeded; the test no longer covers the race")
	}
	if err := delLink(h, l); err != nil {
		t.Fatalf("delLink of a link already gone: %v", err)
	}
}
