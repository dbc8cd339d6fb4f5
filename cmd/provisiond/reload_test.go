package main

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/edgeprov/provisiond/internal/registry"
	"github.com/edgeprov/provisiond/provision"
)

type recordQuotas struct{ got []provision.Quotas }

func (r *recordQuotas) SetQuotas(q provision.Quotas) { r.got = append(r.got, q) }

// A reload reads the quota file over --user-quota's defaults and the
// registry credentials; if either does not load, neither changes and the
// error is logged; without either file it is logged and does nothing.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	user := strings.Repeat("ab", 32)
	quotaFile, authFile := filepath.Join(dir, "quotas"), filepath.Join(dir, "auth.json")
	write := func(path, body string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	authJSON := func(host string) string {
		return `{"auths":{"` + host + `":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("u:p")) + `"}}}`
	}
	write(quotaFile, user+" workloads=3\n")
	write(authFile, authJSON("a.example"))
	cfg := &config{UserQuota: "cru=2,workloads=1", UserQuotaFile: quotaFile, RegistryAuth: authFile}
	auth, err := registry.LoadAuth(authFile)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	log := zerolog.New(&logs)
	eng := &recordQuotas{}

	write(quotaFile, user+" workloads=5\n")
	write(authFile, `{"auths":{"b.example":{"username":"u","password":"p"},"c.example":{"username":"u","password":"p"}}}`)
	reload(cfg, eng, auth, log)
	if len(eng.got) != 1 {
		t.Fatalf("SetQuotas calls: %v", eng.got)
	}
	q := eng.got[0]
	if q.Default != (provision.Quota{Units: provision.Units{CRU: 2}, Workloads: 1}) || q.For(user) != (provision.Quota{Units: provision.Units{CRU: 2}, Workloads: 5}) {
		t.Fatalf("reloaded quotas %+v", q)
	}
	if auth.Hosts() != 2 || !strings.Contains(logs.String(), "reloaded on SIGHUP") {
		t.Fatalf("after a reload: %d registries; log %s", auth.Hosts(), logs.String())
	}

	goodQuota, goodAuth := user+" workloads=7\n", authJSON("d.example")
	for _, tc := range []struct {
		name, quota, auth string
		authMode          os.FileMode
	}{
		{"quota-file", user + " workloads=many\n", goodAuth, 0o600},
		{"auth-file", goodQuota, `{"auths":`, 0o600},
		{"auth-mode", goodQuota, goodAuth, 0o644},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs.Reset()
			write(quotaFile, tc.quota)
			write(authFile, tc.auth)
			if err := os.Chmod(authFile, tc.authMode); err != nil {
				t.Fatal(err)
			}
			reload(cfg, eng, auth, log)
			if len(eng.got) != 1 || auth.Hosts() != 2 {
				t.Fatalf("a failed reload changed something: %d SetQuotas, %d registries", len(eng.got), auth.Hosts())
			}
			if !strings.Contains(logs.String(), "reload failed") {
				t.Fatalf("log: %s", logs.String())
			}
		})
	}

	logs.Reset()
	reload(&config{UserQuota: "cru=1"}, eng, nil, log)
	if len(eng.got) != 1 || !strings.Contains(logs.String(), "no --user-quota-file or --registry-auth") {
		t.Fatalf("reload without files: %d SetQuotas; log %s", len(eng.got), logs.String())
	}
}
