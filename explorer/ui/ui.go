// Package ui serves the explorer's read-only pages at /ui/: the fleet
// (nodes with their status, capacity bars and versions), a node (its
// workloads by type and state, its results over time) and a reservation
// (its history and verified result). Pages are rendered on the server with
// html/template, with no script at all (the Content-Security-Policy
// forbids any); each has a JSON twin, the same URL with ?format=json,
// which encodes the page's view model (see Source).
//
// The explorer computes the view models (explorer/server implements
// Source); this package only renders them and limits how often one client
// may ask.
package ui

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"math"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/edgeprov/provisiond/provision"
)

//go:embed templates/*.html templates/style.css templates/favicon.svg
var files embed.FS

// Options configures a Handler.
type Options struct {
	// Rate is how many pages one client address may ask per second
	// (default 10), with bursts of Burst (default 30); more are answered
	// 429.
	Rate  rate.Limit
	Burst int
	// MaxClients bounds the client addresses whose rates are remembered
	// (default 4096); when full, all are forgotten at once.
	MaxClients int
	// Logger receives the pages' failures (default: none).
	Logger zerolog.Logger
}

// Handler serves the pages below /ui/.
type Handler struct {
	src  Source
	opts Options
	log  zerolog.Logger
	mux  *http.ServeMux
	tmpl map[string]*template.Template
	css  []byte
	icon []byte

	mu      sync.Mutex
	clients map[string]*rate.Limiter
}

// New returns the pages' handler, reading what they show from src.
func New(src Source, opts Options) *Handler {
	if opts.Rate <= 0 {
		opts.Rate = 10
	}
	if opts.Burst <= 0 {
		opts.Burst = 30
	}
	if opts.MaxClients <= 0 {
		opts.MaxClients = 4096
	}
	h := &Handler{src: src, opts: opts, log: opts.Logger.With().Str("component", "ui").Logger(),
		mux: http.NewServeMux(), tmpl: map[string]*template.Template{}, clients: map[string]*rate.Limiter{}}
	css, err := files.ReadFile("templates/style.css")
	if err != nil {
		panic(fmt.Sprintf("ui: embedded style: %v", err)) // a build defect
	}
	h.css = css
	if h.icon, err = files.ReadFile("templates/favicon.svg"); err != nil {
		panic(fmt.Sprintf("ui: embedded icon: %v", err))
	}
	for _, page := range []string{"fleet", "node", "reservation", "error"} {
		h.tmpl[page] = template.Must(template.New("layout.html").Funcs(funcs).ParseFS(files, "templates/layout.html", "templates/"+page+".html"))
	}
	h.mux.HandleFunc("GET /ui/{$}", h.fleet)
	h.mux.HandleFunc("GET /ui/nodes/{node}", h.node)
	h.mux.HandleFunc("GET /ui/reservations/{id}", h.reservation)
	h.mux.HandleFunc("GET /ui/style.css", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
		w.Header().Set("Cache-Control", "max-age=300")
		w.Write(h.css)
	})
	h.mux.HandleFunc("GET /ui/favicon.svg", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "image/svg+xml")
		w.Header().Set("Cache-Control", "max-age=86400")
		w.Write(h.icon)
	})
	h.mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		h.fail(w, r, http.StatusNotFound, "no page "+r.URL.Path)
	})
	return h
}

// ServeHTTP serves a page, after the client's rate limit.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	if !h.allow(r) {
		hd.Set("Retry-After", "1")
		h.fail(w, r, http.StatusTooManyRequests, "too many requests from your address; try again in a second")
		return
	}
	h.mux.ServeHTTP(w, r)
}

// allow spends one token of the client address's limiter.
func (h *Handler) allow(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	l := h.clients[host]
	if l == nil {
		if len(h.clients) >= h.opts.MaxClients {
			clear(h.clients)
		}
		l = rate.NewLimiter(h.opts.Rate, h.opts.Burst)
		h.clients[host] = l
	}
	return l.Allow()
}

// wantsJSON reports whether the request asks for the page's JSON twin.
func wantsJSON(r *http.Request) bool { return r.URL.Query().Get("format") == "json" }

// render answers the page's view model v: as JSON or through template page.
func (h *Handler) render(w http.ResponseWriter, r *http.Request, page string, v any) {
	if wantsJSON(r) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(v)
		return
	}
	var buf bytes.Buffer
	if err := h.tmpl[page].Execute(&buf, v); err != nil {
		h.log.Error().Err(err).Str("page", page).Msg("rendering a page failed")
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(buf.Bytes())
}

// errorPage is the view model of an error page.
type errorPage struct {
	Status  int    `json:"status"`
	Message string `json:"error"`
}

// fail answers an error page (or its JSON) with status.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	if wantsJSON(r) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(errorPage{Status: status, Message: msg})
		return
	}
	var buf bytes.Buffer
	if err := h.tmpl["error"].Execute(&buf, errorPage{Status: status, Message: msg}); err != nil {
		http.Error(w, msg, status)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// failErr answers err: 404 for ErrNotFound, else 500 (logged).
func (h *Handler) failErr(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, ErrNotFound) {
		h.fail(w, r, http.StatusNotFound, err.Error())
		return
	}
	if r.Context().Err() != nil {
		return
	}
	h.log.Error().Err(err).Str("path", r.URL.Path).Msg("reading a page's data failed")
	h.fail(w, r, http.StatusInternalServerError, "internal error")
}

