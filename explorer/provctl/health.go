package provctl

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/edgeprov/provisiond/provision"
)

// healthFlags are the flags of `reserve container` that name its health
// check and restart policy.
func healthFlags() []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "health-tcp", Usage: "ready and healthy while TCP `PORT` of the container accepts connections"},
		&cli.StringFlag{Name: "health-http", Usage: "ready and healthy while `PORT/PATH` answers an HTTP GET with 2xx or 3xx (e.g. 8080/healthz)"},
		&cli.StringFlag{Name: "health-cmd", Usage: "ready and healthy while `COMMAND` run inside the container exits 0 (split into words as a shell would; no shell runs it)"},
		&cli.DurationFlag{Name: "health-interval", Usage: "time between checks (whole seconds)", Value: provision.DefaultHealthInterval * time.Second},
		&cli.DurationFlag{Name: "health-timeout", Usage: "time one check may take (whole seconds)", Value: provision.DefaultHealthTimeout * time.Second},
		&cli.IntFlag{Name: "health-failures", Usage: "checks in a row that must fail for the container to be unhealthy (and restarted by its policy)", Value: provision.DefaultHealthFailures},
		&cli.DurationFlag{Name: "health-start-period", Usage: "time a (re)started container has for its first check to pass (whole seconds; the first start fails with a signed error after it)", Value: provision.DefaultHealthStartPeriod * time.Second},
		&cli.StringFlag{Name: "restart", Usage: "restart `POLICY` of the container once it stopped or was unhealthy: always, on-failure (a non-zero exit) or never; backoff 10 s doubling to 5 min", Value: string(provision.RestartAlways)},
	}
}

// healthFromFlags reads the health check of the flags: nil when none is
// named.
func healthFromFlags(c *cli.Context) (*provision.HealthCheck, error) {
	h := &provision.HealthCheck{TCPPort: c.Int("health-tcp")}
	if v := c.String("health-http"); v != "" {
		port, path, ok := strings.Cut(v, "/")
		n, err := strconv.Atoi(port)
		if !ok || err != nil {
			return nil, fmt.Errorf("%w: --health-http %q: want PORT/PATH", ErrUsage, v)
		}
		h.HTTPPort, h.HTTPPath = n, "/"+path
	}
	if v := c.String("health-cmd"); v != "" {
		words, err := splitWords(v)
		if err != nil {
			return nil, fmt.Errorf("%w: --health-cmd: %w", ErrUsage, err)
		}
		h.Exec = words
	}
	if h.TCPPort == 0 && h.HTTPPort == 0 && len(h.Exec) == 0 {
		for _, f := range []string{"health-interval", "health-timeout", "health-failures", "health-start-period"} {
			if c.IsSet(f) {
				return nil, fmt.Errorf("%w: --%s without --health-tcp, --health-http or --health-cmd", ErrUsage, f)
			}
		}
		return nil, nil
	}
	var err error
	secs := func(flag string) int {
		d := c.Duration(flag)
		if d%time.Second != 0 && err == nil {
			err = fmt.Errorf("%w: --%s %s is not a whole number of seconds", ErrUsage, flag, d)
		}
		return int(d / time.Second)
	}
	h.Interval, h.Timeout, h.StartPeriod = secs("health-interval"), secs("health-timeout"), secs("health-start-period")
	h.Failures = c.Int("health-failures")
	if err != nil {
		return nil, err
	}
	if err := h.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	return h, nil
}

// splitWords splits s into words as a POSIX shell would without
// expansions: blanks separate words, single quotes keep everything,
// double quotes keep everything but \" and \\, a backslash outside quotes
// keeps the next character.
func splitWords(s string) ([]string, error) {
	var words []string
	var w strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		case c == '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return nil, fmt.Errorf("unterminated ' in %q", s)
			}
			w.WriteString(s[i+1 : i+1+end])
			i += end + 1
			inWord = true
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && (s[i+1] == '"' || s[i+1] == '\\') {
					i++
				}
				w.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, fmt.Errorf("unterminated \" in %q", s)
			}
			inWord = true
		case c == '\\':
			if i+1 >= len(s) {
				return nil, fmt.Errorf("trailing \\ in %q", s)
			}
			i++
			w.WriteByte(s[i])
			inWord = true
		default:
			w.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	if len(words) == 0 {
		return nil, fmt.Errorf("no command in %q", s)
	}
	return words, nil
}

// containerStatus reads the status an ok result of a container reports
// (the node signs a new result when it changes): "running, healthy, 2
// restarts, last exit: exited (code 3) at …"; "" when it reports none.
func containerStatus(typ provision.ReservationType, res *provision.Result) string {
	if typ != provision.ContainerReservation || res.State != provision.StateOk || len(res.Data) == 0 {
		return ""
	}
	var st struct {
		State    string `json:"state"`
		Health   string `json:"health"`
		Restarts int    `json:"restarts"`
		LastExit *struct {
			Code   int       `json:"code"`
			At     time.Time `json:"at"`
			Reason string    `json:"reason"`
		} `json:"last_exit"`
	}
	if json.Unmarshal(res.Data, &st) != nil || st.State == "" {
		return ""
	}
	parts := []string{st.State}
	if st.Health != "" {
		parts = append(parts, st.Health)
	}
	parts = append(parts, fmt.Sprintf("%d restarts", st.Restarts))
	if e := st.LastExit; e != nil {
		code := strconv.Itoa(e.Code)
		if e.Code < 0 {
			code = "unknown"
		}
		parts = append(parts, fmt.Sprintf("last exit: %s (code %s) at %s", e.Reason, code, e.At.UTC().Format(time.RFC3339)))
	}
	return strings.Join(parts, ", ")
}
