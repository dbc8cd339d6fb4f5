// Package version holds the build's version, stamped with
// -ldflags "-X github.com/edgeprov/provisiond/internal/version.Version=…".
package version

// Version is the release version; "dev" for an unstamped build.
var Version = "dev"

// Commit is the git commit the binary was built from; empty when unknown.
var Commit = ""

// String returns Version and, when known, Commit.
func String() string {
	if Commit == "" {
		return Version
	}
	return Version + " (" + Commit + ")"
}
