// Package testutil holds helpers shared by provisiond's tests: the root
// and command gates for tests that act on the real machine, and random
// names.
package testutil

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"testing"
)

// inCI reports whether the tests run in CI ($CI set, as .ci/run's caller
// does). CI installs everything the tests need and runs as root, so there
// a missing prerequisite is a broken machine: the gates fail instead of
// skipping, and a green CI run cannot hide a skipped proof.
func inCI() bool { return os.Getenv("CI") != "" }

// RequiresRoot skips the test with a clear reason unless it runs as root.
// As root (CI) the test runs for real; in CI without root it fails.
func RequiresRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	const why = "needs root (network namespaces, loop devices, mounts, runc); run `make test` as root"
	if inCI() {
		t.Fatal("CI is set but the test " + why)
	}
	t.Skip("skipping: " + why)
}

// RequiresCommand returns the path of name, and skips the test with a
// clear reason when name is not on PATH. `.ci/run` installs every command
// the tests need, so in CI a missing command fails the test.
func RequiresCommand(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if inCI() {
		t.Fatalf("CI is set but %s is not on PATH (scripts/deps.sh installs it)", name)
	}
	t.Skipf("skipping: %s not on PATH (`make deps` installs it)", name)
	return ""
}

// RandHex returns n random bytes in hex: a fresh name for a test's objects.
func RandHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// MustJSON returns the JSON encoding of v, failing the test when v does
// not encode.
func MustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
