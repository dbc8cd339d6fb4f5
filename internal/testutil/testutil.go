// Package testutil holds helpers shared by provisiond's tests: the root
// gate for tests that act on the real machine.
package testutil

import (
	"os"
	"os/exec"
	"testing"
)

// RequiresRoot skips the test with a clear reason unless it runs as root.
// As root (CI) the test runs for real.
func RequiresRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root (network namespaces, loop devices, mounts, runc); run `make test` as root")
	}
}

// RequiresCommand skips the test with a clear reason unless name is on PATH.
// `.ci/run` installs every command the tests need, so in CI nothing skips.
func RequiresCommand(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("skipping: %s not on PATH (`make deps` installs it)", name)
	}
	return p
}
