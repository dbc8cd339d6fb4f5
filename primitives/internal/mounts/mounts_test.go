package mounts

import (
	"os"
	"path/filepath"
	"testing"
)

func TestList(t *testing.T) {
	tests := []struct {
		name string
		line string
		want Mount
		ok   bool
	}{
		{"root", "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw", Mount{"/", "ext4", "/dev/vda"}, true},
		{"optional-fields", "42 27 254:0 /run/netns /run/netns rw shared:1 master:2 - ext4 /dev/vda rw", Mount{"/run/netns", "ext4", "/dev/vda"}, true},
		{"escaped-space", `50 27 7:3 / /data/my\040vol rw - ext4 /dev/loop3 rw`, Mount{"/data/my vol", "ext4", "/dev/loop3"}, true},
		{"escaped-backslash-at-end", `50 27 7:3 / /a\134 rw - ext4 /dev/loop3 rw`, Mount{`/a\`, "ext4", "/dev/loop3"}, true},
		{"truncated", "50 27 7:3 / /x rw", Mount{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			useTable(t, tc.line+"\n")
			ms, err := List()
			if !tc.ok {
				if err == nil {
					t.Fatalf("List = %+v, want an error for a malformed table", ms)
				}
				return
			}
			if err != nil || len(ms) != 1 || ms[0] != tc.want {
				t.Fatalf("List = %+v, %v; want [%+v]", ms, err, tc.want)
			}
		})
	}
}

// useTable points List at a mount table with the given text.
func useTable(t *testing.T, text string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "mountinfo")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	old := table
	table = p
	t.Cleanup(func() { table = old })
}

func TestFindTopmost(t *testing.T) {
	useTable(t, "1 0 0:1 / / rw - ext4 /dev/vda rw\n"+
		"2 1 7:1 / /mnt rw - ext4 /dev/loop1 rw\n"+
		"3 2 0:9 / /mnt rw - overlay overlay rw\n")
	m, ok, err := Find("/mnt/")
	if err != nil || !ok || m.FSType != "overlay" {
		t.Fatalf("Find = %+v, %v, %v; want the overlay on top", m, ok, err)
	}
	if _, ok, err := Find("/nope"); err != nil || ok {
		t.Fatalf("Find(/nope) = %v, %v", ok, err)
	}
}
