package container

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The runc container states this package acts on.
const (
	stateRunning = "running"
	stateStopped = "stopped"
	stateCreated = "created"
	statePaused  = "paused"
)

// runc runs the runc binary against the manager's own state directory.
type runc struct {
	bin  string
	root string
}

func (r runc) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, r.bin, append([]string{"--root", r.root}, args...)...)
	cmd.Env = runcEnv(os.Environ())
	return cmd
}

// runcEnv is the daemon's environment without what systemd gave the
// daemon itself. With NOTIFY_SOCKET set, `runc run --detach` passes the
// socket into the container and waits for the container to send READY=1,
// which a tenant never does: under its Type=notify unit the daemon's
// container starts hung (found by `make systemd-test`). The socket
// activation and watchdog variables are the daemon's alone too.
func runcEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "WATCHDOG_PID", "WATCHDOG_USEC":
			continue
		}
		out = append(out, kv)
	}
	return out
}

// run runs the command and returns its combined output in the error.
func (r runc) run(ctx context.Context, args ...string) ([]byte, error) {
	cmd := r.command(ctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("runc %s: %w: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// exists reports whether runc knows container name: its state directory in
// our root exists.
func (r runc) exists(name string) (bool, error) {
	_, err := os.Stat(filepath.Join(r.root, name, "state.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// state returns the status of container name ("" when it does not exist).
func (r runc) state(ctx context.Context, name string) (string, error) {
	ok, err := r.exists(name)
	if err != nil || !ok {
		return "", err
	}
	out, err := r.run(ctx, "state", name)
	if err != nil {
		// Removed between the check and the call?
		if ok, _ := r.exists(name); !ok {
			return "", nil
		}
		return "", err
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return "", fmt.Errorf("decoding runc state of %s: %w", name, err)
	}
	return st.Status, nil
}

// start runs container name detached from bundle; the container's stdout
// and stderr are the log pipe (runc passes its own stdio to a detached
// container without a terminal), its stdin is /dev/null. runc returns
// once the process runs; the container does not depend on us afterwards.
// runc's own errors go to the pipe too, hence to the log at logPath.
func (r runc) start(ctx context.Context, name, bundle string, pipe *os.File, logPath string) error {
	cmd := r.command(ctx, "run", "--detach", "--bundle", bundle, name)
	cmd.Stdout, cmd.Stderr = pipe, pipe
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("runc run %s: %w (see %s)", name, err, logPath)
	}
	return nil
}

// remove kills and deletes container name; an absent one is success.
func (r runc) remove(ctx context.Context, name string) error {
	ok, err := r.exists(name)
	if err != nil || !ok {
		return err
	}
	if _, err := r.run(ctx, "delete", "--force", name); err != nil {
		if ok, _ := r.exists(name); !ok {
			return nil
		}
		return err
	}
	return nil
}

// list returns the names of the containers in our root.
func (r runc) list() ([]string, error) {
	entries, err := os.ReadDir(r.root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing runc containers: %w", err)
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() {
			names = append(names, e.Name())
		}
	}
	return names, nil
}
