package server_test

import (
	"context"
	"flag"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/provision"
)

var screenshots = flag.String("screenshots", "", "write the pages' screenshots (ui-*.png) into this `directory` (make screenshots: docs)")

// browser starts headless Chromium (Debian's chromium) with a fresh
// profile and no network of its own, and returns the context of one tab
// and what its pages log as errors or warnings.
func browser(t *testing.T) (context.Context, *consoleLog) {
	t.Helper()
	path := testutil.RequiresCommand(t, "chromium")
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1600, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(t.Context(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	logs := &consoleLog{}
	lctx, stopLog := context.WithCancel(ctx)
	msgs := chromedp.Console(lctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleWarning || m.IsException() {
				logs.add(m.String() + " " + m.URL)
			}
		}
	}()
	t.Cleanup(func() { stopLog(); <-done; cancelTab(); cancelAlloc() })
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx, logs
}

// consoleLog gathers what the pages logged as errors or warnings.
type consoleLog struct {
	mu   sync.Mutex
	msgs []string
}

func (c *consoleLog) add(m string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.msgs = append(c.msgs, m)
}

func (c *consoleLog) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.msgs
	c.msgs = nil
	return m
}

// TestUIInBrowser loads each page in headless Chromium: it loads with no
// console error or warning (a blocked resource, a CSP violation, a missing
// file would log one), shows the figures the API shows, and is captured
// as a screenshot (into -screenshots DIR when set).
func TestUIInBrowser(t *testing.T) {
	ctx, logs := browser(t)
	f := newFleet(t, server.Config{})
	api := apiUnits(t, f, f.up)
	errAPI := f.xs.Reservation(t, f.ids["error"])
	avail := heartbeats(t, f)

	pages := []struct {
		name   string
		path   string
		checks map[string]string // selector → text it must show
		// availSel shows the node's availability and reboot its reboot.
		availSel, reboot string
	}{
		{"fleet", "/ui/", map[string]string{
			`tr[data-node="` + f.up + `"] td[data-unit="cru"] .figs`: figures(api.CRU),
			`tr[data-node="` + f.up + `"] td[data-unit="mru"] .figs`: figures(api.MRU),
			`tr[data-node="` + f.up + `"] td[data-unit="sru"] .figs`: figures(api.SRU),
			`tr[data-node="` + f.up + `"] td[data-unit="hru"] .figs`: figures(api.HRU),
			`tr[data-node="` + f.up + `"] .st`:                       "up",
			`tr[data-node="` + f.old + `"] .st`:                      "down",
			`tr[data-node="` + f.up + `"] .version`:                  "v1.0.0",
		}, `tr[data-node="` + f.up + `"] .avail`, ", 1 reboot"},
		{"node", "/ui/nodes/" + f.up, map[string]string{
			`#units tr[data-unit="cru"] .figs`:                           figures(api.CRU),
			`#units tr[data-unit="mru"] .figs`:                           figures(api.MRU),
			`#reservations tr[data-id="` + f.ids["ok"] + `"] .st`:        "ok",
			`#reservations tr[data-id="` + f.ids["pending"] + `"] .st`:   "pending",
			`#reservations tr[data-id="` + f.ids["delivered"] + `"] .st`: "delivered",
		}, "#availability", "; 1 reboot in 30 days"},
		{"reservation", "/ui/reservations/" + f.ids["error"], map[string]string{
			`#state`:                         string(errAPI.Result.State),
			`#verified`:                      "signatures verified by the explorer",
			`#result .id.sig`:                errAPI.Result.Signature,
			`#history li:nth-child(2) .what`: "delivered to node " + f.up,
			`#history li:nth-child(2) time`:  errAPI.Delivered.UTC().Format("2006-01-02 15:04:05.000 UTC"),
		}, "", ""},
	}
	for _, p := range pages {
		t.Run(p.name, func(t *testing.T) {
			tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if err := chromedp.Do(tctx, chromedp.Navigate(f.xs.URL()+p.path), chromedp.WaitVisible(chromedp.CSS("#as-of"))); err != nil {
				t.Fatalf("loading %s: %v", p.path, err)
			}
			for sel, want := range p.checks {
				got, err := chromedp.Run(tctx, chromedp.Text(chromedp.CSS(sel)))
				if err != nil {
					t.Fatalf("%s: reading %q: %v", p.path, sel, err)
				}
				if got = strings.TrimSpace(got); got != want {
					t.Errorf("%s: %q shows %q, want %q", p.path, sel, got, want)
				}
			}
			if p.availSel != "" {
				checkAvailability(t, tctx, p.availSel, avail.Percent30d, p.reboot)
			}
			if p.name == "node" {
				dots, err := chromedp.Run(tctx, chromedp.Evaluate[int](`document.querySelectorAll('#timeline circle.dot').length`))
				if err != nil || dots != 3 {
					t.Errorf("the timeline has %d results (%v), want 3", dots, err)
				}
			}
			shot, err := chromedp.Run(tctx, chromedp.FullScreenshot(100))
			if err != nil {
				t.Fatalf("screenshot of %s: %v", p.path, err)
			}
			if msgs := logs.take(); len(msgs) > 0 {
				t.Errorf("%s logged:\n%s", p.path, strings.Join(msgs, "\n"))
			}
			if len(shot) < 1000 || string(shot[1:4]) != "PNG" {
				t.Fatalf("screenshot of %s: %d bytes, not a PNG", p.path, len(shot))
			}
			dir := *screenshots
			if dir == "" {
				dir = t.TempDir()
			}
			out := filepath.Join(dir, "ui-"+p.name+".png")
			if err := os.WriteFile(out, shot, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %d bytes → %s", p.path, len(shot), out)
		})
	}
}

// percentRe finds the availability in a page's text.
var percentRe = regexp.MustCompile(`([0-9.]+) %`)

// checkAvailability fails unless the element at sel shows the percentage
// want (give or take the time between the API's answer and the page's)
// and the text reboot.
func checkAvailability(t *testing.T, ctx context.Context, sel string, want float64, reboot string) {
	t.Helper()
	text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("reading %s: %v", sel, err)
	}
	m := percentRe.FindStringSubmatch(text)
	var pct float64
	if m != nil {
		pct, err = strconv.ParseFloat(m[1], 64)
	}
	if m == nil || err != nil || math.Abs(pct-want) > 0.5 || !strings.Contains(text, reboot) {
		t.Errorf("%s shows %q (%v); want %.2f %% and %q", sel, text, err, want, reboot)
	}
}

