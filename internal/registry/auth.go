package registry

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/google/go-containerregistry/pkg/authn"
)

// Limits of a credentials file (--registry-auth).
const (
	// MaxAuthFileSize bounds the file's bytes.
	MaxAuthFileSize = 1 << 20
	// MaxAuthEntries bounds the registries it names.
	MaxAuthEntries = 1000
)

// ErrAuthFile wraps every failure to read a credentials file.
var ErrAuthFile = errors.New("registry: credentials file")

// Auth holds the credentials of private registries, by HOST[:PORT], read
// from a docker config.json's "auths" map (what `docker login` writes):
// the node answers a registry's basic or token challenge with them. A
// registry it does not name is asked anonymously. The zero value and nil
// hold none. Its methods may be called concurrently; Replace swaps in
// another file's credentials (the operator's reload).
type Auth struct {
	mu    sync.RWMutex
	hosts map[string]authn.AuthConfig
}

// authFile is the part of a docker config.json that Auth reads.
type authFile struct {
	Auths       map[string]authEntry `json:"auths"`
	CredsStore  string               `json:"credsStore"`
	CredHelpers map[string]string    `json:"credHelpers"`
}

type authEntry struct {
	Auth          string `json:"auth"`
	Username      string `json:"username"`
	Password      string `json:"password"`
	IdentityToken string `json:"identitytoken"`
	RegistryToken string `json:"registrytoken"`
}

// LoadAuth reads the credentials file at path. It must be a regular file
// that only its owner may read or write (mode 0600 or stricter), of at
// most MaxAuthFileSize bytes. Errors never quote the file's content.
func LoadAuth(path string) (*Auth, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrAuthFile, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrAuthFile, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrAuthFile, path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o: it holds passwords, make it readable by its owner only (chmod 600)", ErrAuthFile, path, perm)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxAuthFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrAuthFile, err)
	}
	if len(b) > MaxAuthFileSize {
		return nil, fmt.Errorf("%w: %s is more than %d bytes", ErrAuthFile, path, MaxAuthFileSize)
	}
	a, err := ParseAuth(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return a, nil
}

// ParseAuth decodes a docker config.json: its "auths" map, from a
// registry (HOST[:PORT], or a URL whose host is that) to "auth"
// (base64 of USER:PASSWORD), or "username" and "password", or an
// "identitytoken" or "registrytoken". Credential helpers ("credsStore",
// "credHelpers") are refused: the node runs no helper programs.
func ParseAuth(b []byte) (*Auth, error) {
	if !utf8.Valid(b) {
		return nil, fmt.Errorf("%w: not UTF-8", ErrAuthFile)
	}
	var f authFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%w: not a docker config.json: %s", ErrAuthFile, jsonWhere(err))
	}
	if f.CredsStore != "" || len(f.CredHelpers) > 0 {
		return nil, fmt.Errorf("%w: credential helpers (credsStore, credHelpers) are not supported: write the credentials in \"auths\"", ErrAuthFile)
	}
	if len(f.Auths) > MaxAuthEntries {
		return nil, fmt.Errorf("%w: %d registries, more than %d", ErrAuthFile, len(f.Auths), MaxAuthEntries)
	}
	a := &Auth{hosts: map[string]authn.AuthConfig{}}
	for key, e := range f.Auths {
		host, err := authHost(key)
		if err != nil {
			return nil, err
		}
		cfg, err := e.config()
		if err != nil {
			return nil, fmt.Errorf("%w: registry %q: %w", ErrAuthFile, host, err)
		}
		if _, dup := a.hosts[host]; dup {
			return nil, fmt.Errorf("%w: registry %q is named twice", ErrAuthFile, host)
		}
		a.hosts[host] = cfg
	}
	return a, nil
}

// jsonWhere says where a JSON error is without quoting the file (a
// syntax error's message shows the offending character).
func jsonWhere(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("invalid JSON at byte %d", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q is not a %s", typ.Field, typ.Type)
	}
	return "invalid JSON"
}

// authHost returns the HOST[:PORT] of an "auths" key.
func authHost(key string) (string, error) {
	h := key
	for _, p := range []string{"https://", "http://"} {
		h = strings.TrimPrefix(h, p)
	}
	if i := strings.IndexByte(h, '/'); i >= 0 {
		h = h[:i]
	}
	if h == "" || strings.ContainsAny(h, " \t\r\n@?#") || len(h) > 255 {
		return "", fmt.Errorf("%w: %q is not a registry HOST[:PORT]", ErrAuthFile, key)
	}
	return strings.ToLower(h), nil
}

func (e authEntry) config() (authn.AuthConfig, error) {
	cfg := authn.AuthConfig{Username: e.Username, Password: e.Password, IdentityToken: e.IdentityToken, RegistryToken: e.RegistryToken}
	if e.Auth != "" {
		raw, err := base64.StdEncoding.DecodeString(e.Auth)
		if err != nil {
			return cfg, errors.New(`"auth" is not base64`)
		}
		user, pass, ok := strings.Cut(string(raw), ":")
		if !ok || user == "" {
			return cfg, errors.New(`"auth" is not base64 of USER:PASSWORD`)
		}
		if e.Username != "" && e.Username != user {
			return cfg, errors.New(`"auth" and "username" name different users`)
		}
		cfg.Username, cfg.Password = user, pass
	}
	if cfg.Username == "" && cfg.IdentityToken == "" && cfg.RegistryToken == "" {
		return cfg, errors.New(`no credentials: give "auth", "username" and "password", or a token`)
	}
	return cfg, nil
}

// Hosts returns how many registries a holds credentials for.
func (a *Auth) Hosts() int {
	if a == nil {
		return 0
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	return len(a.hosts)
}

// Replace makes a hold the credentials of from (nil: none) in place of its
// own. A pull that has started keeps the credentials it began with; the
// next one uses from's.
func (a *Auth) Replace(from *Auth) {
	var hosts map[string]authn.AuthConfig
	if from != nil {
		from.mu.RLock()
		hosts = from.hosts
		from.mu.RUnlock()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.hosts = hosts
}

// For returns the authenticator for host (HOST[:PORT]): its credentials,
// or anonymous access.
func (a *Auth) For(host string) authn.Authenticator {
	if a == nil {
		return authn.Anonymous
	}
	a.mu.RLock()
	cfg, ok := a.hosts[strings.ToLower(host)]
	a.mu.RUnlock()
	if !ok {
		return authn.Anonymous
	}
	return authn.FromConfig(cfg)
}
