package volume

import (
	"os"

	"github.com/edgeprov/provisiond/primitives/internal/loop"
)

// The loop device helpers live in primitives/internal/loop, shared with
// the containers' disks.

func attachLoop(img string) (*os.File, error)   { return loop.Attach(img) }
func attachedLoop(img string) (*os.File, error) { return loop.Attached(img) }
func detachLoops(img string) error              { return loop.Detach(img) }