func (h *Handler) fleet(w http.ResponseWriter, r *http.Request) {
	after := r.URL.Query().Get("after")
	if len(after) > 128 {
		h.fail(w, r, http.StatusBadRequest, "after is longer than a node ID")
		return
	}
	p, err := h.src.Fleet(r.Context(), after)
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	h.render(w, r, "fleet", p)
}

func (h *Handler) node(w http.ResponseWriter, r *http.Request) {
	p, err := h.src.Node(r.Context(), r.PathValue("node"))
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	h.render(w, r, "node", p)
}

func (h *Handler) reservation(w http.ResponseWriter, r *http.Request) {
	p, err := h.src.Reservation(r.Context(), r.PathValue("id"))
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	h.render(w, r, "reservation", p)
}

// barWidth is the width of a capacity bar in SVG units.
const barWidth = 110

// bar is the geometry of a capacity bar: system reserve, reserved and
// free, left to right, in proportion to the total.
type bar struct {
	SysW, ResX, ResW, FreeX, FreeW float64
	Width                          int
	Fig                            UnitFigures
}

var funcs = template.FuncMap{
	"bar": func(f UnitFigures) bar {
		b := bar{Width: barWidth, Fig: f}
		if f.Total <= 0 {
			return b
		}
		scale := barWidth / f.Total
		b.SysW = math.Min(f.System*scale, barWidth)
		b.ResX = b.SysW
		b.ResW = math.Min(f.Reserved*scale, barWidth-b.ResX)
		b.FreeX = b.ResX + b.ResW
		b.FreeW = math.Max(barWidth-b.FreeX, 0)
		return b
	},
	"num": func(v float64) string {
		if v == math.Trunc(v) {
			return fmt.Sprintf("%.0f", v)
		}
		return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.2f", v), "0"), ".")
	},
	"when": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05.000 UTC") },
	"whenp": func(t *time.Time) string {
		if t == nil {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05.000 UTC")
	},
	"ago": func(t, asOf time.Time) string {
		if t.IsZero() {
			return "never"
		}
		d := asOf.Sub(t).Round(time.Second)
		if d < time.Second {
			return "just now"
		}
		return d.String() + " ago"
	},
	"short": func(s string) string {
		if len(s) <= 12 {
			return s
		}
		return s[:6] + "…" + s[len(s)-4:]
	},
	"workloads": func(m map[provision.ReservationType]uint64) string {
		if len(m) == 0 {
			return "—"
		}
		types := make([]provision.ReservationType, 0, len(m))
		for t := range m {
			types = append(types, t)
		}
		slices.Sort(types)
		parts := make([]string, 0, len(types))
		for _, t := range types {
			n, name := m[t], string(t)
			if n != 1 {
				name += "s"
			}
			parts = append(parts, fmt.Sprintf("%d %s", n, name))
		}
		return strings.Join(parts, ", ")
	},
	"timeline": timeline,
	"json": func(raw []byte) string {
		var buf bytes.Buffer
		if json.Indent(&buf, raw, "", "  ") != nil {
			return string(raw)
		}
		return buf.String()
	},
}

// timelineWidth and timelineHeight are the SVG size of a node's results
// over time.
const (
	timelineWidth  = 720
	timelineHeight = 90
)

// dot is one result on the timeline.
type dot struct {
	X, Y  float64
	State string
	Title string
}

// timelineView is the geometry of a node's results over time.
type timelineView struct {
	Width, Height int
	Dots          []dot
	From, To      string
	Rows          []row
}

type row struct {
	Y     float64
	State string
}

// timeline places results on a time axis from the first to AsOf, one row
// per state.
func timeline(results []ResultPoint, asOf time.Time) timelineView {
	v := timelineView{Width: timelineWidth, Height: timelineHeight}
	states := []provision.ResultState{provision.StateOk, provision.StateError, provision.StateDeleted}
	rowY := map[provision.ResultState]float64{}
	for i, s := range states {
		y := 18 + float64(i)*26
		rowY[s] = y
		v.Rows = append(v.Rows, row{Y: y, State: string(s)})
	}
	if len(results) == 0 {
		return v
	}
	from, to := results[0].At, asOf
	for _, p := range results {
		if p.At.Before(from) {
			from = p.At
		}
		if p.At.After(to) {
			to = p.At
		}
	}
	span := to.Sub(from).Seconds()
	const left, right = 70.0, 14.0
	for _, p := range results {
		x := left
		if span > 0 {
			x += (timelineWidth - left - right) * p.At.Sub(from).Seconds() / span
		}
		y, ok := rowY[p.State]
		if !ok {
			continue
		}
		v.Dots = append(v.Dots, dot{X: x, Y: y, State: string(p.State), Title: fmt.Sprintf("%s %s at %s", p.ID, p.State, p.At.UTC().Format(time.RFC3339))})
	}
	v.From, v.To = from.UTC().Format("2006-01-02 15:04:05"), to.UTC().Format("2006-01-02 15:04:05")
	return v
}
