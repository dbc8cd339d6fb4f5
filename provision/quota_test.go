package provision_test

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/edgeprov/provisiond/provision"
)

func TestParseQuota(t *testing.T) {
	tests := []struct {
		name, spec string
		want       provision.Quota
		err        string
	}{
		{"empty", "", provision.Quota{}, ""},
		{"all", "cru=4,mru=8,sru=100,hru=0,workloads=20", provision.Quota{Units: provision.Units{CRU: 4, MRU: 8, SRU: 100}, Workloads: 20}, ""},
		{"decimal-gib", "mru=0.5", provision.Quota{Units: provision.Units{MRU: 0.5}}, ""},
		{"one-field", "workloads=1", provision.Quota{Workloads: 1}, ""},
		{"unknown-key", "cpu=4", provision.Quota{}, `unknown key "cpu"`},
		{"twice", "cru=4,cru=5", provision.Quota{}, "cru given twice"},
		{"no-value", "cru=", provision.Quota{}, "want KEY=VALUE"},
		{"no-equals", "cru", provision.Quota{}, "want KEY=VALUE"},
		{"trailing-comma", "cru=4,", provision.Quota{}, "want KEY=VALUE"},
		{"space", "cru=4, mru=2", provision.Quota{}, `unknown key " mru"`},
		{"negative", "mru=-1", provision.Quota{}, "not a decimal number"},
		{"exponent", "mru=1e3", provision.Quota{}, "not a decimal number"},
		{"inf", "sru=inf", provision.Quota{}, "not a decimal number"},
		{"nan", "hru=NaN", provision.Quota{}, "not a decimal number"},
		{"hex", "hru=0x10", provision.Quota{}, "not a decimal number"},
		{"too-large", fmt.Sprintf("sru=%d", provision.MaxQuotaGiB+1), provision.Quota{}, "not a decimal number"},
		{"fractional-cru", "cru=1.5", provision.Quota{}, "not a whole number"},
		{"signed-count", "workloads=+3", provision.Quota{}, "not a whole number"},
		{"huge-count", "workloads=4294967296", provision.Quota{}, "not a whole number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := provision.ParseQuota(tt.spec)
			if tt.err != "" {
				if !errors.Is(err, provision.ErrBadQuota) || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseQuota(%q) = %+v, %v; want an ErrBadQuota naming %q", tt.spec, q, err, tt.err)
				}
				return
			}
			if err != nil || q != tt.want {
				t.Fatalf("ParseQuota(%q) = %+v, %v; want %+v", tt.spec, q, err, tt.want)
			}
		})
	}
}

func TestParseQuotaFile(t *testing.T) {
	alice, bob := strings.Repeat("a", 64), strings.Repeat("b", 64)
	def := provision.Quota{Units: provision.Units{CRU: 4, MRU: 8}, Workloads: 20}
	good := "# overrides\n\n" + alice + " cru=16,workloads=0\n  " + bob + "\tmru=2  # not a comment here\n"
	if _, err := provision.ParseQuotaFile(strings.NewReader(good), def); err == nil || !strings.Contains(err.Error(), "line 4") {
		t.Fatalf("a trailing comment: %v, want an error on line 4", err)
	}
	good = "# overrides\n\n" + alice + " cru=16,workloads=0\n  " + bob + "\tmru=2\n"
	got, err := provision.ParseQuotaFile(strings.NewReader(good), def)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]provision.Quota{
		alice: {Units: provision.Units{CRU: 16, MRU: 8}},
		bob:   {Units: provision.Units{CRU: 4, MRU: 2}, Workloads: 20},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("overrides %v, want %v", got, want)
	}
	qs := provision.Quotas{Default: def, Users: got}
	if qs.For(alice) != want[alice] || qs.For(strings.Repeat("c", 64)) != def {
		t.Errorf("For: %+v, %+v", qs.For(alice), qs.For(strings.Repeat("c", 64)))
	}

	bad := []struct{ name, file, err string }{
		{"twice", alice + " cru=1\n" + alice + " cru=2\n", "line 2: user " + alice + " named twice"},
		{"short-user", "abc cru=1\n", "line 1: user \"abc\" is not 64 lowercase hex digits"},
		{"uppercase-user", strings.Repeat("A", 64) + " cru=1\n", "line 1: user"},
		{"no-spec", alice + "\n", "line 1: want USER_ID KEY=VALUE"},
		{"three-fields", alice + " cru=1 mru=2\n", "line 1: want USER_ID KEY=VALUE"},
		{"bad-value", "\n#\n" + alice + " cru=x\n", "line 3: provision: bad quota"},
		{"long-line", alice + " cru=1" + strings.Repeat(",cru=1", 200) + "\n", "line 1: longer than"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := provision.ParseQuotaFile(strings.NewReader(tt.file), def)
			if !errors.Is(err, provision.ErrBadQuota) || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("ParseQuotaFile: %v; want an ErrBadQuota with %q", err, tt.err)
			}
		})
	}
	t.Run("too-large", func(t *testing.T) {
		big := strings.Repeat("#"+strings.Repeat(" ", 1000)+"\n", provision.MaxQuotaFileBytes/1000+2)
		if _, err := provision.ParseQuotaFile(strings.NewReader(big), def); !errors.Is(err, provision.ErrBadQuota) || !strings.Contains(err.Error(), "larger than") {
			t.Fatalf("a file past the limit: %v", err)
		}
	})
}

