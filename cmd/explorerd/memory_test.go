package main

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/provision"
)

// maxHWM is the peak resident memory explorerd may reach under the
// issue's attacks.
const maxHWM = 256 << 20

// TestMemoryUnderAttack builds explorerd, runs it as its own process on
// 127.0.0.1 and floods it the ways the attacker did: 16 batches of
// 4 MiB at once, again and again, from 16 addresses (about a million
// entries each: 2.36 GB before); 300 signed requests whose bodies dribble
// in; and the whole list of one user's 3,000 reservations of 16 KiB
// (182 MB in one answer, 1.15 GB resident before), read by four readers
// at once. Its peak resident set (VmHWM of /proc/PID/status) must stay
// below 256 MB, and it must still answer.
func TestMemoryUnderAttack(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and floods a real explorerd (about a minute)")
	}
	bin := filepath.Join(t.TempDir(), "explorerd")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building explorerd: %v\n%s", err, out)
	}
	// The user's key may send fast (its 3,000 reservations are the
	// setup, not the attack) and has no quota: the list is the attack.
	cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--log-format", "json", "--log-level", "info",
		"--key-rate", "100000", "--key-burst", "100000", "--max-reservations-per-user", "-1", "--body-timeout", "5s")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line struct {
				Level  string `json:"level"`
				Listen string `json:"listen"`
			}
			switch json.Unmarshal(sc.Bytes(), &line); {
			case line.Listen != "":
				addrc <- line.Listen
			case line.Level != "info" && line.Level != "debug":
				t.Logf("explorerd: %s", sc.Bytes())
			}
		}
	}()
	var base string
	select {
	case a := <-addrc:
		base = "http://" + a
	case <-time.After(30 * time.Second):
		t.Fatal("explorerd did not say where it listens")
	}
	pid := cmd.Process.Pid
	t.Logf("explorerd %d on %s: VmHWM %d MB after start", pid, base, hwm(t, pid)>>20)

	node, user := explorertest.NewKey(t), explorertest.NewKey(t)
	nodeID := explorertest.NodeID(node)
	opts := explorertest.ClientOptions()
	opts.MaxAttempts, opts.MaxBackoff = 20, 2*time.Second // the setup runs into the address's rate: it waits
	if err := explorer.NewClient(base, node, opts).Register(t.Context()); err != nil {
		t.Fatal(err)
	}
	uc := explorer.NewUserClient(base, user, opts)

	// Setup: 3,000 reservations of 16 KiB of data.
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	const total = 3000
	blob := json.RawMessage(strconv.Quote(strings.Repeat("x", 16<<10)))
	for range 8 {
		wg.Go(func() {
			for i := next.Add(1); i <= total; i = next.Add(1) {
				r := &provision.Reservation{NodeID: nodeID, Type: "blob", Data: blob, Created: time.Now().UTC(), Duration: time.Hour, Reference: strconv.FormatInt(i, 10)}
				r.Sign(user)
				if _, err := uc.CreateReservation(t.Context(), r); err != nil {
					t.Errorf("reservation %d: %v", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	t.Logf("%d reservations of 16 KiB made in %v: VmHWM %d MB", total, time.Since(start).Round(time.Millisecond), hwm(t, pid)>>20)

	// The attacks, all at once, for 10 s.
	stop := make(chan struct{})
	time.AfterFunc(10*time.Second, func() { close(stop) })
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	var batches, batchRefused, listed, pages, slow, anonPeak atomic.Int64
	wg.Go(func() { // the anonymous part of the resident set, sampled
		for !stopped() {
			anonPeak.Store(max(anonPeak.Load(), statusKB(pid, "RssAnon:")<<10))
			time.Sleep(20 * time.Millisecond)
		}
	})
	batch := hugeBatch()
	for w := range 16 {
		hc := &http.Client{Transport: fromAddr(fmt.Sprintf("127.0.0.%d", 10+w)), Timeout: time.Minute}
		wg.Go(func() {
			for !stopped() {
				req, _ := http.NewRequest(http.MethodPost, base+"/api/v1/nodes/"+nodeID+"/results", bytes.NewReader(batch))
				if err := explorer.SignRequest(req, node, nodeID, batch, time.Now()); err != nil {
					t.Error(err)
					return
				}
				resp, err := hc.Do(req)
				batches.Add(1)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						batchRefused.Add(1)
					}
				}
			}
		})
	}
	for range 300 {
		wg.Go(func() {
			if slowBody(base, user) {
				slow.Add(1)
			}
		})
	}
	for range 4 {
		wg.Go(func() {
			for !stopped() {
				cursor := ""
				for n := 0; ; n++ {
					page, err := uc.ListReservationsPage(t.Context(), "", cursor, 500)
					if err != nil {
						t.Errorf("listing page %d: %v", n, err)
						return
					}
					pages.Add(1)
					listed.Add(int64(len(page.Reservations)))
					if cursor = page.Next; cursor == "" {
						break
					}
				}
			}
		})
	}
	wg.Wait()
	peak := hwm(t, pid)
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if strings.HasPrefix(line, "Rss") || strings.HasPrefix(line, "VmRSS") {
				t.Logf("after the attack: %s", strings.Join(strings.Fields(line), " "))
			}
		}
	}
	t.Logf("under attack: %d batches of 4 MiB (%d refused), %d of 300 slow bodies ended by the server, %d reservations listed in %d pages: VmHWM %d MB, RssAnon at most %d MB (sampled)",
		batches.Load(), batchRefused.Load(), slow.Load(), listed.Load(), pages.Load(), peak>>20, anonPeak.Load()>>20)
	if _, err := uc.ListReservationsPage(t.Context(), "", "", 1); err != nil {
		t.Fatalf("explorerd does not answer after the attack: %v", err)
	}
	if listed.Load() < total {
		t.Fatalf("only %d reservations listed: the big list was never read whole", listed.Load())
	}
	if peak >= maxHWM {
		t.Fatalf("VmHWM %d MB, want below %d MB", peak>>20, maxHWM>>20)
	}
}

// hwm returns the VmHWM of process pid, in bytes.
func hwm(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/PID/status")
	return 0
}

// statusKB returns a "kB" field of /proc/PID/status, 0 when unreadable.
func statusKB(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb
		}
	}
	return 0
}

