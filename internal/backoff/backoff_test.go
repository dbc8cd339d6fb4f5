package backoff

import (
	"context"
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	p := Policy{Base: 100 * time.Millisecond, Max: time.Second}
	tests := []struct {
		name    string
		attempt int
		want    time.Duration // before jitter
	}{
		{"first", 1, 100 * time.Millisecond},
		{"below-one", 0, 100 * time.Millisecond},
		{"second-doubles", 2, 200 * time.Millisecond},
		{"fourth", 4, 800 * time.Millisecond},
		{"capped", 5, time.Second},
		{"far-beyond-the-cap", 1000, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if c := p.Ceiling(tt.attempt); c != tt.want {
				t.Fatalf("Ceiling(%d) = %s, want %s", tt.attempt, c, tt.want)
			}
			for range 200 {
				if d := p.Delay(tt.attempt); d < tt.want/2 || d > tt.want {
					t.Fatalf("Delay(%d) = %s, want within [%s, %s]", tt.attempt, d, tt.want/2, tt.want)
				}
			}
		})
	}
	if d := (Policy{Base: time.Second}).Delay(3); d < time.Second/2 || d > time.Second {
		t.Errorf("a Max below Base: Delay = %s, want within Base", d)
	}
	if d := (Policy{}).Delay(3); d != 0 {
		t.Errorf("zero policy: Delay = %s, want 0", d)
	}
}

func TestDelayJitters(t *testing.T) {
	p := Policy{Base: time.Second, Max: time.Second}
	seen := map[time.Duration]bool{}
	for range 50 {
		seen[p.Delay(1)] = true
	}
	if len(seen) < 2 {
		t.Fatalf("50 delays took %d values, want jitter", len(seen))
	}
}

func TestSleep(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Fatal("Sleep on an ended context returned true")
	}
	if !Sleep(t.Context(), time.Millisecond) {
		t.Fatal("Sleep of 1ms returned false")
	}
}
