package provision

import (
	"errors"
	"strings"
)

// ErrInUse is wrapped by a temporary decommission error of a workload
// another live workload still uses (a volume a container mounts). The
// Engine retries such a decommission with backoff, as any temporary one,
// and the deleted result says why the delete waited.
var ErrInUse = errors.New("provision: in use")

// waitedPrefix starts the part of a deleting transition's message that
// says why the decommission waited.
const waitedPrefix = "; waited: "

// noteWait records in cur (deleting) why its decommission waits, once:
// the deleting transition's message gets "; waited: <err>", which the
// deleted result then carries.
func noteWait(cur *Record, err error) {
	if !errors.Is(err, ErrInUse) {
		return
	}
	n := len(cur.History)
	if n == 0 || strings.Contains(cur.History[n-1].Message, waitedPrefix) {
		return
	}
	last := cur.History[n-1]
	cur.Move(Deleting, cur.Updated, last.Message+waitedPrefix+Truncate(err.Error(), MaxMessageLength/2))
}
