// Package internal groups provisiond's private helpers: version stamping
// (internal/version) and test helpers (internal/testutil).
package internal
