// Package harness runs provisiond's real binaries for end-to-end and
// reliability tests: it builds explorerd, provisiond and provctl once per
// test binary, starts, stops, kills and restarts them on 127.0.0.1 with
// state under the test's temporary directory, and drives provctl as a
// user would.
package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/provision"
)

// builds holds the binaries built one way: with -race (the default of
// every process the harness starts), or as `make build` builds them (for
// resource measurements).
type builds struct {
	flags []string // go build flags
	env   []string // added to the environment of go build
	once  sync.Once
	dir   string
	err   error
}

var (
	build      = builds{flags: []string{"-race"}}
	plainBuild = builds{flags: []string{"-trimpath"}, env: []string{"CGO_ENABLED=0"}} // as the Makefile's build
)

// Main runs the tests of a package that uses the harness and removes the
// binaries it built. Call it from TestMain.
func Main(m interface{ Run() int }) {
	code := m.Run()
	for _, b := range []*builds{&build, &plainBuild} {
		if b.dir != "" {
			os.RemoveAll(b.dir)
		}
	}
	os.Exit(code)
}

// moduleRoot finds the directory of go.mod above this source file.
func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Bin returns the path of a built binary (explorerd, provisiond, provctl),
// building all three on first use.
func Bin(t testing.TB, name string) string {
	t.Helper()
	return build.bin(t, name)
}

// PlainBin is Bin for binaries built as `make build` builds them (no
// -race, static, -trimpath), as an operator runs them: for measurements
// of memory and CPU, which the race detector inflates several times.
func PlainBin(t testing.TB, name string) string {
	t.Helper()
	return plainBuild.bin(t, name)
}

func (b *builds) bin(t testing.TB, name string) string {
	t.Helper()
	b.once.Do(func() {
		b.dir, b.err = os.MkdirTemp("", "provisiond-harness-")
		if b.err != nil {
			return
		}
		args := append(append([]string{"build"}, b.flags...), "-o", b.dir+"/", "./cmd/explorerd", "./cmd/provisiond", "./cmd/provctl")
		cmd := exec.Command("go", args...)
		cmd.Dir = moduleRoot()
		cmd.Env = append(os.Environ(), b.env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("building binaries: %v\n%s", err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return filepath.Join(b.dir, name)
}

// FreeAddr returns a free 127.0.0.1 port (nothing listens on it once it
// returns).
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Process is a started binary.
type Process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan error
}

// StartProcess starts path with args, its output appended to logPath, and
// GORACE=halt_on_error=1 added to the environment; name names it in
// errors.
func StartProcess(t testing.TB, name, logPath, path string, args ...string) *Process {
	t.Helper()
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), "GORACE=halt_on_error=1")
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	p := &Process{name: name, cmd: cmd, log: logPath, done: make(chan error, 1)}
	go func() {
		p.done <- cmd.Wait()
		f.Close()
	}()
	return p
}

// Exited reports whether the process exited.
func (p *Process) Exited() bool {
	select {
	case err := <-p.done:
		p.done <- err
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM and waits up to a minute for a clean exit; it fails
// the test when the process exits with an error or must be killed.
func (p *Process) Stop(t testing.TB) {
	t.Helper()
	if p == nil || p.Exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Errorf("%s exited with %v; log %s:\n%s", p.name, err, p.log, tail(p.log))
		}
	case <-time.After(time.Minute):
		p.Kill()
		t.Errorf("%s did not stop within a minute of SIGTERM; log:\n%s", p.name, tail(p.log))
	}
}

// Kill sends SIGKILL and waits for the process to be gone.
func (p *Process) Kill() {
	if p == nil || p.Exited() {
		return
	}
	_ = p.cmd.Process.Kill()
	err := <-p.done
	p.done <- err
}

// Log returns the process's log so far.
func (p *Process) Log() string { return tail(p.log) }

// PID returns the process ID.
func (p *Process) PID() int { return p.cmd.Process.Pid }

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	return string(b)
}

// Explorer is an explorerd on 127.0.0.1 with its data under Dir.
type Explorer struct {
	Dir  string
	Addr string
	// Plain runs explorerd built without -race (PlainBin), for
	// measurements. Default false: the -race build.
	Plain bool
	proc  *Process
}

