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
	"syscall"
	"time"
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

// shimScript is the shim of a container: a shell in a session of its own
// that runs `runc run` in the foreground, which waits for the container
// and exits with its exit code, and writes that code to the exit file.
// The outer shell returns at once: the shim is nobody's child and
// outlives the daemon. Arguments: runc, its root, the bundle, the name,
// the pid file and the exit file.
const shimScript = `("$1" --root "$2" run --bundle "$3" --pid-file "$5" "$4"; echo $? >"$6.tmp" && mv "$6.tmp" "$6") </dev/null &`

// start runs container name from bundle under a shim (see shimScript);
// the container's stdout and stderr are the log pipe, its stdin
// /dev/null. It returns once runc wrote the pid file (the container's
// process runs), or an error when runc exited first (its own errors go to
// the log at logPath too) or ctx ended.
func (r runc) start(ctx context.Context, name, bundle string, pipe *os.File, logPath string) error {
	pid, exit := filepath.Join(bundle, pidFile), filepath.Join(bundle, exitFile)
	for _, p := range []string{pid, exit, exit + ".tmp"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	cmd := exec.Command("/bin/sh", "-c", shimScript, "shim", r.bin, r.root, bundle, name, pid, exit)
	cmd.Env = runcEnv(os.Environ())
	cmd.Stdout, cmd.Stderr = pipe, pipe
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("starting the shim of %s: %w", name, err)
	}
	wait := time.Millisecond
	for {
		if _, err := os.Stat(pid); err == nil {
			return nil
		}
		if code, ok, err := readExitCode(bundle); err != nil || ok {
			if err == nil {
				err = fmt.Errorf("exit code %d", code)
			}
			return fmt.Errorf("runc run %s: %w (see %s)", name, err, logPath)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("runc run %s: %w", name, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Millisecond) // runc takes about 100 ms: a finer look saves up to 50 ms of a start
	}
}

// kill sends sig to the process of container name.
func (r runc) kill(ctx context.Context, name, sig string) error {
	_, err := r.run(ctx, "kill", name, sig)
	return err
}

// initPid returns the host pid of container name's process, from runc's
// state file.
func (r runc) initPid(name string) (int, error) {
	b, err := os.ReadFile(filepath.Join(r.root, name, "state.json"))
	if err != nil {
		return 0, fmt.Errorf("reading runc state of %s: %w", name, err)
	}
	var st struct {
		Pid int `json:"init_process_pid"`
	}
	if err := json.Unmarshal(b, &st); err != nil || st.Pid <= 0 {
		return 0, fmt.Errorf("decoding runc state of %s: no pid (%v)", name, err)
	}
	return st.Pid, nil
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
