package metrics

import (
	"strings"
	"testing"

	"github.com/edgeprov/provisiond/internal/selfcheck"
)

func TestSelfCheck(t *testing.T) {
	m := New(&fakeSource{})
	m.SelfCheck(&selfcheck.Report{Results: []selfcheck.Result{
		{Name: selfcheck.Runc, Status: selfcheck.Failed},
		{Name: selfcheck.Loop, Status: selfcheck.OK},
		{Name: selfcheck.Tun, Status: selfcheck.Warn},
	}})
	// A second report (a re-check) replaces the first, dropping what it lacks.
	m.SelfCheck(&selfcheck.Report{Results: []selfcheck.Result{
		{Name: selfcheck.Runc, Status: selfcheck.OK},
		{Name: selfcheck.Tun, Status: selfcheck.Warn},
	}})
	out := scrape(t, m)
	for _, want := range []string{`provisiond_selfcheck_ok{check="runc"} 1`, `provisiond_selfcheck_ok{check="tun"} 0`} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("scrape lacks %s", want)
		}
	}
	if strings.Contains(out, `check="loop"`) {
		t.Errorf("a check the last report lacks is still published:\n%s", out)
	}
}
