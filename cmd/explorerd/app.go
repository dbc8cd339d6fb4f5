package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/explorer/server/pgstore"
	"github.com/edgeprov/provisiond/internal/certs"
	"github.com/edgeprov/provisiond/internal/httpserve"
	"github.com/edgeprov/provisiond/internal/version"
	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/systemd"
)

// config is explorerd's configuration, from flags and EXPLORERD_* variables.
type config struct {
	// Listen is the address served (default 127.0.0.1:8090).
	Listen string
	// DataDir holds explorer.db (default /var/lib/explorerd); unused with
	// DatabaseURL.
	DataDir string
	// DatabaseURL, when set, keeps everything in PostgreSQL instead of
	// bbolt (postgres://…), so that several explorerd processes can serve
	// one database (default empty: bbolt).
	DatabaseURL string
	// EventRetention is how long PostgreSQL keeps events; a node whose
	// cursor fell below them reconciles from its state snapshot (default
	// 720h, 30 days; bbolt keeps every event).
	EventRetention time.Duration
	// ReservationRetention is how long a reservation is kept after it
	// expired before the expiry job deletes it (default 720h, 30 days).
	ReservationRetention time.Duration
	// LogFormat is json, console or auto (default auto).
	LogFormat string
	// LogLevel is debug, info, warn or error (default info).
	LogLevel string
	// ShutdownTimeout bounds the graceful shutdown (default 10s).
	ShutdownTimeout time.Duration
	// TLSCert and TLSKey, when set (both or neither), serve the API over
	// TLS with this PEM certificate chain and key, read again on SIGHUP
	// (default empty: plain HTTP, for loopback and tests).
	TLSCert, TLSKey string
	// MetricsListen is the address serving Prometheus /metrics (default
	// empty: no metrics listener).
	MetricsListen string
	// NoUI turns off the read-only pages at /ui/ (default false).
	NoUI bool
	// Limits bound what one caller may make the explorer do (server.Limits;
	// each flag's default is the server's).
	Limits server.Limits
	// MemoryLimit is the Go runtime's soft memory limit in bytes
	// (debug.SetMemoryLimit; default 128 MiB; 0: none): the collector
	// works harder as the heap nears it. GOMEMLIMIT, when set, wins.
	MemoryLimit int64

	logOut   io.Writer      // default os.Stderr
	onListen func(net.Addr) // tests learn the address
}

