package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/edgeprov/provisiond/heartbeat"
	"github.com/edgeprov/provisiond/internal/engine"
	"github.com/edgeprov/provisiond/internal/gc"
	"github.com/edgeprov/provisiond/primitives/container"
	"github.com/edgeprov/provisiond/provision"
)

// defaultConfigFile is read when --config is not given and the file exists.
const defaultConfigFile = "/etc/provisiond/provisiond.conf"

// config is everything the daemon and the CLI are configured with.
type config struct {
	DataDir       string
	Explorer      string
	ExplorerCA    string
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
	DiskMarginGiB float64
	OpTimeout     time.Duration
	DepTimeout    time.Duration
	MaxImageMiB   int64
	LocalImages   string
	// PidsLimit, LogMaxSize, LogMaxFiles and RunDir are the containers'
	// (container.Options).
	PidsLimit   int64
	LogMaxSize  string // parsed by parseSize
	LogMaxFiles int
	RunDir      string
	Resync      time.Duration
	PollWait    time.Duration
	LogFormat   string
	LogLevel    string

	// Heartbeat is the interval between the node's signed heartbeats
	// (default 5m); BootIDFile is where their boot id is read (default
	// the kernel's).
	Heartbeat  time.Duration
	BootIDFile string

	// Uplink is the node's public interface (default "": no egress, no
	// published ports); PortMin and PortMax bound the ports containers may
	// publish on it (default 1024-65535).
	Uplink           string
	PortMin, PortMax int
	ImageHosts       []string
	// InsecureRegistries and RegistryMirrors configure registry images
	// (container.Options).
	InsecureRegistries []string
	RegistryMirrors    []string
	// RegistryAuth is the credentials file of private registries (a
	// docker config.json; default "": none).
	RegistryAuth string
	GCInterval   time.Duration

	// ExplorerTimeout bounds one request to the explorer, its reply read
	// included; a poll gets PollWait + ExplorerTimeout (default 30s).
	ExplorerTimeout time.Duration

	// RestartBackoff and RestartBackoffMax bound the wait before a stopped
	// container restarts (container.Options; defaults 10s and 5m).
	RestartBackoff, RestartBackoffMax time.Duration

	// UserQuota is every user's quota (provision.ParseQuota; default "":
	// unlimited) and UserQuotaFile the file of per-user overrides
	// (provision.ParseQuotaFile; default "": none). See quotas.
	UserQuota     string
	UserQuotaFile string
}

// quotas reads the quota configuration: --user-quota for every user,
// --user-quota-file's lines for the users they name.
func (c *config) quotas() (provision.Quotas, error) {
	def, err := provision.ParseQuota(c.UserQuota)
	if err != nil {
		return provision.Quotas{}, fmt.Errorf("--user-quota: %w", err)
	}
	qs := provision.Quotas{Default: def}
	if c.UserQuotaFile == "" {
		return qs, nil
	}
	f, err := os.Open(c.UserQuotaFile)
	if err != nil {
		return provision.Quotas{}, fmt.Errorf("--user-quota-file: %w", err)
	}
	defer f.Close()
	if qs.Users, err = provision.ParseQuotaFile(f, def); err != nil {
		return provision.Quotas{}, fmt.Errorf("--user-quota-file %s: %w", c.UserQuotaFile, err)
	}
	return qs, nil
}

func (c *config) dbPath() string { return filepath.Join(c.DataDir, "provisiond.db") }

func (c *config) identityPath() string {
	if c.Identity != "" {
		return c.Identity
	}
	return filepath.Join(c.DataDir, "identity.key")
}

func env(name string) []string { return []string{"PROVISIOND_" + name} }