// quotaSpec formats q as ParseQuota reads it, naming every field.
func quotaSpec(q provision.Quota) string {
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	return fmt.Sprintf("cru=%d,mru=%s,sru=%s,hru=%s,workloads=%d", q.Units.CRU, f(q.Units.MRU), f(q.Units.SRU), f(q.Units.HRU), q.Workloads)
}

func FuzzParseQuota(f *testing.F) {
	for _, s := range []string{"", "cru=4,mru=8,sru=100,hru=0,workloads=20", "mru=0.5", "cru=4,cru=5", "sru=1e3", "x=1", "=", ","} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		q, err := provision.ParseQuota(spec)
		if err != nil {
			if !errors.Is(err, provision.ErrBadQuota) {
				t.Fatalf("error %v does not wrap ErrBadQuota", err)
			}
			return
		}
		for _, v := range []float64{q.Units.MRU, q.Units.SRU, q.Units.HRU} {
			if !(v >= 0 && v <= provision.MaxQuotaGiB) {
				t.Fatalf("ParseQuota(%q) gave a size out of range: %+v", spec, q)
			}
		}
		again, err := provision.ParseQuota(quotaSpec(q))
		if err != nil || again != q {
			t.Fatalf("round trip of %q: %+v → %q → %+v, %v", spec, q, quotaSpec(q), again, err)
		}
	})
}

func FuzzParseQuotaFile(f *testing.F) {
	alice := strings.Repeat("a", 64)
	for _, s := range []string{"", "# c\n", alice + " cru=1\n", alice + " cru=1\n" + alice + " cru=2\n", alice + "\tworkloads=3\r\n", "x y z\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, file string) {
		def := provision.Quota{Units: provision.Units{CRU: 2}, Workloads: 5}
		got, err := provision.ParseQuotaFile(strings.NewReader(file), def)
		if err != nil {
			if !errors.Is(err, provision.ErrBadQuota) || !strings.Contains(err.Error(), "line ") && !strings.Contains(err.Error(), "larger than") {
				t.Fatalf("error %v does not wrap ErrBadQuota with a line number", err)
			}
			return
		}
		if len(got) > provision.MaxQuotaUsers {
			t.Fatalf("%d users", len(got))
		}
		for user, q := range got {
			if len(user) != 64 || strings.Trim(user, "0123456789abcdef") != "" {
				t.Fatalf("user %q accepted", user)
			}
			if !strings.Contains(file, user) {
				t.Fatalf("user %q is not in the file", user)
			}
			again, err := provision.ParseQuota(quotaSpec(q))
			if err != nil || again != q {
				t.Fatalf("quota of %s does not round-trip: %+v, %v", user, q, err)
			}
		}
	})
}