func newApp() *cli.App {
	env := func(name string) []string { return []string{"EXPLORERD_" + name} }
	def := server.DefaultLimits()
	return &cli.App{
		Name:            "explorerd",
		Usage:           "reference explorer for provisiond nodes",
		Version:         version.String(),
		HideHelpCommand: true,
		ExitErrHandler:  func(*cli.Context, error) {}, // main prints the error once
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Usage: "`ADDR` to serve the API on", Value: "127.0.0.1:8090", EnvVars: env("LISTEN")},
			&cli.StringFlag{Name: "data-dir", Usage: "`DIR` of the database", Value: "/var/lib/explorerd", EnvVars: env("DATA_DIR")},
			&cli.StringFlag{Name: "database-url", Usage: "PostgreSQL `URL` (postgres://…) to keep everything in, shared by several explorerd processes, instead of bbolt in --data-dir", EnvVars: env("DATABASE_URL")},
			&cli.DurationFlag{Name: "event-retention", Usage: "how long PostgreSQL keeps events (bbolt keeps all)", Value: 30 * 24 * time.Hour, EnvVars: env("EVENT_RETENTION")},
			&cli.DurationFlag{Name: "reservation-retention", Usage: "how long an expired reservation stays readable before it is deleted", Value: 30 * 24 * time.Hour, EnvVars: env("RESERVATION_RETENTION")},
			&cli.StringFlag{Name: "log-format", Usage: "`FORMAT` of logs: json, console, or auto (console on a terminal)", Value: "auto", EnvVars: env("LOG_FORMAT")},
			&cli.StringFlag{Name: "log-level", Usage: "`LEVEL`: debug, info, warn, error", Value: "info", EnvVars: env("LOG_LEVEL")},
			&cli.DurationFlag{Name: "shutdown-timeout", Usage: "how long a graceful shutdown may take", Value: 10 * time.Second, EnvVars: env("SHUTDOWN_TIMEOUT")},
			&cli.StringFlag{Name: "tls-cert", Usage: "PEM certificate chain `FILE` to serve the API over TLS with (with --tls-key; read again on SIGHUP); empty: plain HTTP", EnvVars: env("TLS_CERT")},
			&cli.StringFlag{Name: "tls-key", Usage: "PEM private key `FILE` of --tls-cert", EnvVars: env("TLS_KEY")},
			&cli.StringFlag{Name: "metrics-listen", Usage: "`ADDR` serving Prometheus /metrics, apart from the API (e.g. 127.0.0.1:9110); empty: none", EnvVars: env("METRICS_LISTEN")},
			&cli.BoolFlag{Name: "no-ui", Usage: "do not serve the read-only pages at /ui/", EnvVars: env("NO_UI")},
			&cli.Float64Flag{Name: "key-rate", Usage: "requests a second one key (user or node) may send, sustained", Value: def.KeyRate, EnvVars: env("KEY_RATE")},
			&cli.IntFlag{Name: "key-burst", Usage: "burst of --key-rate", Value: def.KeyBurst, EnvVars: env("KEY_BURST")},
			&cli.Float64Flag{Name: "addr-rate", Usage: "requests a second one remote address (IPv4, IPv6 /64) may send, sustained", Value: def.AddrRate, EnvVars: env("ADDR_RATE")},
			&cli.IntFlag{Name: "addr-burst", Usage: "burst of --addr-rate", Value: def.AddrBurst, EnvVars: env("ADDR_BURST")},
			&cli.Float64Flag{Name: "register-rate", Usage: "new node registrations a second from one remote address, sustained", Value: def.RegisterRate, EnvVars: env("REGISTER_RATE")},
			&cli.IntFlag{Name: "register-burst", Usage: "burst of --register-rate", Value: def.RegisterBurst, EnvVars: env("REGISTER_BURST")},
			&cli.IntFlag{Name: "max-polls-per-node", Usage: "long-polls one node may hold at once", Value: def.MaxPollsPerNode, EnvVars: env("MAX_POLLS_PER_NODE")},
			&cli.IntFlag{Name: "max-reservations-per-user", Usage: "active reservations one user may have (-1: no quota)", Value: def.MaxActivePerUser, EnvVars: env("MAX_RESERVATIONS_PER_USER")},
			&cli.StringFlag{Name: "max-units-per-user", Usage: "`UNITS` one user's active reservations may hold together, priced as nodes price them: cru=CORES,mru=GiB,sru=GiB,hru=GiB (any of them; 0 or absent: unlimited), e.g. cru=64,mru=256,sru=2048; default: unlimited", EnvVars: env("MAX_UNITS_PER_USER")},
			&cli.IntFlag{Name: "max-conns-per-addr", Usage: "connections one remote address may hold open", Value: def.MaxConnsPerAddr, EnvVars: env("MAX_CONNS_PER_ADDR")},
			&cli.DurationFlag{Name: "body-timeout", Usage: "how long a request body may take to arrive", Value: def.BodyTimeout, EnvVars: env("BODY_TIMEOUT")},
			&cli.Int64Flag{Name: "memory-limit", Usage: "soft memory limit of the Go runtime in `BYTES` (0: none; GOMEMLIMIT wins)", Value: 128 << 20, EnvVars: env("MEMORY_LIMIT")},
			&cli.DurationFlag{Name: "write-timeout", Usage: "how long an answer may take to be written (after a long-poll's hold)", Value: def.WriteTimeout, EnvVars: env("WRITE_TIMEOUT")},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("unexpected argument %q (see --help)", c.Args().First())
			}
			maxUnits, err := parseMaxUnits(c.String("max-units-per-user"))
			if err != nil {
				return err
			}
			return run(c.Context, &config{
				Listen:               c.String("listen"),
				DataDir:              c.String("data-dir"),
				DatabaseURL:          c.String("database-url"),
				EventRetention:       c.Duration("event-retention"),
				ReservationRetention: c.Duration("reservation-retention"),
				LogFormat:            c.String("log-format"),
				LogLevel:             c.String("log-level"),
				ShutdownTimeout:      c.Duration("shutdown-timeout"),
				TLSCert:              c.String("tls-cert"),
				TLSKey:               c.String("tls-key"),
				MetricsListen:        c.String("metrics-listen"),
				NoUI:                 c.Bool("no-ui"),
				MemoryLimit:          c.Int64("memory-limit"),
				Limits: server.Limits{
					KeyRate:          c.Float64("key-rate"),
					KeyBurst:         c.Int("key-burst"),
					AddrRate:         c.Float64("addr-rate"),
					AddrBurst:        c.Int("addr-burst"),
					RegisterRate:     c.Float64("register-rate"),
					RegisterBurst:    c.Int("register-burst"),
					MaxPollsPerNode:  c.Int("max-polls-per-node"),
					MaxActivePerUser: c.Int("max-reservations-per-user"),
					MaxUnitsPerUser:  maxUnits,
					MaxConnsPerAddr:  c.Int("max-conns-per-addr"),
					BodyTimeout:      c.Duration("body-timeout"),
					WriteTimeout:     c.Duration("write-timeout"),
				},
			})
		},
	}
}

// parseMaxUnits reads --max-units-per-user: a quota specification
// (provision.ParseQuota) that names units only; the count of reservations
// is --max-reservations-per-user.
func parseMaxUnits(spec string) (provision.Units, error) {
	q, err := provision.ParseQuota(spec)
	if err != nil {
		return provision.Units{}, fmt.Errorf("--max-units-per-user: %w", err)
	}
	if q.Workloads != 0 {
		return provision.Units{}, errors.New("--max-units-per-user: workloads= is not a unit; the number of reservations is --max-reservations-per-user")
	}
	return q.Units, nil
}

