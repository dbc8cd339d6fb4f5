package provision

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// Quota is a per-user limit: the units a user's active workloads may hold
// together (CRU in cores, MRU, SRU and HRU in GiB, priced by the one units
// table, Statser.Units) and how many active workloads the user may have.
// A zero field is no limit, so the zero Quota limits nothing.
type Quota struct {
	// Units is the most units the user may hold; a zero unit is unlimited.
	Units Units `json:"units"`
	// Workloads is the most active workloads; 0 is unlimited.
	Workloads uint64 `json:"workloads"`
}

// Usage is what a user's active workloads hold.
type Usage struct {
	// Units is the sum of their units.
	Units Units `json:"units"`
	// Workloads is how many there are.
	Workloads uint64 `json:"workloads"`
}

// Unlimited reports whether q limits nothing.
func (q Quota) Unlimited() bool { return q == Quota{} }

// Check returns nil when user, who holds used, may add want and
// wantWorkloads more workloads (0 for an update, which replaces one: used
// then excludes the replaced version's units). Otherwise it returns a
// permanent error wrapping ErrQuota that names the user and, for each
// limit crossed, what the user would use and the limit, followed by where
// ("on this node", "at this explorer").
func (q Quota) Check(user string, used Usage, want Units, wantWorkloads uint64, where string) error {
	over := q.Over(used, want, wantWorkloads)
	if len(over) == 0 {
		return nil
	}
	return Permanent(fmt.Errorf("%w: user %s would %s %s", ErrQuota, user, strings.Join(over, " and "), where))
}

// Over returns, for each limit of q that used plus want and wantWorkloads
// would cross, what would be used and the limit ("use 5 of 4 CRU", "run
// 3 of 2 workloads"); none when they fit. A unit (or the count) is only
// checked when want asks for some of it, so a user above a lowered quota
// may still add what takes none of the exceeded unit.
func (q Quota) Over(used Usage, want Units, wantWorkloads uint64) []string {
	var over []string
	if q.Workloads > 0 && wantWorkloads > 0 && used.Workloads+wantWorkloads > q.Workloads {
		over = append(over, fmt.Sprintf("run %d of %d workloads", used.Workloads+wantWorkloads, q.Workloads))
	}
	if q.Units.CRU > 0 && want.CRU > 0 && used.Units.CRU+want.CRU > q.Units.CRU {
		over = append(over, fmt.Sprintf("use %d of %d CRU", used.Units.CRU+want.CRU, q.Units.CRU))
	}
	for _, u := range []struct {
		name              string
		used, want, limit float64
	}{
		{"MRU", used.Units.MRU, want.MRU, q.Units.MRU},
		{"SRU", used.Units.SRU, want.SRU, q.Units.SRU},
		{"HRU", used.Units.HRU, want.HRU, q.Units.HRU},
	} {
		if u.limit > 0 && u.want > 0 && u.used+u.want > u.limit {
			over = append(over, fmt.Sprintf("use %s of %s GiB %s", gib(u.used+u.want), gib(u.limit), u.name))
		}
	}
	return over
}

// gib formats a size in GiB with at most three decimals.
func gib(v float64) string {
	return strconv.FormatFloat(math.Round(v*1000)/1000, 'f', -1, 64)
}

// Quotas is the quota of every user: Default, unless Users names the
// user. The zero Quotas limits no one.
type Quotas struct {
	// Default applies to every user Users does not name.
	Default Quota `json:"default"`
	// Users holds the per-user overrides, by user ID.
	Users map[string]Quota `json:"users,omitempty"`
}

// For returns the quota of user.
func (qs Quotas) For(user string) Quota {
	if q, ok := qs.Users[user]; ok {
		return q
	}
	return qs.Default
}

// Limits of a quota specification and of a quota file.
const (
	// MaxQuotaGiB is the largest size a quota may name (1 EiB in GiB).
	MaxQuotaGiB = 1 << 30
	// MaxQuotaFileBytes is the largest quota file read.
	MaxQuotaFileBytes = 4 << 20
	// MaxQuotaLine is the longest line of a quota file.
	MaxQuotaLine = 1024
	// MaxQuotaUsers is the most users a quota file may name.
	MaxQuotaUsers = 100_000
)

// decimalRe is a plain decimal number: digits, optionally a point and
// more digits (no sign, exponent, hex, infinity or NaN).
var decimalRe = regexp.MustCompile(`^[0-9]{1,12}(\.[0-9]{1,9})?$`)

