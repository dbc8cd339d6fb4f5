package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"syscall"
	"time"

	"github.com/edgeprov/provisiond/provision"
)

// Client reads a running daemon through its admin socket.
type Client struct {
	path string
	http *http.Client
}

var _ Reader = (*Client)(nil)

// Dial returns a Client for the socket at path, or an error wrapping
// ErrNoDaemon when no daemon listens there.
func Dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w on %s", ErrNoDaemon, path)
		}
		return nil, fmt.Errorf("connecting to admin socket %s: %w", path, err)
	}
	conn.Close()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return d.DialContext(ctx, "unix", path)
	}}
	return &Client{path: path, http: &http.Client{Transport: tr, Timeout: 5 * time.Minute}}, nil
}

func (c *Client) get(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://provisiond"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin request %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var e struct{ Error string }
		_ = json.NewDecoder(resp.Body).Decode(&e)
		if resp.StatusCode == http.StatusNotFound {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, e.Error)
		}
		return nil, fmt.Errorf("admin request %s: %s: %s", path, resp.Status, e.Error)
	}
	return resp, nil
}

func (c *Client) getJSON(ctx context.Context, path string, v any) error {
	resp, err := c.get(ctx, path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("decoding admin reply %s: %w", path, err)
	}
	return nil
}

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var s Status
	return &s, c.getJSON(ctx, "/v1/status", &s)
}

// Stats returns the daemon's stats.
func (c *Client) Stats(ctx context.Context) (*Stats, error) {
	var s Stats
	return &s, c.getJSON(ctx, "/v1/stats", &s)
}

// Record returns one record, or an error wrapping ErrNotFound.
func (c *Client) Record(ctx context.Context, id string) (*provision.Record, error) {
	var r provision.Record
	return &r, c.getJSON(ctx, "/v1/records/"+url.PathEscape(id), &r)
}

// Records calls fn for every record that passes f.
func (c *Client) Records(ctx context.Context, f Filter, fn func(*provision.Record) error) error {
	q := url.Values{}
	if f.State != "" {
		q.Set("state", string(f.State))
	}
	if f.Type != "" {
		q.Set("type", string(f.Type))
	}
	if f.User != "" {
		q.Set("user", f.User)
	}
	resp, err := c.get(ctx, "/v1/records?"+q.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		var line struct {
			provision.Record
			Error string `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return fmt.Errorf("decoding admin record: %w", err)
		}
		if line.Error != "" {
			return fmt.Errorf("daemon: listing records: %s", line.Error)
		}
		if err := fn(&line.Record); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading admin records: %w", err)
	}
	return nil
}
