package main

import (
	"os"
	"strings"
)

// bootID returns the boot id in file (--boot-id-file), "" when it cannot
// be read (the containers then read the kernel's): a container that
// stopped in another boot stopped with the node, and restarts at once.
func bootID(file string) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
