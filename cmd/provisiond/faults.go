//go:build !faulthook

package main

import (
	"github.com/rs/zerolog"

	"github.com/edgeprov/provisiond/primitives"
)

// withFaults returns p: fault injection exists only in test builds (the
// faulthook build tag, see faulthook.go); release binaries have none.
func withFaults(p *primitives.Table, _ zerolog.Logger) primitiveSet { return p }
