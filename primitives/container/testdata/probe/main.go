// Command probe tries, inside a container, what a tenant must not be able
// to do, and prints one line per attempt: "<name> <errno name>" or
// "<name> ok". The container package's isolation test builds it into an
// image.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

func main() {
	// unshare(2) needs a single-threaded caller, which no Go program is:
	// a child is cloned into a new user namespace instead (what
	// `unshare -U true` does).
	try("unshare-user", func() error {
		cmd := exec.Command("/bin/true")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWUSER}
		err := cmd.Run()
		var errno syscall.Errno
		if errors.As(err, &errno) {
			return unix.Errno(errno)
		}
		return err
	})
	try("keyctl", func() error {
		_, err := unix.KeyctlJoinSessionKeyring("probe")
		return err
	})
	try("bpf", func() error {
		attr := struct{ mapType, keySize, valueSize, maxEntries uint32 }{unix.BPF_MAP_TYPE_ARRAY, 4, 4, 1}
		fd, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_MAP_CREATE, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
		if errno != 0 {
			return errno
		}
		unix.Close(int(fd))
		return nil
	})
	if len(os.Args) > 1 && os.Args[1] == "-no-mount" {
		return
	}
	try("mount", func() error {
		if err := os.MkdirAll("/tmp/probe-mnt", 0o755); err != nil {
			return err
		}
		return unix.Mount("tmpfs", "/tmp/probe-mnt", "tmpfs", 0, "")
	})
}

func try(name string, f func() error) {
	err := f()
	if err == nil {
		fmt.Println(name, "ok")
		return
	}
	if errno, ok := err.(unix.Errno); ok {
		fmt.Println(name, unix.ErrnoName(errno))
		return
	}
	fmt.Println(name, err)
}
