package provision

import (
	"unicode/utf8"
)

// Bounds on what the node stores and signs of items a stranger (a user, or
// a compromised explorer) sends.
const (
	// MaxMessageLength bounds a result's message and a transition's
	// message, in bytes: an error quoting a huge field is cut there.
	MaxMessageLength = 1024
	// MaxRefusedField bounds each string field of a refused reservation
	// kept in its Failed record, in bytes: nothing of what was refused
	// is stored larger than a valid reservation's field could be.
	MaxRefusedField = 256
)

// Truncate returns s cut to at most n bytes on a rune boundary, ending in
// "…" when it was cut.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const more = "…"
	cut := max(n-len(more), 0)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + more
}