// fromAddr returns a transport whose connections come from ip, one of
// the loopback addresses.
func fromAddr(ip string) *http.Transport {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = d.DialContext
	return tr
}

// hugeBatch is a 4 MiB batch of about a million empty results.
func hugeBatch() []byte {
	var b bytes.Buffer
	b.WriteString(`{"results":[{}`)
	for b.Len() < explorer.MaxBatchBodySize-len(`,{}]}`) {
		b.WriteString(`,{}`)
	}
	b.WriteString(`]}`)
	return b.Bytes()
}

// slowBody sends, from 127.0.0.3, a request with good signature headers
// whose 100 KiB body comes one byte every 50 ms, and reports whether the
// server ended it (an answer or a close) before the body could have
// arrived.
func slowBody(base string, key ed25519.PrivateKey) bool {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.3")}}
	conn, err := d.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		return false
	}
	defer conn.Close()
	req, _ := http.NewRequest(http.MethodPost, base+"/api/v1/reservations", nil)
	if err := explorer.SignRequest(req, key, explorertest.UserID(key), []byte("{}"), time.Now()); err != nil {
		return false
	}
	fmt.Fprintf(conn, "POST /api/v1/reservations HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n", 100<<10)
	for _, h := range []string{explorer.HeaderKey, explorer.HeaderTimestamp, explorer.HeaderNonce, explorer.HeaderSignature} {
		fmt.Fprintf(conn, "%s: %s\r\n", h, req.Header.Get(h))
	}
	fmt.Fprintf(conn, "\r\n")
	ended := make(chan struct{})
	go func() {
		io.Copy(io.Discard, conn)
		close(ended)
	}()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case <-ended:
			return true
		case <-deadline:
			return false
		case <-time.After(50 * time.Millisecond):
			conn.Write([]byte(" "))
		}
	}
}