// run serves the explorer until ctx ends, then shuts down gracefully.
func run(ctx context.Context, cfg *config) (err error) {
	out := cfg.logOut
	if out == nil {
		out = os.Stderr
	}
	log, err := newLogger(cfg.LogFormat, cfg.LogLevel, out)
	if err != nil {
		return err
	}
	if cfg.MemoryLimit > 0 && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(cfg.MemoryLimit)
	}
	var tlsCerts *certs.Reloader
	if cfg.TLSCert != "" || cfg.TLSKey != "" {
		if cfg.TLSCert == "" || cfg.TLSKey == "" {
			return errors.New("--tls-cert and --tls-key go together")
		}
		if tlsCerts, err = loadCerts(cfg.TLSCert, cfg.TLSKey); err != nil {
			return err
		}
	}
	scfg := server.Config{DataDir: cfg.DataDir, Logger: log, ShutdownTimeout: cfg.ShutdownTimeout, EventRetention: cfg.EventRetention, ReservationRetention: cfg.ReservationRetention, Limits: cfg.Limits}
	where := cfg.DataDir
	if cfg.DatabaseURL != "" {
		st, err := pgstore.Open(ctx, pgstore.Config{URL: cfg.DatabaseURL, Logger: log})
		if err != nil {
			return fmt.Errorf("opening the PostgreSQL database: %w", err)
		}
		scfg.Store, where = st, "postgresql"
	} else if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("creating data directory: %w", err)
	}
	scfg.NoUI = cfg.NoUI
	srv, err := server.New(scfg)
	if err != nil {
		if scfg.Store != nil {
			scfg.Store.Close()
		}
		return err
	}
	defer func() {
		if cerr := srv.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("closing the database: %w", cerr)
		}
	}()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.Listen, err)
	}
	scheme := "http"
	if tlsCerts != nil {
		ln, scheme = tls.NewListener(ln, tlsCerts.ServerConfig()), "https"
	}
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel below: the goroutines end with ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// SIGHUP is caught before the API is served: uncaught, it would end
	// the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	wg.Go(func() { reloadOnHangup(ctx, hup, tlsCerts, log) })
	if cfg.MetricsListen != "" {
		mln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("metrics listener: %w", err)
		}
		log.Info().Str("addr", mln.Addr().String()).Msg("serving metrics")
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", srv.Metrics())
		wg.Go(func() {
			if err := httpserve.Serve(ctx, mln, mux); err != nil {
				log.Error().Err(err).Msg("serving metrics failed")
			}
		})
	}
	log.Info().Str("listen", ln.Addr().String()).Str("scheme", scheme).Str("database", where).Str("version", version.String()).Msg("explorerd serving")
	if cfg.onListen != nil {
		cfg.onListen(ln.Addr())
	}
	if err := systemd.Ready(); err != nil {
		log.Warn().Err(err).Msg("sd_notify failed")
	}
	err = srv.Serve(ctx, ln)
	cancel()
	systemd.Stopping()
	if err != nil {
		return err
	}
	log.Info().Msg("explorerd stopped")
	return nil
}

// newLogger builds the root logger: JSON, or console when asked or when the
// output is a terminal and the format is auto.
func newLogger(format, level string, w io.Writer) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		return zerolog.Nop(), fmt.Errorf("--log-level %q: %w", level, err)
	}
	console := zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339}
	var out io.Writer
	switch format {
	case "json":
		out = w
	case "console":
		out = console
	case "auto":
		out = w
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			out = console
		}
	default:
		return zerolog.Nop(), fmt.Errorf("--log-format %q: want json, console or auto", format)
	}
	return zerolog.New(out).Level(lvl).With().Timestamp().Logger(), nil
}

// loadCerts reads the served certificate and key, naming the flags when
// they do not load.
func loadCerts(certFile, keyFile string) (*certs.Reloader, error) {
	r, err := certs.NewReloader(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	return r, nil
}

// reloadOnHangup reads the TLS certificate and key again at each SIGHUP
// received on hup until ctx ends; a pair that does not load is logged and the served one
// stays. Without TLS, SIGHUP is logged and ignored (it would otherwise end
// the process).
func reloadOnHangup(ctx context.Context, hup <-chan os.Signal, r *certs.Reloader, log zerolog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		if r == nil {
			log.Info().Msg("SIGHUP: no TLS certificate to reload")
			continue
		}
		if err := r.Reload(); err != nil {
			log.Error().Err(err).Str("serving_serial", r.Leaf().SerialNumber.String()).Msg("reloading the TLS certificate failed; the served one stays")
			continue
		}
		leaf := r.Leaf()
		log.Info().Str("serial", leaf.SerialNumber.String()).Time("not_after", leaf.NotAfter).Msg("TLS certificate reloaded")
	}
}