// StartExplorer starts explorerd with a fresh data directory and stops it
// when the test ends.
func StartExplorer(t testing.TB) *Explorer {
	t.Helper()
	e := &Explorer{Dir: t.TempDir(), Addr: FreeAddr(t)}
	e.Start(t)
	t.Cleanup(func() { e.proc.Stop(t) })
	return e
}

// StartPlainExplorer is StartExplorer with explorerd built as `make
// build` builds it (no -race): for measurements.
func StartPlainExplorer(t testing.TB) *Explorer {
	t.Helper()
	e := &Explorer{Dir: t.TempDir(), Addr: FreeAddr(t), Plain: true}
	e.Start(t)
	t.Cleanup(func() { e.proc.Stop(t) })
	return e
}

// URL is the explorer's base URL.
func (e *Explorer) URL() string { return "http://" + e.Addr }

// Start (re)starts explorerd on the same address and data directory and
// waits until it accepts connections.
func (e *Explorer) Start(t testing.TB) {
	t.Helper()
	bin := Bin(t, "explorerd")
	if e.Plain {
		bin = PlainBin(t, "explorerd")
	}
	e.proc = StartProcess(t, "explorerd", filepath.Join(e.Dir, "explorerd.log"), bin,
		"--listen", e.Addr, "--data-dir", filepath.Join(e.Dir, "data"), "--log-format", "json")
	Eventually(t, 30*time.Second, "explorerd listening", func() error {
		c, err := net.DialTimeout("tcp", e.Addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// Stop stops explorerd with SIGTERM.
func (e *Explorer) Stop(t testing.TB) { t.Helper(); e.proc.Stop(t) }

// Kill stops explorerd with SIGKILL.
func (e *Explorer) Kill() { e.proc.Kill() }

// Node is a provisiond with its data under Dir.
type Node struct {
	Dir      string
	Explorer string
	Metrics  string
	Args     []string
	opts     NodeOptions
	proc     *Process
}

// NodeOptions change how StartNodeWith runs provisiond.
type NodeOptions struct {
	// Args are appended to `provisiond run`; a flag given here overrides
	// the harness's own (--poll-wait 2s, --resync 5s, --local-images
	// LocalImages(), --container-restart-backoff 1s and -max 4s). Default
	// none.
	Args []string
	// Plain runs provisiond built without -race (PlainBin). Default false:
	// the -race build.
	Plain bool
	// PrivateNetns runs provisiond in a mount namespace of its own with a
	// private, empty /run/netns: it sees (and its orphan cleanup removes)
	// only the network namespaces it made, other daemons on the host
	// cannot see or remove them, and the kernel frees them all when it
	// exits. Default false: the host's /run/netns.
	PrivateNetns bool
}

// privateNetns is the shell run by unshare(1) for PrivateNetns: it covers
// /run/netns with a fresh tmpfs, then becomes provisiond ("$0").
const privateNetns = `mkdir -p /run/netns && mount -t tmpfs -o mode=0755 provisiond-netns /run/netns && exec "$0" "$@"`

// StartNode starts provisiond against explorer with a fresh data
// directory and stops it when the test ends.
func StartNode(t testing.TB, explorer string, args ...string) *Node {
	t.Helper()
	n := &Node{Dir: t.TempDir(), Explorer: explorer, Metrics: FreeAddr(t), Args: args}
	n.Start(t)
	t.Cleanup(func() { n.proc.Stop(t) })
	return n
}

// StartNodeWith is StartNode with options.
func StartNodeWith(t testing.TB, explorer string, opts NodeOptions) *Node {
	t.Helper()
	n := &Node{Dir: t.TempDir(), Explorer: explorer, Metrics: FreeAddr(t), Args: opts.Args, opts: opts}
	n.Start(t)
	t.Cleanup(func() { n.proc.Stop(t) })
	return n
}

// Socket is the node's admin socket.
func (n *Node) Socket() string { return filepath.Join(n.Dir, "provisiond.sock") }

func (n *Node) global() []string {
	return []string{"--config", os.DevNull, "--data-dir", filepath.Join(n.Dir, "data"), "--socket", n.Socket()}
}

// LocalImages is the directory the harness's nodes serve local container
// images from (--local-images): the system's temporary directory, which
// holds every t.TempDir(), so images tests write there (fixture.Busybox)
// can be reserved by path. It holds the nodes' data directories too,
// which a real node must not serve; test nodes keep no secrets.
func LocalImages() string { return os.TempDir() }

// Start (re)starts provisiond and waits until its admin socket answers.
func (n *Node) Start(t testing.TB) {
	t.Helper()
	// The containers' root filesystems are mounted below the node's
	// directory (so the tests' checks and reboots see them), which must
	// then be searchable by others: runc mounts a root filesystem from
	// inside the container's user namespace.
	for _, d := range []string{filepath.Dir(n.Dir), n.Dir} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	args := append(n.global(), "--log-format", "json", "run", "--explorer", n.Explorer,
		"--metrics-listen", n.Metrics, "--poll-wait", "2s", "--resync", "5s", "--local-images", LocalImages(),
		"--container-run-dir", filepath.Join(n.Dir, "run"),
		// A stopped container restarts after 1 s, then 2 s, at most 4 s.
		"--container-restart-backoff", "1s", "--container-restart-backoff-max", "4s")
	args = append(args, n.Args...)
	bin := n.bin(t)
	logPath := filepath.Join(n.Dir, "provisiond.log")
	if n.opts.PrivateNetns {
		n.proc = StartProcess(t, "provisiond", logPath, "unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c", privateNetns, bin}, args...)...)
	} else {
		n.proc = StartProcess(t, "provisiond", logPath, bin, args...)
	}
	Eventually(t, 60*time.Second, "provisiond admin socket", func() error {
		if n.proc.cmd.ProcessState != nil {
			return Permanent(fmt.Errorf("provisiond exited: %s", n.proc.Log()))
		}
		_, err := n.CLI(t, "status")
		return err
	})
}

// Stop stops provisiond with SIGTERM.
func (n *Node) Stop(t testing.TB) { t.Helper(); n.proc.Stop(t) }

// Kill stops provisiond with SIGKILL.
func (n *Node) Kill() { n.proc.Kill() }

// Log returns the daemon's log so far.
func (n *Node) Log() string { return n.proc.Log() }

// PID returns the daemon's process ID (with PrivateNetns too: unshare and
// the shell exec into provisiond).
func (n *Node) PID() int { return n.proc.PID() }

// CLI runs a provisiond read command against this node.
func (n *Node) CLI(t testing.TB, args ...string) (string, error) {
	t.Helper()
	return Command(n.bin(t), nil, append(n.global(), args...)...)
}

// bin is the provisiond binary of this node.
func (n *Node) bin(t testing.TB) string {
	t.Helper()
	if n.opts.Plain {
		return PlainBin(t, "provisiond")
	}
	return Bin(t, "provisiond")
}

// ID returns the node ID.
func (n *Node) ID(t testing.TB) string {
	t.Helper()
	return NodeID(t, n.CLI)
}

// NodeID returns the node ID that `provisiond key show --json`, run by
// cli, shows.
func NodeID(t testing.TB, cli func(t testing.TB, args ...string) (string, error)) string {
	t.Helper()
	out, err := cli(t, "key", "show", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		NodeID string `json:"node_id"`
	}
	if err := json.Unmarshal([]byte(out), &k); err != nil {
		t.Fatalf("key show: %v: %s", err, out)
	}
	return k.NodeID
}

// Status returns `provisiond status --json`.
func (n *Node) Status(t testing.TB) map[string]any {
	t.Helper()
	out, err := n.CLI(t, "status", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var s map[string]any
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("status: %v: %s", err, out)
	}
	return s
}

// User drives provctl with its own key.
type User struct {
	Key      string
	Explorer string
	// Wrap, when set, is the command provctl runs under, with its
	// arguments (nsenter into a namespace, ending in "--"). Default none.
	Wrap []string
}

// NewUser creates a user key under the test's temporary directory.
func NewUser(t testing.TB, explorer string) *User {
	t.Helper()
	u := &User{Key: filepath.Join(t.TempDir(), "user.key"), Explorer: explorer}
	if _, err := u.Run(t, "key", "new"); err != nil {
		t.Fatal(err)
	}
	return u
}

// Run runs provctl with args.
func (u *User) Run(t testing.TB, args ...string) (string, error) {
	t.Helper()
	env := []string{"PROVCTL_EXPLORER=" + u.Explorer, "PROVCTL_KEY=" + u.Key}
	if len(u.Wrap) > 0 {
		return Command(u.Wrap[0], env, append(append(u.Wrap[1:len(u.Wrap):len(u.Wrap)], Bin(t, "provctl")), args...)...)
	}
	return Command(Bin(t, "provctl"), env, args...)
}

// Reserve runs `provctl reserve KIND args…` and returns the new ID.
func (u *User) Reserve(t testing.TB, kind string, args ...string) string {
	t.Helper()
	out, err := u.Run(t, append([]string{"reserve", kind}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// Get returns the reservation with its result as the explorer holds it,
// and whether provctl verified the node's signature.
func (u *User) Get(t testing.TB, id string) (*provision.Reservation, bool) {
	t.Helper()
	r, verified, err := u.get(t, id)
	if err != nil {
		t.Fatal(err)
	}
	return r, verified
}

// get is Get returning its errors: a failed provctl as it is, output
// that does not decode as Permanent.
func (u *User) get(t testing.TB, id string) (*provision.Reservation, bool, error) {
	t.Helper()
	out, err := u.Run(t, "get", "--json", id)
	if err != nil {
		return nil, false, err
	}
	var r struct {
		*provision.Reservation
		Verified bool `json:"result_verified"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return nil, false, Permanent(fmt.Errorf("get %s: %v: %s", id, err, out))
	}
	return r.Reservation, r.Verified, nil
}

// WaitResult waits until the explorer holds a verified result of id in
// state want; a failed provctl is tried again.
func (u *User) WaitResult(t testing.TB, id string, want provision.ResultState, within time.Duration) *provision.Result {
	t.Helper()
	var res *provision.Result
	Eventually(t, within, fmt.Sprintf("%s %s", id, want), func() error {
		r, verified, err := u.get(t, id)
		switch {
		case err != nil:
			return err
		case r == nil || r.Result == nil:
			return errors.New("no result yet")
		case !verified:
			return Permanent(fmt.Errorf("result of %s does not verify", id))
		case r.Result.State != want:
			if r.Result.State == provision.StateError && want != provision.StateError {
				return Permanent(fmt.Errorf("%s failed: %s", id, r.Result.Message))
			}
			return fmt.Errorf("result is %s", r.Result.State)
		}
		res = r.Result
		return nil
	})
	return res
}

// Command runs bin with args, env added to the environment, for at most
// two minutes, and returns its standard output; its error names the
// command and carries its standard error.
func Command(bin string, env []string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %v: %s", filepath.Base(bin), strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

type permanent struct{ error }

// Permanent marks an error that Eventually must not wait out.
func Permanent(err error) error { return permanent{err} }

// Eventually calls check until it returns nil, failing the test when it
// returns a Permanent error or when within passes. It polls every 100 ms:
// the processes it waits for are separate programs, with no event to
// wait on.
func Eventually(t testing.TB, within time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := check()
		if err == nil {
			return
		}
		var p permanent
		if errors.As(err, &p) {
			t.Fatalf("%s: %v", what, p.error)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Setup is the start of most end-to-end tests: explorerd, one provisiond
// registered with it, a user with a key, and the node's ID.
type Setup struct {
	Explorer *Explorer
	Node     *Node
	User     *User
	NodeID   string
}

// SetupOptions change how Start runs the node.
type SetupOptions struct {
	// Node are the node's options (see StartNodeWith). Default none.
	Node NodeOptions
	// Via, when set, gets the explorer's URL and returns the URL the node
	// talks to instead (a proxy the test puts between them, that injects
	// faults). The user always talks to the explorer itself. Default nil.
	Via func(explorer string) string
}

// Start skips the test unless it runs as root (see testutil.RequiresRoot),
// then starts explorerd, provisiond and a user as StartExplorer,
// StartNodeWith and NewUser do, and reads the node's ID. Both daemons stop
// when the test ends.
func Start(t testing.TB, opts SetupOptions) *Setup {
	t.Helper()
	testutil.RequiresRoot(t)
	s := &Setup{Explorer: StartExplorer(t)}
	nodeURL := s.Explorer.URL()
	if opts.Via != nil {
		nodeURL = opts.Via(nodeURL)
	}
	s.Node = StartNodeWith(t, nodeURL, opts.Node)
	s.User = NewUser(t, s.Explorer.URL())
	s.NodeID = s.Node.ID(t)
	return s
}