// globalFlags are shared by the daemon and the read commands, so both look
// at the same data directory and socket.
func globalFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "config", Usage: "`FILE` of PROVISIOND_*=value lines (systemd EnvironmentFile format)", Value: defaultConfigFile, EnvVars: env("CONFIG")},
		&cli.StringFlag{Name: "data-dir", Usage: "`DIR` holding the database, identity, volumes, images and containers", Value: "/var/lib/provisiond", EnvVars: env("DATA_DIR")},
		&cli.StringFlag{Name: "identity", Usage: "node key seed `FILE` (default: <data-dir>/identity.key)", EnvVars: env("IDENTITY")},
		&cli.StringFlag{Name: "socket", Usage: "admin unix socket `PATH` the CLI reads a running daemon through", Value: "/run/provisiond/provisiond.sock", EnvVars: env("SOCKET")},
		&cli.StringFlag{Name: "ssd-path", Usage: "`DIR` of SSD volume images; its filesystem size counts as SRU (default: <data-dir>/volumes/ssd)", EnvVars: env("SSD_PATH")},
		&cli.StringFlag{Name: "hdd-path", Usage: "`DIR` of HDD volume images; its filesystem size counts as HRU (default: <data-dir>/volumes/hdd)", EnvVars: env("HDD_PATH")},
		&cli.Uint64Flag{Name: "reserve-cru", Usage: "cores kept back for the system", Value: 0, EnvVars: env("RESERVE_CRU")},
		&cli.Float64Flag{Name: "reserve-mru", Usage: "GiB of memory kept back for the system (0: the larger of 1 GiB and 10% of memory)", Value: 0, EnvVars: env("RESERVE_MRU")},
		&cli.Float64Flag{Name: "reserve-sru", Usage: "GiB of SSD kept back for the system", Value: 0, EnvVars: env("RESERVE_SRU")},
		&cli.Float64Flag{Name: "reserve-hru", Usage: "GiB of HDD kept back for the system", Value: 0, EnvVars: env("RESERVE_HRU")},
		&cli.Float64Flag{Name: "disk-margin-gib", Usage: "GiB kept free on each storage filesystem on top of what it used at start (0: the larger of 1 GiB and 2% of the filesystem; negative: none)", Value: 0, EnvVars: env("DISK_MARGIN_GIB")},
		&cli.StringFlag{Name: "user-quota", Usage: "`QUOTA` of every user on this node: cru=CORES,mru=GiB,sru=GiB,hru=GiB,workloads=N (any of them; 0 or absent: unlimited), e.g. cru=4,mru=8,workloads=20; default: unlimited", EnvVars: env("USER_QUOTA")},
		&cli.StringFlag{Name: "user-quota-file", Usage: "`FILE` of per-user quota overrides, one `USER_ID KEY=VALUE,…` a line (# comments); the fields a line names replace --user-quota's for that user", EnvVars: env("USER_QUOTA_FILE")},
		&cli.StringFlag{Name: "log-format", Usage: "`FORMAT` of logs: json, console, or auto (console on a terminal)", Value: "auto", EnvVars: env("LOG_FORMAT")},
		&cli.StringFlag{Name: "log-level", Usage: "`LEVEL`: debug, info, warn, error", Value: "info", EnvVars: env("LOG_LEVEL")},
	}
}

