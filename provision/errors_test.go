package provision_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/edgeprov/provisiond/provision"
)

func TestIsTemporary(t *testing.T) {
	base := errors.New("disk full")
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"unclassified", base, true},
		{"unclassified-wrapped", fmt.Errorf("mounting: %w", base), true},
		{"context-canceled", context.Canceled, true},
		{"temporary", provision.Temporary(base), true},
		{"permanent", provision.Permanent(base), false},
		{"permanentf", provision.Permanentf("bad spec %q: %w", "x", provision.ErrBadField), false},
		{"temporary-wrapped", fmt.Errorf("provisioning r-1: %w", provision.Temporary(base)), true},
		{"permanent-wrapped", fmt.Errorf("provisioning r-1: %w", provision.Permanent(base)), false},
		{"permanent-wrapped-twice", fmt.Errorf("a: %w", fmt.Errorf("b: %w", provision.Permanent(base))), false},
		{"outermost-wins-permanent", provision.Permanent(provision.Temporary(base)), false},
		{"outermost-wins-temporary", provision.Temporary(provision.Permanent(base)), true},
		{"joined-permanent-first", errors.Join(provision.Permanent(base), base), false},
		{"empty-error", &provision.Error{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := provision.IsTemporary(tt.err); got != tt.want {
				t.Errorf("IsTemporary(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestErrorClassKeepsCause(t *testing.T) {
	tests := []struct {
		name     string
		wrap     func(error) error
		nilIsNil bool
	}{
		{"temporary", provision.Temporary, true},
		{"permanent", provision.Permanent, true},
		{"permanentf", func(err error) error { return provision.Permanentf("validating r-1: %w", err) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.wrap(provision.ErrBadSize)
			if !errors.Is(err, provision.ErrBadSize) {
				t.Errorf("errors.Is(%v, ErrBadSize) = false", err)
			}
			if errors.Is(err, provision.ErrBadField) {
				t.Errorf("errors.Is(%v, ErrBadField) = true", err)
			}
			var e *provision.Error
			if !errors.As(err, &e) {
				t.Fatalf("errors.As(%v, *Error) = false", err)
			}
			if e.Error() != err.Error() || err.Error() == "" {
				t.Errorf("Error() = %q, want the cause's text", e.Error())
			}
			if tt.nilIsNil && tt.wrap(nil) != nil {
				t.Errorf("wrapping nil gave non-nil")
			}
		})
	}
	if got := (&provision.Error{}).Error(); got == "" {
		t.Error("Error() of an empty *Error is empty")
	}
}

func TestSentinelsDistinct(t *testing.T) {
	all := append(validationErrors,
		provision.ErrBadResultSignature, provision.ErrNotFound, provision.ErrExists, provision.ErrReplay,
		provision.ErrConflict, provision.ErrNoCapacity, provision.ErrPollEOS, provision.ErrVanished)
	seen := map[string]bool{}
	for i, a := range all {
		if seen[a.Error()] {
			t.Errorf("two sentinels read %q", a.Error())
		}
		seen[a.Error()] = true
		for j, b := range all {
			if i != j && errors.Is(a, b) {
				t.Errorf("%v matches %v", a, b)
			}
		}
	}
}
