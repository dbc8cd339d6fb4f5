package heartbeat

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/provision/provisiontest"
)

// TestRun makes heartbeats on a fake clock: one at once, one every
// interval after, each signed and naming the boot; a boot that cannot be
// read skips a heartbeat and the next one comes at its time.
func TestRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		signer, pub := provisiontest.NewNodeSigner(3)
		var mu sync.Mutex
		var got []*provision.Heartbeat
		failBoot := false
		booted := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() {
			done <- Run(ctx, Options{NodeID: "n1", Interval: time.Minute, Signer: signer,
				Enqueue: func(hb *provision.Heartbeat) (bool, error) {
					mu.Lock()
					defer mu.Unlock()
					got = append(got, hb)
					return true, nil
				},
				Boot: func() (string, time.Time, error) {
					mu.Lock()
					defer mu.Unlock()
					if failBoot {
						return "", time.Time{}, ErrNoBoot
					}
					return "boot-1", booted, nil
				}})
		}()
		synctest.Wait()
		time.Sleep(2*time.Minute + time.Second)
		synctest.Wait()
		mu.Lock()
		failBoot = true
		mu.Unlock()
		time.Sleep(time.Minute)
		synctest.Wait()
		mu.Lock()
		failBoot = false
		mu.Unlock()
		time.Sleep(time.Minute)
		synctest.Wait()
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if len(got) != 4 {
			t.Fatalf("%d heartbeats in 4 minutes with one boot unreadable, want 4 (at 0, 1, 2 and 4 min)", len(got))
		}
		for i, hb := range got {
			if err := hb.Verify(pub); err != nil || hb.BootID != "boot-1" || !hb.Booted.Equal(booted) || hb.Interval != time.Minute {
				t.Fatalf("heartbeat %d %+v: %v", i, hb, err)
			}
		}
		if d := got[3].Created.Sub(got[0].Created); d != 4*time.Minute {
			t.Fatalf("the last heartbeat came %s after the first, want 4m", d)
		}
	})
}

func TestRunRefusesBadOptions(t *testing.T) {
	signer, _ := provisiontest.NewNodeSigner(3)
	enq := func(*provision.Heartbeat) (bool, error) { return true, nil }
	for name, o := range map[string]Options{
		"interval-short": {NodeID: "n", Interval: time.Millisecond, Signer: signer, Enqueue: enq},
		"interval-long":  {NodeID: "n", Interval: 2 * time.Hour, Signer: signer, Enqueue: enq},
		"no-node":        {Signer: signer, Enqueue: enq},
		"no-enqueue":     {NodeID: "n", Signer: signer},
	} {
		if err := Run(t.Context(), o); err == nil {
			t.Errorf("%s: Run accepted the options", name)
		}
	}
}

func TestReadBoot(t *testing.T) {
	if _, err := os.Stat(bootIDPath); err != nil {
		t.Skipf("no %s here: %v", bootIDPath, err)
	}
	id, booted, err := ReadBoot("")
	if err != nil || len(id) != 36 || booted.IsZero() || booted.After(time.Now()) {
		t.Fatalf("ReadBoot = %q, %s, %v", id, booted, err)
	}
	f := filepath.Join(t.TempDir(), "boot_id")
	if err := os.WriteFile(f, []byte("other-boot\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if id2, booted2, err := ReadBoot(f); err != nil || id2 != "other-boot" || !booted2.Equal(booted) {
		t.Fatalf("ReadBoot(%s) = %q, %s, %v", f, id2, booted2, err)
	}
	if _, _, err := ReadBoot(filepath.Join(t.TempDir(), "none")); !errors.Is(err, ErrNoBoot) {
		t.Fatalf("ReadBoot of a missing file = %v", err)
	}
}

func TestParseBtime(t *testing.T) {
	got, err := parseBtime([]byte("cpu  1 2 3\nbtime 1767225600\nprocesses 3\n"))
	if err != nil || !got.Equal(time.Unix(1767225600, 0)) {
		t.Fatalf("parseBtime = %s, %v", got, err)
	}
	for _, bad := range []string{"", "btime\n", "btime x\n", "btime -5\n", "cpu 1\n"} {
		if _, err := parseBtime([]byte(bad)); !errors.Is(err, ErrNoBoot) {
			t.Errorf("parseBtime(%q) = %v", bad, err)
		}
	}
}

// FuzzParseBtime reads arbitrary /proc/stat contents: never a panic, and a
// boot time only from a btime line of positive seconds.
func FuzzParseBtime(f *testing.F) {
	f.Add([]byte("btime 1767225600\n"))
	f.Add([]byte("cpu 1\nbtime 0\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := parseBtime(data)
		if err == nil && (got.Unix() <= 0 || !strings.Contains(string(data), "btime")) {
			t.Fatalf("parseBtime(%q) = %s", data, got)
		}
	})
}
