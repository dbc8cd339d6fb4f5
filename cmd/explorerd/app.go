package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/explorer/server/pgstore"
	"github.com/edgeprov/provisiond/internal/version"
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

	logOut   io.Writer      // default os.Stderr
	onListen func(net.Addr) // tests learn the address
}

func newApp() *cli.App {
	env := func(name string) []string { return []string{"EXPLORERD_" + name} }
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
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("unexpected argument %q (see --help)", c.Args().First())
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
			})
		},
	}
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
	scfg := server.Config{DataDir: cfg.DataDir, Logger: log, ShutdownTimeout: cfg.ShutdownTimeout, EventRetention: cfg.EventRetention, ReservationRetention: cfg.ReservationRetention}
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
	log.Info().Str("listen", ln.Addr().String()).Str("database", where).Str("version", version.String()).Msg("explorerd serving")
	if cfg.onListen != nil {
		cfg.onListen(ln.Addr())
	}
	if err := systemd.Ready(); err != nil {
		log.Warn().Err(err).Msg("sd_notify failed")
	}
	err = srv.Serve(ctx, ln)
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
