package main

import (
	"encoding/json"
	"runtime"
	"strings"
	"testing"

	"github.com/edgeprov/provisiond/internal/registrytest"
)

// TestCLIImage imports an OCI layout, lists it, and prunes it only when
// asked to remove imported images too.
func TestCLIImage(t *testing.T) {
	dir := fillNode(t)
	img := registrytest.Image(t, runtime.GOARCH, registrytest.Layer(t, []registrytest.File{{Name: "hello", Body: []byte("hi")}}))
	lay := registrytest.WriteLayout(t, img)
	d, _ := img.Digest()
	out, errOut, code := provisiond(t, dir, "image", "import", lay)
	if code != 0 || !strings.Contains(out, "imported sha256:"+d.Hex) {
		t.Fatalf("image import: exit %d, %q %s", code, out, errOut)
	}
	ls := func() []imageRow {
		t.Helper()
		out, errOut, code := provisiond(t, dir, "image", "ls", "--json")
		if code != 0 {
			t.Fatalf("image ls: exit %d: %s", code, errOut)
		}
		var rows []imageRow
		if err := json.Unmarshal([]byte(out), &rows); err != nil {
			t.Fatalf("image ls --json: %v\n%s", err, out)
		}
		return rows
	}
	rows := ls()
	if len(rows) != 1 || rows[0].Digest != d.Hex || !rows[0].Imported || rows[0].Kind != "manifest" || rows[0].Bytes == 0 {
		t.Fatalf("image ls = %+v", rows)
	}
	if out, _, _ := provisiond(t, dir, "image", "ls"); !strings.Contains(out, "manifest (imported)") {
		t.Fatalf("image ls:\n%s", out)
	}
	if _, errOut, code := provisiond(t, dir, "image", "prune"); code != 0 {
		t.Fatalf("image prune: exit %d: %s", code, errOut)
	}
	if rows := ls(); len(rows) != 1 {
		t.Fatalf("image prune removed an imported image: %+v", rows)
	}
	out, errOut, code = provisiond(t, dir, "image", "prune", "--imported")
	if code != 0 || !strings.Contains(out, "3 blobs") {
		t.Fatalf("image prune --imported: exit %d: %q %s", code, out, errOut)
	}
	if rows := ls(); len(rows) != 0 {
		t.Fatalf("images left: %+v", rows)
	}
}