// ParseQuota reads a quota specification: comma-separated KEY=VALUE pairs
// with the keys cru and workloads (whole numbers) and mru, sru and hru (GiB,
// decimals allowed), each at most once, 0 meaning unlimited. The empty
// string is the zero (unlimited) Quota. Example: "cru=4,mru=8,workloads=20".
func ParseQuota(spec string) (Quota, error) {
	return Quota{}.With(spec)
}

// With returns q with the fields spec names (see ParseQuota) replaced: a
// field spec does not name keeps q's value.
func (q Quota) With(spec string) (Quota, error) {
	if spec == "" {
		return q, nil
	}
	seen := map[string]bool{}
	for pair := range strings.SplitSeq(spec, ",") {
		key, val, ok := strings.Cut(pair, "=")
		if !ok || key == "" || val == "" {
			return Quota{}, fmt.Errorf("%w: quota %q: want KEY=VALUE, got %q", ErrBadQuota, spec, pair)
		}
		if seen[key] {
			return Quota{}, fmt.Errorf("%w: quota %q: %s given twice", ErrBadQuota, spec, key)
		}
		seen[key] = true
		switch key {
		case "cru", "workloads":
			n, err := strconv.ParseUint(val, 10, 32)
			if err != nil {
				return Quota{}, fmt.Errorf("%w: quota %q: %s=%s is not a whole number below 2^32", ErrBadQuota, spec, key, val)
			}
			if key == "cru" {
				q.Units.CRU = n
			} else {
				q.Workloads = n
			}
		case "mru", "sru", "hru":
			f, err := strconv.ParseFloat(val, 64)
			if err != nil || !decimalRe.MatchString(val) || f > MaxQuotaGiB {
				return Quota{}, fmt.Errorf("%w: quota %q: %s=%s is not a decimal number of GiB from 0 to %d", ErrBadQuota, spec, key, val, MaxQuotaGiB)
			}
			switch key {
			case "mru":
				q.Units.MRU = f
			case "sru":
				q.Units.SRU = f
			default:
				q.Units.HRU = f
			}
		default:
			return Quota{}, fmt.Errorf("%w: quota %q: unknown key %q (want cru, mru, sru, hru or workloads)", ErrBadQuota, spec, key)
		}
	}
	return q, nil
}

// ParseQuotaFile reads per-user quota overrides, one a line:
//
//	# a comment
//	USER_ID KEY=VALUE,…
//
// USER_ID is a user's 64-hex-digit key (lowercase); KEY=VALUE are as in
// ParseQuota and replace those fields of def for that user, the others
// keeping def's value (so "cru=0" lifts the default's CRU limit). Blank
// lines and lines starting with # are skipped. A user named twice, an
// unknown key, a bad value, a line longer than MaxQuotaLine, more than
// MaxQuotaUsers users or more than MaxQuotaFileBytes are refused with
// the line's number.
func ParseQuotaFile(r io.Reader, def Quota) (map[string]Quota, error) {
	out := map[string]Quota{}
	data, err := io.ReadAll(io.LimitReader(r, MaxQuotaFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading quota file: %w", err)
	}
	if len(data) > MaxQuotaFileBytes {
		return nil, fmt.Errorf("%w: file larger than %d bytes", ErrBadQuota, MaxQuotaFileBytes)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), MaxQuotaLine+1)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if len(sc.Text()) > MaxQuotaLine {
			return nil, fmt.Errorf("%w: line %d: longer than %d bytes", ErrBadQuota, n, MaxQuotaLine)
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			return nil, fmt.Errorf("%w: line %d: want USER_ID KEY=VALUE,…, got %d fields", ErrBadQuota, n, len(fields))
		}
		user := fields[0]
		if !isHex(user, 64) {
			return nil, fmt.Errorf("%w: line %d: user %q is not 64 lowercase hex digits", ErrBadQuota, n, user)
		}
		if _, dup := out[user]; dup {
			return nil, fmt.Errorf("%w: line %d: user %s named twice", ErrBadQuota, n, user)
		}
		if len(out) == MaxQuotaUsers {
			return nil, fmt.Errorf("%w: line %d: more than %d users", ErrBadQuota, n, MaxQuotaUsers)
		}
		q, err := def.With(fields[1])
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		out[user] = q
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("%w: line %d: longer than %d bytes", ErrBadQuota, n+1, MaxQuotaLine)
		}
		return nil, fmt.Errorf("reading quota file: %w", err)
	}
	return out, nil
}
