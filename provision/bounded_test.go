package provision_test

import (
	"testing"

	"github.com/edgeprov/provisiond/provision"
)

func TestTruncate(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly-10", 10, "exactly-10"},
		{"0123456789abc", 10, "0123456…"},
		{"ééééé", 6, "é…"}, // never cuts a rune in two
	}
	for _, tt := range tests {
		if got := provision.Truncate(tt.in, tt.n); got != tt.want || len(got) > tt.n {
			t.Errorf("Truncate(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}
