package testutil

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// ContainerCommand returns a command running args inside the runc
// container name of the state directory runcRoot, with CAP_NET_RAW (which
// busybox's ping needs).
//
// runc 1.1's exec joins a container's user namespace first and then cannot
// join a network namespace the node's user namespace owns, so a container
// that joined such a namespace (a provisiond network) is entered with
// nsenter instead: its user, network, mount, uts, ipc and pid namespaces
// as its root, not its cgroup or seccomp filter. ping alone runs as the
// node's root outside the container's user namespace: its raw sockets
// belong to the network namespace's owner. Tests that need the
// container's own restrictions run in containers without a network.
func ContainerCommand(runcRoot, name string, args ...string) (*exec.Cmd, error) {
	b, err := os.ReadFile(filepath.Join(runcRoot, name, "state.json"))
	if err != nil {
		return nil, fmt.Errorf("reading runc state of %s: %w", name, err)
	}
	var st struct {
		InitProcessPid int `json:"init_process_pid"`
		Config         struct {
			Namespaces []struct {
				Type string `json:"type"`
				Path string `json:"path"`
			} `json:"namespaces"`
		} `json:"config"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("decoding runc state of %s: %w", name, err)
	}
	for _, ns := range st.Config.Namespaces {
		if ns.Type == "NEWNET" && ns.Path != "" {
			nsArgs := []string{"--target", fmt.Sprint(st.InitProcessPid), "--net", "--mount", "--uts", "--ipc", "--pid", "--root", "--wd"}
			if len(args) == 0 || args[0] != "ping" {
				nsArgs = append(nsArgs, "--user")
			}
			cmd := exec.Command("nsenter", append(append(nsArgs, "--"), args...)...)
			cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
			return cmd, nil
		}
	}
	return exec.Command("runc", append([]string{"--root", runcRoot, "exec", "--cap", "CAP_NET_RAW", name}, args...)...), nil
}

// ContainerExec runs ContainerCommand and returns its combined output.
func ContainerExec(runcRoot, name string, args ...string) (string, error) {
	cmd, err := ContainerCommand(runcRoot, name, args...)
	if err != nil {
		return "", err
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}
