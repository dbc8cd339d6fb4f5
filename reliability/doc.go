// Package reliability turns provisiond's design promises into repeatable
// evidence. Its tests run the real explorerd, provisiond and provctl (see
// internal/harness) with real primitives as root:
//
//   - TestKillSoak kills the daemon with SIGKILL at random moments under a
//     steady stream of reservations and deletes, then checks that every
//     reservation has one final signed result, nothing was provisioned
//     twice, nothing of ours is left without a live record, the stats
//     equal stats.Compute over the records and the database checks clean.
//   - TestExplorerOutage stops explorerd while reservations expire and a
//     container crash-loops, and checks that every result and the latest
//     stats arrive once it is back.
//   - TestHostileInput sends more than a hundred bad reservations and
//     requests to the explorer and the node.
//   - TestSafeCleanup checks that orphan cleanup removes only our orphans,
//     only once caught up, and never foreign objects, the database or the
//     identity.
//   - TestRebootRecreates removes every runtime object behind a stopped
//     daemon's back and checks that the next start re-creates them with
//     their data.
//   - TestNoResultDropped fails every delivery of the node with 401, a
//     proxy's 503 page and closed connections, each for a while, in front
//     of explorerd: afterwards every result is there, taken exactly once.
//   - TestBadExplorerBoundedMemory answers the plain daemon's long-polls
//     with endless bytes, a 200 MB JSON string, or headers and silence:
//     its peak RSS stays under 64 MB and it recovers; a Date an hour
//     ahead shows as clock skew in `provisiond status`.
//
// `make test` runs the short variant (SOAK_KILLS unset: 10 kills);
// `make soak` sets SOAK_KILLS=100. docs/reliability.md has the figures.
package reliability