// runFlags are the daemon's own.
func runFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "explorer", Usage: "explorer base `URL` (required)", EnvVars: env("EXPLORER")},
		&cli.StringFlag{Name: "explorer-ca", Usage: "PEM `FILE` of the CA(s) to trust for an https explorer instead of the system's roots", EnvVars: env("EXPLORER_CA")},
		&cli.StringFlag{Name: "metrics-listen", Usage: "`ADDR` serving Prometheus /metrics; empty disables", Value: "127.0.0.1:9109", EnvVars: env("METRICS_LISTEN")},
		&cli.IntFlag{Name: "workers", Usage: "operations run at the same time", Value: 4, EnvVars: env("WORKERS")},
		&cli.DurationFlag{Name: "op-timeout", Usage: "time limit of one provision or decommission", Value: 5 * time.Minute, EnvVars: env("OP_TIMEOUT")},
		&cli.Int64Flag{Name: "max-image-mib", Usage: "largest size in MiB of the files a container image may unpack to (a larger image fails; a tar bomb cannot fill the disk)", Value: container.DefaultMaxImageSize >> 20, EnvVars: env("MAX_IMAGE_MIB")},
		&cli.StringFlag{Name: "local-images", Usage: "`DIR` local container image paths must lie below (symlinks may not leave it); empty: only http(s) images are used", EnvVars: env("LOCAL_IMAGES")},
		&cli.Int64Flag{Name: "container-pids-limit", Usage: "most processes (threads included) one container may run; a fork bomb stops there", Value: container.DefaultPidsLimit, EnvVars: env("CONTAINER_PIDS_LIMIT")},
		&cli.StringFlag{Name: "container-log-max-size", Usage: "`SIZE` (bytes, or with KiB, MiB, GiB) a container's log file is rotated at", Value: "10MiB", EnvVars: env("CONTAINER_LOG_MAX_SIZE")},
		&cli.IntFlag{Name: "container-log-max-files", Usage: "log files kept per container, the current one included (so at most max-size × max-files bytes)", Value: container.DefaultLogMaxFiles, EnvVars: env("CONTAINER_LOG_MAX_FILES")},
		&cli.DurationFlag{Name: "container-restart-backoff", Usage: "wait before a stopped container restarts (by its restart policy); doubled for each exit within 10 min", Value: container.DefaultRestartBackoff, EnvVars: env("CONTAINER_RESTART_BACKOFF")},
		&cli.DurationFlag{Name: "container-restart-backoff-max", Usage: "longest wait before a stopped container restarts", Value: container.DefaultRestartBackoffMax, EnvVars: env("CONTAINER_RESTART_BACKOFF_MAX")},
		&cli.StringFlag{Name: "container-run-dir", Usage: "`DIR` the containers' root filesystems are mounted in; it and every directory above it must be searchable by others (a container's user namespace mounts from there)", Value: container.DefaultRunDir, EnvVars: env("CONTAINER_RUN_DIR")},
		&cli.StringSliceFlag{Name: "image-hosts", Usage: "`HOST`s (names or IP literals, comma-separated or repeated) an http(s) image may be fetched from although they resolve to a loopback, link-local, private or the node's own address; default none", EnvVars: env("IMAGE_HOSTS")},
		&cli.StringSliceFlag{Name: "insecure-registries", Usage: "registry `HOST:PORT`s (comma-separated or repeated) spoken to over plain HTTP; every other registry must speak HTTPS. A listed registry may be on a private or loopback address", EnvVars: env("INSECURE_REGISTRIES")},
		&cli.StringSliceFlag{Name: "registry-mirrors", Usage: "registry `HOST:PORT`s (comma-separated or repeated) asked first, in order, for every registry image (same repository path); the signed digest guarantees their copies", EnvVars: env("REGISTRY_MIRRORS")},
		&cli.StringFlag{Name: "registry-auth", Usage: "credentials of private registries and mirrors: a docker config.json (`FILE`, mode 0600, its \"auths\" map as `docker login` writes it); a registry it does not name is asked anonymously", EnvVars: env("REGISTRY_AUTH")},
		&cli.DurationFlag{Name: "dependency-timeout", Usage: "how long a container waits, from its acceptance, for the network and volumes it names to be deployed before it fails", Value: engine.DefaultDependencyTimeout, EnvVars: env("DEPENDENCY_TIMEOUT")},
		&cli.DurationFlag{Name: "gc-interval", Usage: "interval between garbage collections (unused images, leftover unpacks, orphans, final records past expiry); one runs at start", Value: gc.DefaultInterval, EnvVars: env("GC_INTERVAL")},
		&cli.DurationFlag{Name: "resync", Usage: "interval between inspections of deployed workloads", Value: 5 * time.Minute, EnvVars: env("RESYNC")},
		&cli.DurationFlag{Name: "heartbeat", Usage: "interval between the node's signed heartbeats to the explorer (one also at every start; 1s to 1h)", Value: heartbeat.DefaultInterval, EnvVars: env("HEARTBEAT")},
		&cli.StringFlag{Name: "boot-id-file", Usage: "`FILE` the heartbeats' boot id is read from (tests stand for a reboot with it)", Value: "/proc/sys/kernel/random/boot_id", EnvVars: env("BOOT_ID_FILE"), Hidden: true},
		&cli.DurationFlag{Name: "poll-wait", Usage: "how long the explorer may hold a long-poll", Value: 30 * time.Second, EnvVars: env("POLL_WAIT")},
		&cli.StringFlag{Name: "uplink", Usage: "the node's public `INTERFACE`: networks reach the outside through it (masqueraded, isolated from each other and from the node) and containers publish ports on it; empty: networks are islands", EnvVars: env("UPLINK")},
		&cli.StringFlag{Name: "publish-ports", Usage: "`MIN-MAX` node ports containers may publish on the uplink (keep the node's own services out)", Value: "1024-65535", EnvVars: env("PUBLISH_PORTS")},
		&cli.DurationFlag{Name: "explorer-timeout", Usage: "how long one request to the explorer may take, reading its reply included (a long-poll gets poll-wait more)", Value: 30 * time.Second, EnvVars: env("EXPLORER_TIMEOUT")},
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

