package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// unsetOptionEnv removes every PROVISIOND_* variable of the options for
// the test, and restores them after it.
func unsetOptionEnv(t *testing.T) {
	t.Helper()
	for _, o := range append(globalOptions(), runOptions()...) {
		t.Setenv(envName(o.name), "")
		os.Unsetenv(envName(o.name))
	}
}

// parseRun parses a `provisiond run` command line with the real options
// and returns the configuration the daemon would get.
func parseRun(t *testing.T, args ...string) (*config, error) {
	t.Helper()
	var got *config
	a := &app{
		global: globalOptions(),
		stdout: &bytes.Buffer{},
		root: &command{name: "provisiond", subs: []*command{{
			name:    "run",
			options: runOptions(),
			action:  func(_ context.Context, in *invocation) error { got = runConfigFrom(in); return nil },
		}}},
	}
	err := a.run(t.Context(), args)
	return got, err
}

func TestRunOptionDefaults(t *testing.T) {
	unsetOptionEnv(t)
	cfg, err := parseRun(t, "run")
	if err != nil {
		t.Fatal(err)
	}
	want := config{
		DataDir: "/var/lib/provisiond", Socket: "/run/provisiond/provisiond.sock", MetricsListen: "127.0.0.1:9109",
		Workers: 4, SSDPath: "/var/lib/provisiond/volumes/ssd", HDDPath: "/var/lib/provisiond/volumes/hdd",
		OpTimeout: 5 * time.Minute, Resync: 5 * time.Minute, PollWait: 30 * time.Second, LogFormat: "auto", LogLevel: "info",
	}
	if *cfg != want {
		t.Fatalf("defaults:\n got %+v\nwant %+v", *cfg, want)
	}
}

func TestRunOptionSources(t *testing.T) {
	for _, tc := range []struct {
		name  string
		env   map[string]string
		args  []string
		check func(*config) bool
	}{
		{"flag", nil, []string{"run", "--workers", "7"}, func(c *config) bool { return c.Workers == 7 }},
		{"env", map[string]string{"PROVISIOND_WORKERS": "9"}, []string{"run"}, func(c *config) bool { return c.Workers == 9 }},
		{"flag-over-env", map[string]string{"PROVISIOND_WORKERS": "9"}, []string{"run", "--workers=3"}, func(c *config) bool { return c.Workers == 3 }},
		{"empty-env-number-ignored", map[string]string{"PROVISIOND_POLL_WAIT": ""}, []string{"run"}, func(c *config) bool { return c.PollWait == 30*time.Second }},
		{"empty-env-string-counts", map[string]string{"PROVISIOND_METRICS_LISTEN": ""}, []string{"run"}, func(c *config) bool { return c.MetricsListen == "" }},
		{"global-before-command", nil, []string{"--data-dir", "/d", "run"}, func(c *config) bool { return c.DataDir == "/d" && c.SSDPath == "/d/volumes/ssd" }},
		{"global-after-command-wins", nil, []string{"--data-dir", "/a", "run", "--data-dir", "/b"}, func(c *config) bool { return c.DataDir == "/b" }},
		{"float-and-uint", nil, []string{"run", "--reserve-mru", "1.5", "--reserve-cru", "2"}, func(c *config) bool { return c.ReserveMRU == 1.5 && c.ReserveCRU == 2 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			unsetOptionEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			cfg, err := parseRun(t, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(cfg) {
				t.Fatalf("%v with %v: %+v", tc.args, tc.env, *cfg)
			}
		})
	}
}

func TestCommandLineErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"unknown-command", nil, []string{"nope"}, `unknown command "nope"`},
		{"unknown-subcommand", nil, []string{"cache", "nope"}, `cache: unknown command "nope"`},
		{"unknown-flag", nil, []string{"status", "--nope"}, "status: flag provided but not defined: -nope"},
		{"bad-number", nil, []string{"run", "--workers", "many"}, `invalid value "many" for flag -workers`},
		{"bad-duration", nil, []string{"run", "--resync", "5"}, `invalid value "5" for flag -resync`},
		{"bad-env", map[string]string{"PROVISIOND_OP_TIMEOUT": "soon"}, []string{"run"}, `PROVISIOND_OP_TIMEOUT="soon"`},
		{"unexpected-argument", nil, []string{"stats", "extra"}, `stats: unexpected argument "extra"`},
		{"run-flag-on-read-command", nil, []string{"status", "--workers", "2"}, "flag provided but not defined: -workers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			unsetOptionEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var out bytes.Buffer
			err := newApp(&out).run(t.Context(), tc.args)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "--help)") {
				t.Fatalf("error %v: want one containing %q and pointing at --help", err, tc.want)
			}
			if out.Len() != 0 {
				t.Fatalf("printed %q on an error", out.String())
			}
		})
	}
}

// TestRunHelpListsEveryOption checks that `provisiond run --help` names
// every option the daemon takes with its default and its variable.
func TestRunHelpListsEveryOption(t *testing.T) {
	var out bytes.Buffer
	if err := newApp(&out).run(t.Context(), []string{"run", "--help"}); err != nil {
		t.Fatal(err)
	}
	help := out.String()
	for _, o := range append(runOptions(), globalOptions()...) {
		var line string
		for l := range strings.Lines(help) {
			if strings.HasPrefix(strings.TrimSpace(l), "--"+o.name+" ") {
				line = l
			}
		}
		if line == "" {
			t.Errorf("no line for --%s in:\n%s", o.name, help)
			continue
		}
		def := o.def
		if o.shown != "" {
			def = o.shown
		}
		if def != "" && !(strings.Contains(line, "(default: ") && strings.Contains(line, def)) {
			t.Errorf("the line of --%s does not show its default %q: %q", o.name, def, line)
		}
		if !strings.Contains(line, "[$"+envName(o.name)+"]") {
			t.Errorf("the line of --%s does not name %s: %q", o.name, envName(o.name), line)
		}
	}
}

func TestHelpAndVersion(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no-arguments", nil, "COMMANDS:"},
		{"root-help", []string{"-h"}, "GLOBAL OPTIONS:"},
		{"group-without-command", []string{"cache"}, "provisiond cache - "},
		{"leaf-help", []string{"cache", "show", "--help"}, "provisiond cache show [options] ID"},
		{"version-flag", []string{"--version"}, "provisiond version "},
		{"version-command", []string{"version"}, "provisiond "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := newApp(&out).run(t.Context(), tc.args); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), tc.want) {
				t.Fatalf("%v printed %q, want %q in it", tc.args, out.String(), tc.want)
			}
		})
	}
}

// TestNoMethodCallsByName guards the daemon's size and so its RSS: a call
// of a method by a name known only at run time (text/template does it)
// makes the linker keep every exported method of every type, 2.4 MB of
// the mapped binary when the cli framework's help templates were in it.
func TestNoMethodCallsByName(t *testing.T) {
	if testing.Short() {
		t.Skip("links the daemon once more")
	}
	out, err := exec.CommandContext(t.Context(), "go", "build", "-ldflags=-dumpdep", "-o", os.DevNull, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%.2000s", err, out)
	}
	var callers []string
	for l := range strings.Lines(string(out)) {
		if from, _, ok := strings.Cut(l, " <ReflectMethod>"); ok && !slices.Contains(callers, from) {
			callers = append(callers, from)
		}
	}
	if len(callers) > 0 {
		t.Fatalf("these call methods by name through reflect, which keeps every exported method in the binary: %v", callers)
	}
}
