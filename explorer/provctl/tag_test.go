package provctl

import (
	"runtime"
	"strings"
	"testing"

	"github.com/edgeprov/provisiond/internal/registrytest"
)

func TestResolveTag(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	ref := reg.Push(t, "team/app", registrytest.Image(t, runtime.GOARCH, registrytest.Layer(t, []registrytest.File{{Name: "a", Body: []byte("a")}})))
	got, err := resolveTag(t.Context(), reg.Host+"/team/app:test")
	if err != nil || got != ref.String() {
		t.Fatalf("resolveTag = %q, %v; want %q", got, err, ref)
	}
	if _, err := resolveTag(t.Context(), reg.Host+"/team/app:missing"); err == nil {
		t.Fatal("a missing tag resolved")
	}
	if _, err := resolveTag(t.Context(), "Bad Name:x"); err == nil || !strings.Contains(err.Error(), "REGISTRY/REPO") {
		t.Fatalf("bad name: %v", err)
	}
}
