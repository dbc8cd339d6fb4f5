package provision

import "errors"

// ErrInUse is wrapped by a temporary decommission error of a workload
// another live workload still uses (a volume a container mounts). The
// Engine retries such a decommission with backoff, as any temporary one,
// and the deleted result says why the delete waited.
var ErrInUse = errors.New("provision: in use")
