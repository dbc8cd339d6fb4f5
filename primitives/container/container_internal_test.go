package container

import (
	"os"
	"path/filepath"
	"testing"
)

// TestSearchableCgroupParents gives the containers' parent cgroup search
// by others where an earlier umask left it 0700, in the unified and each
// v1 hierarchy, and leaves absent ones absent (runc makes them).
func TestSearchableCgroupParents(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"provisiond", "cpu/provisiond", "memory/provisiond", "pids"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(root, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(root, "memory/provisiond"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := searchableCgroupParents(root); err != nil {
		t.Fatal(err)
	}
	for d, want := range map[string]os.FileMode{"provisiond": 0o711, "cpu/provisiond": 0o711, "memory/provisiond": 0o755} {
		st, err := os.Stat(filepath.Join(root, d))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", d, st.Mode().Perm(), want)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "pids/provisiond")); !os.IsNotExist(err) {
		t.Errorf("pids/provisiond was made (%v); runc makes it", err)
	}
}