// heartbeats sends f.up's signed heartbeats of the last 50 minutes, every
// 10 minutes: a boot, then a reboot 8 minutes ago, and returns the
// availability the API then shows for the node.
func heartbeats(t *testing.T, f *fleet) *explorer.NodeAvailability {
	t.Helper()
	nc := explorer.NewClient(f.xs.URL(), f.upKey, explorertest.ClientOptions())
	now := time.Now().UTC()
	beat := func(boot string, booted, created time.Time) {
		t.Helper()
		sendHeartbeat(t, nc, f.upKey, &provision.Heartbeat{NodeID: f.up, BootID: boot, Booted: booted, Created: created, Interval: 10 * time.Minute})
	}
	for _, ago := range []time.Duration{50, 40, 30, 20} {
		beat("boot-a", now.Add(-2*time.Hour), now.Add(-ago*time.Minute))
	}
	beat("boot-b", now.Add(-8*time.Minute), now.Add(-5*time.Minute))
	beat("boot-b", now.Add(-8*time.Minute), now)
	reply, err := explorer.NewUserClient(f.xs.URL(), f.user, explorertest.ClientOptions()).ListNodes(t.Context(), explorer.NodeFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range reply.Nodes {
		if n.NodeID == f.up && n.Availability != nil && n.Availability.Reboots30d == 1 {
			return n.Availability
		}
	}
	t.Fatalf("no availability with one reboot for %s: %+v", f.up, reply.Nodes)
	return nil
}
