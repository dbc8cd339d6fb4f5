package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/internal/pgtest"
)

// childEnv makes the test binary run explorerd's main instead of the tests:
// the replicas of TestKillReplicaUnderLoad are real processes.
const childEnv = "EXPLORERD_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		main()
		os.Exit(0)
	}
	code := pgtest.Main(m)
	if built.path != "" { // the explorerd binary the TLS tests built
		os.RemoveAll(filepath.Dir(built.path))
	}
	os.Exit(code)
}

// child is an explorerd process started by a test.
type child struct {
	cmd  *exec.Cmd
	url  string
	logs *syncBuffer
	done chan struct{}
}

// startChild starts explorerd on dsn, listening on a free loopback port,
// and waits until it serves.
func startChild(t *testing.T, dsn string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "--listen", "127.0.0.1:0", "--database-url", dsn, "--log-format", "json", "--log-level", "info")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, logs: &syncBuffer{}, done: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(c.logs, line)
			var l struct {
				Message string `json:"message"`
				Listen  string `json:"listen"`
			}
			if json.Unmarshal([]byte(line), &l) == nil && l.Message == "explorerd serving" {
				addr <- l.Listen
			}
		}
	}()
	go func() { cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-c.done
		}
	})
	select {
	case a := <-addr:
		c.url = "http://" + a
	case <-c.done:
		t.Fatalf("explorerd exited before serving:\n%s", c.logs)
	case <-time.After(30 * time.Second):
		t.Fatalf("explorerd did not serve within 30 s:\n%s", c.logs)
	}
	return c
}

// TestKillReplicaUnderLoad runs two explorerd processes on one PostgreSQL
// database. Users write through both while a node follows its stream
// through the first; the first is killed with SIGKILL mid-load. The node
// goes on through the second from its cursor, and every reservation a user
// was told was accepted reaches it exactly once, at consecutive numbers.
func TestKillReplicaUnderLoad(t *testing.T) {
	dsn := pgtest.Shared(t).NewDB(t)
	a, b := startChild(t, dsn), startChild(t, dsn)
	urls := []string{a.url, b.url}
	node := explorertest.NewKey(t)
	nodeID := explorertest.NodeID(node)
	if err := explorer.NewClient(a.url, node, explorertest.ClientOptions()).Register(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	var mu sync.Mutex
	accepted := map[string]bool{}
	var killed bool
	load, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			user := explorertest.NewKey(t)
			via := w % 2
			for i := 0; load.Err() == nil; i++ {
				r := explorertest.Volume(nodeID, int64(i+1))
				r.Sign(user)
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				id, err := explorer.NewUserClient(urls[via], user, explorertest.ClientOptions()).CreateReservation(cctx, r)
				cancel()
				mu.Lock()
				if err == nil {
					accepted[id] = true
				} else if killed {
					via = 1 // the user's next request goes to the living replica
				}
				mu.Unlock()
			}
		})
	}

	var fl explorertest.Follower
	via := 0
	switched := uint64(0)
	follow := func() int {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		evs, next, err := explorer.NewClient(urls[via], node, explorertest.ClientOptions()).Poll(pctx, fl.Cursor)
		if err != nil {
			mu.Lock()
			if killed && via == 0 {
				via, switched = 1, fl.Cursor // the node goes on through the other replica
			}
			mu.Unlock()
			return -1
		}
		return fl.Take(t, evs, next)
	}
	fl.Follow(time.Second, follow)
	mu.Lock()
	killed = true
	mu.Unlock()
	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-a.done
	fl.Follow(2*time.Second, follow)
	stopLoad()
	wg.Wait()
	fl.Drain(follow)
	mu.Lock()
	defer mu.Unlock()
	fl.CheckDelivered(t, accepted)
	t.Logf("%d accepted, %d delivered; the node moved to the second replica at cursor %d, now at %d", len(accepted), len(fl.Seen), switched, fl.Cursor)
	if via != 1 || switched == 0 || fl.Cursor <= switched {
		t.Fatalf("the node did not go on through the second replica (via %d, switched at %d, cursor %d)", via, switched, fl.Cursor)
	}
}