// flagContext returns the innermost context in c's lineage whose command
// line set name, else c itself (whose value then comes from the
// environment or the default). Global flags are defined both on the app
// and on each command, so `provisiond --data-dir X status` and
// `provisiond status --data-dir X` mean the same.
func flagContext(c *cli.Context, name string) *cli.Context {
	for _, lc := range c.Lineage() {
		for _, n := range lc.LocalFlagNames() {
			if n == name {
				return lc
			}
		}
	}
	return c
}

func configFrom(c *cli.Context) *config {
	str := func(n string) string { return flagContext(c, n).String(n) }
	f64 := func(n string) float64 { return flagContext(c, n).Float64(n) }
	cfg := &config{
		DataDir:            str("data-dir"),
		Explorer:           c.String("explorer"),
		ExplorerCA:         c.String("explorer-ca"),
		Identity:           str("identity"),
		Socket:             str("socket"),
		MetricsListen:      c.String("metrics-listen"),
		Workers:            c.Int("workers"),
		SSDPath:            str("ssd-path"),
		HDDPath:            str("hdd-path"),
		ReserveCRU:         flagContext(c, "reserve-cru").Uint64("reserve-cru"),
		ReserveMRU:         f64("reserve-mru"),
		ReserveSRU:         f64("reserve-sru"),
		ReserveHRU:         f64("reserve-hru"),
		DiskMarginGiB:      f64("disk-margin-gib"),
		OpTimeout:          c.Duration("op-timeout"),
		DepTimeout:         c.Duration("dependency-timeout"),
		MaxImageMiB:        c.Int64("max-image-mib"),
		LocalImages:        c.String("local-images"),
		PidsLimit:          c.Int64("container-pids-limit"),
		LogMaxSize:         c.String("container-log-max-size"),
		LogMaxFiles:        c.Int("container-log-max-files"),
		RunDir:             c.String("container-run-dir"),
		ImageHosts:         c.StringSlice("image-hosts"),
		InsecureRegistries: c.StringSlice("insecure-registries"),
		RegistryMirrors:    c.StringSlice("registry-mirrors"),
		RegistryAuth:       c.String("registry-auth"),
		Resync:             c.Duration("resync"),
		Heartbeat:          c.Duration("heartbeat"),
		BootIDFile:         c.String("boot-id-file"),
		GCInterval:         c.Duration("gc-interval"),
		PollWait:           c.Duration("poll-wait"),
		LogFormat:          str("log-format"),
		LogLevel:           str("log-level"),
	}
	cfg.UserQuota, cfg.UserQuotaFile = str("user-quota"), str("user-quota-file")
	cfg.ExplorerTimeout = c.Duration("explorer-timeout")
	cfg.RestartBackoff, cfg.RestartBackoffMax = c.Duration("container-restart-backoff"), c.Duration("container-restart-backoff-max")
	cfg.Uplink = c.String("uplink")
	cfg.PortMin, cfg.PortMax = parsePortRange(c.String("publish-ports"))
	if cfg.SSDPath == "" {
		cfg.SSDPath = filepath.Join(cfg.DataDir, "volumes", "ssd")
	}
	if cfg.HDDPath == "" {
		cfg.HDDPath = filepath.Join(cfg.DataDir, "volumes", "hdd")
	}
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

// parsePortRange reads "MIN-MAX"; anything else gives 0, 0, which
// checkPortRange refuses.
func parsePortRange(s string) (int, int) {
	lo, hi, ok := strings.Cut(s, "-")
	if !ok {
		return 0, 0
	}
	a, errA := strconv.Atoi(lo)
	b, errB := strconv.Atoi(hi)
	if errA != nil || errB != nil {
		return 0, 0
	}
	return a, b
}

// checkPortRange refuses a publishable port range that is not 1 ≤ MIN ≤
// MAX ≤ 65535.
func checkPortRange(lo, hi int) error {
	if lo < 1 || hi > 65535 || lo > hi {
		return fmt.Errorf("--publish-ports: want MIN-MAX with 1 <= MIN <= MAX <= 65535")
	}
	return nil
}

// parseSize reads a size in bytes: a number with an optional KiB, MiB or
// GiB suffix ("10MiB").
func parseSize(s string) (int64, error) {
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if n, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > (1<<50)/mult {
		return 0, fmt.Errorf("size %q: want a positive number of bytes, KiB, MiB or GiB", s)
	}
	return n * mult, nil
}
