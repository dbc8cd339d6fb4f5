// Package systemdtest proves provisiond under its real systemd unit:
// `make systemd-test` boots Debian's systemd as PID 1 with systemd-nspawn
// in a rootfs made by mmdebstrap (scripts/systemd-rootfs.sh, cached outside
// the clone), installs the binaries and units with `make install`, and
// drives the daemon through systemctl: readiness (Type=notify), restarts
// and SIGKILLs while containers run, an upgrade from the release
// 772db0b, the watchdog, and the journal.
//
// The container has a network of its own (--private-network) and its own
// /run, so nothing the daemon inside creates is seen by the host's daemons
// and tests, nor the reverse; loop devices are machine-wide, and the
// daemon's cleanup only touches the ones bound to images in its data
// directory. The host's cgroup v1 controllers are shared through a
// cgroup of the test's own (systemd-test-<random>) bound into the
// container, so the containers' cgroups stay below it.
//
// The tests run only when PROVISIOND_SYSTEMD_TEST is set (the make target
// sets it), so `make test` does not boot a container.
package systemdtest
