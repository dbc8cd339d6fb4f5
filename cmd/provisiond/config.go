package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/term"
)

// defaultConfigFile is read when --config is not given and the file exists.
const defaultConfigFile = "/etc/provisiond/provisiond.conf"

// config is everything the daemon and the CLI are configured with.
type config struct {
	DataDir       string
	Explorer      string
	Identity      string
	Socket        string
	MetricsListen string
	Workers       int
	SSDPath       string
	HDDPath       string
	ReserveCRU    uint64
	ReserveMRU    float64
	ReserveSRU    float64
	ReserveHRU    float64
	OpTimeout     time.Duration
	Resync        time.Duration
	PollWait      time.Duration
	LogFormat     string
	LogLevel      string
}

func (c *config) dbPath() string { return filepath.Join(c.DataDir, "provisiond.db") }

func (c *config) identityPath() string {
	if c.Identity != "" {
		return c.Identity
	}
	return filepath.Join(c.DataDir, "identity.key")
}

// globalOptions are shared by the daemon and the read commands, so both
// look at the same data directory and socket.
func globalOptions() []*option {
	return []*option{
		{name: "config", kind: kindString, meta: "FILE", usage: "FILE of PROVISIOND_*=value lines (systemd EnvironmentFile format)", def: defaultConfigFile, env: true},
		{name: "data-dir", kind: kindString, meta: "DIR", usage: "DIR holding the database, identity, volumes, images and containers", def: "/var/lib/provisiond", env: true},
		{name: "identity", kind: kindString, meta: "FILE", usage: "node key seed FILE", shown: "<data-dir>/identity.key", env: true},
		{name: "socket", kind: kindString, meta: "PATH", usage: "admin unix socket PATH the CLI reads a running daemon through", def: "/run/provisiond/provisiond.sock", env: true},
		{name: "ssd-path", kind: kindString, meta: "DIR", usage: "DIR of SSD volume images; its filesystem size counts as SRU", shown: "<data-dir>/volumes/ssd", env: true},
		{name: "hdd-path", kind: kindString, meta: "DIR", usage: "DIR of HDD volume images; its filesystem size counts as HRU", shown: "<data-dir>/volumes/hdd", env: true},
		{name: "reserve-cru", kind: kindUint, meta: "CORES", usage: "cores kept back for the system", def: "0", env: true},
		{name: "reserve-mru", kind: kindFloat, meta: "GIB", usage: "GiB of memory kept back for the system (0: the larger of 1 GiB and 10% of memory)", def: "0", env: true},
		{name: "reserve-sru", kind: kindFloat, meta: "GIB", usage: "GiB of SSD kept back for the system", def: "0", env: true},
		{name: "reserve-hru", kind: kindFloat, meta: "GIB", usage: "GiB of HDD kept back for the system", def: "0", env: true},
		{name: "log-format", kind: kindString, meta: "FORMAT", usage: "FORMAT of logs: json, console, or auto (console on a terminal)", def: "auto", env: true},
		{name: "log-level", kind: kindString, meta: "LEVEL", usage: "LEVEL: debug, info, warn, error", def: "info", env: true},
	}
}

// runOptions are the daemon's own.
func runOptions() []*option {
	return []*option{
		{name: "explorer", kind: kindString, meta: "URL", usage: "explorer base URL (required)", env: true},
		{name: "metrics-listen", kind: kindString, meta: "ADDR", usage: "ADDR serving Prometheus /metrics; empty disables", def: "127.0.0.1:9109", env: true},
		{name: "workers", kind: kindInt, meta: "N", usage: "operations run at the same time", def: "4", env: true},
		{name: "op-timeout", kind: kindDuration, meta: "DURATION", usage: "time limit of one provision or decommission", def: "5m", env: true},
		{name: "resync", kind: kindDuration, meta: "DURATION", usage: "interval between inspections of deployed workloads", def: "5m", env: true},
		{name: "poll-wait", kind: kindDuration, meta: "DURATION", usage: "how long the explorer may hold a long-poll", def: "30s", env: true},
	}
}

// loadConfigFile sets, from the config file, every PROVISIOND_* variable the
// environment does not already set, before the flags are parsed. A missing
// default file is fine; a missing file named explicitly is an error.
func loadConfigFile(args []string) error {
	path, explicit := os.Getenv("PROVISIOND_CONFIG"), false
	if path != "" {
		explicit = true
	}
	for i, a := range args {
		switch {
		case a == "--config" || a == "-config":
			if i+1 < len(args) {
				path, explicit = args[i+1], true
			}
		case strings.HasPrefix(a, "--config="), strings.HasPrefix(a, "-config="):
			path, explicit = a[strings.Index(a, "=")+1:], true
		}
	}
	if path == "" {
		path = defaultConfigFile
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading config file: %w", err)
	}
	defer f.Close()
	vars, err := parseEnvFile(f)
	if err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	for k, v := range vars {
		if _, set := os.LookupEnv(k); !set {
			os.Setenv(k, v)
		}
	}
	return nil
}

// parseEnvFile reads KEY=value lines; blank lines and # comments are
// skipped, values may be quoted. Only PROVISIOND_* keys are accepted, so a
// typo is an error rather than a silently ignored setting.
func parseEnvFile(r io.Reader) (map[string]string, error) {
	vars := map[string]string{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		k = strings.TrimSpace(k)
		if !ok || !strings.HasPrefix(k, "PROVISIOND_") {
			return nil, fmt.Errorf("line %d: want PROVISIOND_NAME=value", n)
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		vars[k] = v
	}
	return vars, sc.Err()
}

// configFrom reads the global options of a command.
func configFrom(in *invocation) *config {
	cfg := &config{
		DataDir:    in.str("data-dir"),
		Identity:   in.str("identity"),
		Socket:     in.str("socket"),
		SSDPath:    in.str("ssd-path"),
		HDDPath:    in.str("hdd-path"),
		ReserveCRU: in.unsigned("reserve-cru"),
		ReserveMRU: in.float("reserve-mru"),
		ReserveSRU: in.float("reserve-sru"),
		ReserveHRU: in.float("reserve-hru"),
		LogFormat:  in.str("log-format"),
		LogLevel:   in.str("log-level"),
	}
	if cfg.SSDPath == "" {
		cfg.SSDPath = filepath.Join(cfg.DataDir, "volumes", "ssd")
	}
	if cfg.HDDPath == "" {
		cfg.HDDPath = filepath.Join(cfg.DataDir, "volumes", "hdd")
	}
	return cfg
}

// runConfigFrom reads the global options and the daemon's own.
func runConfigFrom(in *invocation) *config {
	cfg := configFrom(in)
	cfg.Explorer = in.str("explorer")
	cfg.MetricsListen = in.str("metrics-listen")
	cfg.Workers = in.integer("workers")
	cfg.OpTimeout = in.duration("op-timeout")
	cfg.Resync = in.duration("resync")
	cfg.PollWait = in.duration("poll-wait")
	return cfg
}

// newLogger builds the root logger: JSON, or console when asked or when
// stderr is a terminal and the format is auto.
func newLogger(format, level string, w *os.File) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		return zerolog.Nop(), fmt.Errorf("--log-level %q: %w", level, err)
	}
	var out io.Writer = w
	switch format {
	case "json":
	case "console":
		out = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339}
	case "auto":
		if term.IsTerminal(int(w.Fd())) {
			out = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339}
		}
	default:
		return zerolog.Nop(), fmt.Errorf("--log-format %q: want json, console or auto", format)
	}
	return zerolog.New(out).Level(lvl).With().Timestamp().Logger(), nil
}
