package registry_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/edgeprov/provisiond/internal/registry"
	"github.com/edgeprov/provisiond/internal/registrytest"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestParseAuth(t *testing.T) {
	good := []struct {
		name, json, host string
		want             authn.AuthConfig
	}{
		{"auth", `{"auths":{"reg.example:5000":{"auth":"` + b64("alice:pa:ss") + `"}}}`, "reg.example:5000", authn.AuthConfig{Username: "alice", Password: "pa:ss"}},
		{"username-password", `{"auths":{"reg.example":{"username":"bob","password":"pw"}}}`, "reg.example", authn.AuthConfig{Username: "bob", Password: "pw"}},
		{"url-key", `{"auths":{"https://Reg.Example/v1/":{"auth":"` + b64("carol:pw") + `"}}}`, "reg.example", authn.AuthConfig{Username: "carol", Password: "pw"}},
		{"identity-token", `{"auths":{"reg.example":{"identitytoken":"tok"}},"psFormat":"x"}`, "reg.example", authn.AuthConfig{IdentityToken: "tok"}},
	}
	for _, tc := range good {
		t.Run(tc.name, func(t *testing.T) {
			a, err := registry.ParseAuth([]byte(tc.json))
			if err != nil {
				t.Fatal(err)
			}
			got, err := a.For(tc.host).Authorization()
			if err != nil || *got != tc.want {
				t.Fatalf("For(%s) = %+v, %v; want %+v", tc.host, got, err, tc.want)
			}
			if a.For("other.example") != authn.Anonymous {
				t.Fatal("a registry the file does not name gets credentials")
			}
		})
	}
	var nilAuth *registry.Auth
	if nilAuth.For("reg.example") != authn.Anonymous || nilAuth.Hosts() != 0 {
		t.Fatal("a nil Auth is not anonymous")
	}

	many := `{"auths":{`
	for i := range registry.MaxAuthEntries + 1 {
		if i > 0 {
			many += ","
		}
		many += `"h` + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + `.` + strconv.Itoa(i) + `":{"username":"u","password":"p"}`
	}
	many += `}}`
	bad := []struct{ name, json, want string }{
		{"not-json", `{"auths":{"reg":{"auth":"secret`, "invalid JSON"},
		{"wrong-type", `{"auths":{"reg":{"auth":42}}}`, `field "auths.auth" is not a string`},
		{"not-base64", `{"auths":{"reg":{"auth":"secret!!"}}}`, `"auth" is not base64`},
		{"no-colon", `{"auths":{"reg":{"auth":"` + b64("secretword") + `"}}}`, "USER:PASSWORD"},
		{"no-credentials", `{"auths":{"reg":{}}}`, "no credentials"},
		{"users-differ", `{"auths":{"reg":{"auth":"` + b64("alice:secret") + `","username":"bob"}}}`, "different users"},
		{"creds-store", `{"auths":{},"credsStore":"desktop"}`, "credential helpers"},
		{"cred-helpers", `{"credHelpers":{"reg":"ecr-login"}}`, "credential helpers"},
		{"twice", `{"auths":{"reg":{"username":"a","password":"secret"},"https://reg":{"username":"a","password":"secret"}}}`, "named twice"},
		{"bad-host", `{"auths":{"user@reg":{"username":"a","password":"secret"}}}`, "not a registry"},
		{"empty-host", `{"auths":{"https://":{"username":"a","password":"secret"}}}`, "not a registry"},
		{"not-utf8", "{\"auths\":{\"reg\":{\"password\":\"\xff\"}}}", "not UTF-8"},
		{"too-many", many, "more than 1000"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := registry.ParseAuth([]byte(tc.json))
			if !errors.Is(err, registry.ErrAuthFile) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseAuth = %v, want %v naming %q", err, registry.ErrAuthFile, tc.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Fatalf("the error %q quotes the file's secret", err)
			}
		})
	}
}

func TestLoadAuthFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config.json")
	body := `{"auths":{"reg.example":{"auth":"` + b64("alice:secret") + `"}}}`
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := registry.LoadAuth(p); !errors.Is(err, registry.ErrAuthFile) || !strings.Contains(err.Error(), "mode 0644") || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("LoadAuth of a 0644 file = %v", err)
	}
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := registry.LoadAuth(p)
	if err != nil || a.Hosts() != 1 {
		t.Fatalf("LoadAuth = %v, %v", a, err)
	}
	if _, err := registry.LoadAuth(dir); !errors.Is(err, registry.ErrAuthFile) {
		t.Fatalf("LoadAuth of a directory = %v", err)
	}
	if _, err := registry.LoadAuth(filepath.Join(dir, "none.json")); !errors.Is(err, registry.ErrAuthFile) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("LoadAuth of a missing file = %v", err)
	}
	big := filepath.Join(dir, "big.json")
	if err := os.WriteFile(big, []byte(`{"auths":{}, "x":"`+strings.Repeat("a", registry.MaxAuthFileSize)+`"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := registry.LoadAuth(big); !errors.Is(err, registry.ErrAuthFile) || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("LoadAuth of a file over the limit = %v", err)
	}
}

// TestAuthPrivateRegistry pulls from Debian's docker-registry with
// htpasswd auth: refused without credentials and with a wrong password,
// served with the credentials of a config.json.
func TestAuthPrivateRegistry(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{User: "alice", Password: "wonderland"})
	img := registrytest.Image(t, runtime.GOARCH, registrytest.Layer(t, []registrytest.File{{Name: "hello", Body: []byte("hi")}}))
	ref := reg.Push(t, "private", img)
	cfg, _ := img.Manifest()

	for _, tc := range []struct {
		name string
		auth string // config.json; "" for none
		ok   bool
	}{
		{"anonymous", "", false},
		{"wrong-password", `{"auths":{"` + reg.Host + `":{"auth":"` + b64("alice:looking-glass") + `"}}}`, false},
		{"other-registry", `{"auths":{"reg.example":{"auth":"` + b64("alice:wonderland") + `"}}}`, false},
		{"credentials", `{"auths":{"http://` + reg.Host + `":{"auth":"` + b64("alice:wonderland") + `"}}}`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var a *registry.Auth
			if tc.auth != "" {
				var err error
				if a, err = registry.ParseAuth([]byte(tc.auth)); err != nil {
					t.Fatal(err)
				}
			}
			c := registry.New(registry.Options{Insecure: []string{reg.Host}, Auth: a})
			repo := c.Repo(ref)
			_, err := repo.Manifest(t.Context(), ref.Digest)
			if !tc.ok {
				if !errors.Is(err, registry.ErrUnauthorized) || !strings.Contains(err.Error(), "(401)") {
					t.Fatalf("Manifest = %v, want %v (401)", err, registry.ErrUnauthorized)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			body, _, err := repo.Blob(t.Context(), cfg.Config.Digest.Hex, 0)
			if err != nil {
				t.Fatal(err)
			}
			body.Close()
		})
	}

	// Credentials replaced in place (the node's SIGHUP) serve the next
	// request of a client made with the old ones.
	t.Run("replaced", func(t *testing.T) {
		wrong, err := registry.ParseAuth([]byte(`{"auths":{"` + reg.Host + `":{"auth":"` + b64("alice:looking-glass") + `"}}}`))
		if err != nil {
			t.Fatal(err)
		}
		right, err := registry.ParseAuth([]byte(`{"auths":{"` + reg.Host + `":{"auth":"` + b64("alice:wonderland") + `"}}}`))
		if err != nil {
			t.Fatal(err)
		}
		c := registry.New(registry.Options{Insecure: []string{reg.Host}, Auth: wrong})
		if _, err := c.Repo(ref).Manifest(t.Context(), ref.Digest); !errors.Is(err, registry.ErrUnauthorized) {
			t.Fatalf("with the wrong password: %v", err)
		}
		wrong.Replace(right)
		if _, err := c.Repo(ref).Manifest(t.Context(), ref.Digest); err != nil {
			t.Fatalf("after Replace: %v", err)
		}
		wrong.Replace(nil)
		if _, err := c.Repo(ref).Manifest(t.Context(), ref.Digest); !errors.Is(err, registry.ErrUnauthorized) || wrong.Hosts() != 0 {
			t.Fatalf("after Replace(nil): %v, %d hosts", err, wrong.Hosts())
		}
	})
}

// FuzzParseAuth: any input is refused with ErrAuthFile or gives
// credentials that only the hosts it names get, never more than
// MaxAuthEntries of them; a refusal never quotes a password.
func FuzzParseAuth(f *testing.F) {
	f.Add([]byte(`{"auths":{"reg.example:5000":{"auth":"` + b64("alice:secret") + `"}}}`))
	f.Add([]byte(`{"auths":{"https://reg.example/v1/":{"username":"bob","password":"secret"}}}`))
	f.Add([]byte(`{"auths":{"reg":{"identitytoken":"secret"}},"credsStore":""}`))
	f.Add([]byte(`{"auths":{"reg":{"auth":"` + b64("secret") + `"}}}`))
	f.Add([]byte(`{"credHelpers":{"reg":"x"}}`))
	f.Add([]byte(`{"auths":{"\u0075nnamed.invalid:1":{"auth":"` + b64("alice:secret") + `"}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := registry.ParseAuth(b)
		if err != nil {
			if a != nil || !errors.Is(err, registry.ErrAuthFile) {
				t.Fatalf("ParseAuth = %v, %v", a, err)
			}
			for _, secret := range secrets(b) {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("the error %q quotes the secret %q", err, secret)
				}
			}
			return
		}
		if a.Hosts() > registry.MaxAuthEntries {
			t.Fatalf("%d hosts", a.Hosts())
		}
		if a.For("unnamed.invalid:1") != authn.Anonymous && !slices.ContainsFunc(registries(b), func(r string) bool {
			return strings.Contains(strings.ToLower(r), "unnamed.invalid:1")
		}) {
			t.Fatal("a host the input does not name gets credentials")
		}
	})
}

// registries returns the "auths" keys of a config.json, as decoded (a
// key may spell its characters with JSON escapes).
func registries(b []byte) []string {
	var f struct {
		Auths map[string]json.RawMessage `json:"auths"`
	}
	if json.Unmarshal(b, &f) != nil {
		return nil
	}
	return slices.Collect(maps.Keys(f.Auths))
}

// secrets returns the credentials of a config.json that decodes, those
// long enough not to appear in an error's own words by chance. A value
// that is also part of a registry's name is left out: an error names the
// registry, which is not a secret, and cannot avoid quoting it.
func secrets(b []byte) []string {
	var f struct {
		Auths map[string]map[string]any `json:"auths"`
	}
	if json.Unmarshal(b, &f) != nil {
		return nil
	}
	inName := func(v string) bool {
		for host := range f.Auths {
			if strings.Contains(strings.ToLower(host), strings.ToLower(v)) {
				return true
			}
		}
		return false
	}
	var out []string
	add := func(v string) {
		if len(v) >= 8 && !inName(v) {
			out = append(out, v)
		}
	}
	for _, e := range f.Auths {
		for _, k := range []string{"auth", "password", "identitytoken", "registrytoken"} {
			if v, ok := e[k].(string); ok {
				add(v)
				if raw, err := base64.StdEncoding.DecodeString(v); err == nil {
					add(string(raw))
				}
			}
		}
	}
	return out
}
