// Command benchdoc turns `go test -bench` output into docs/benchmarks.md:
// the date, the machine, the Go version, every named target with the
// figure measured against it, a reason for each miss, and every benchmark
// line. `make bench` runs it; it is not part of the daemon.
//
//	go test -run '^$' -bench . ./... | go run ./internal/benchdoc -out docs/benchmarks.md
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/perf/benchfmt"
	"golang.org/x/perf/benchmath"
)

// target is one figure an issue names.
type target struct {
	figure string  // what is measured, for people
	bench  string  // benchmark name without the -N suffix
	metric string  // unit as the benchmark reports it
	scale  float64 // multiply the metric by this for display
	unit   string  // unit after scaling
	cmp    string  // "<", "<=", ">="
	limit  float64 // in display units
	why    string  // why it may miss and what would fix it, shown on a miss: reasoning, never a figure of an earlier run
	ratio  string  // when set, the figure is metric(bench)/metric(ratio)
}

var targets = []target{
	{figure: "store: expiry lookup, 1k expired among 1M records", bench: "BenchmarkExpired1kOf1M", metric: "ns/op", scale: 1e-6, unit: "ms", cmp: "<", limit: 5,
		why: "the lookup walks the expiry index up to now and copies the 1,000 ids; a miss means the machine was busy (rerun when idle)"},
	{figure: "store: reopen + stats rebuild, 1M records", bench: "BenchmarkReopenRebuild1M/units", metric: "ns/op", scale: 1e-9, unit: "s", cmp: "<", limit: 2,
		why: "the rebuild reads the compact units index of every active record; a miss means the page cache was cold or the machine busy (rerun when idle)"},
	{figure: "store: database size per 1M records", bench: "BenchmarkReopenRebuild1M/units", metric: "MiB/1M-records", scale: 1, unit: "MiB", cmp: ""},
	{figure: "predecessor cache: expiry scan, 100k JSON files", bench: "BenchmarkExpired100k/predecessor-json-files", metric: "ns/op", scale: 1e-6, unit: "ms", cmp: ""},
	{figure: "this store: expiry lookup, same 100k records", bench: "BenchmarkExpired100k/expiry-index", metric: "ns/op", scale: 1e-6, unit: "ms", cmp: ""},
	{figure: "predecessor ÷ this store (expiry, 100k)", bench: "BenchmarkExpired100k/predecessor-json-files", ratio: "BenchmarkExpired100k/expiry-index", metric: "ns/op", scale: 1, unit: "×", cmp: ""},
	{figure: "engine: reservations/s, instant provisioner, memory store", bench: "BenchmarkEngineThroughput/memory", metric: "reservations/s", scale: 1, unit: "/s", cmp: ""},
	{figure: "engine: reservations/s, instant provisioner, bbolt without fsync", bench: "BenchmarkEngineThroughput/bbolt-nosync", metric: "reservations/s", scale: 1, unit: "/s", cmp: ""},
	{figure: "engine: reservations/s, instant provisioner, bbolt (fsync)", bench: "BenchmarkEngineThroughput/bbolt", metric: "reservations/s", scale: 1, unit: "/s", cmp: ">=", limit: 5000,
		why: "a reservation takes two group-committed bbolt writes (accepted, admitted in the same write; then deployed with its result) and a share of one outbox acknowledgement per batch, one ed25519 check of the owner's signature and one signature of the result (crypto/ed25519), and JSON encoding; the cpu-µs/reservation and cores figures above say whether the run was bound by CPU (cores near the machine's) or by fsyncs (cores well below); on a shared virtual machine the steal figure says how much the hypervisor took. What would lift it: a store that writes fewer pages per commit, more ingest shards or a commit linger (both dropped as more than a node needs, see the README)"},
	{figure: "engine: CPU time per reservation, bbolt (fsync)", bench: "BenchmarkEngineThroughput/bbolt", metric: "cpu-µs/reservation", scale: 1, unit: "µs", cmp: ""},
	{figure: "engine: CPU kept busy, bbolt (fsync)", bench: "BenchmarkEngineThroughput/bbolt", metric: "cores", scale: 1, unit: "cores", cmp: ""},
	{figure: "engine: machine's CPU time the hypervisor took during that run (steal)", bench: "BenchmarkEngineThroughput/bbolt", metric: "steal-%", scale: 1, unit: "%", cmp: ""},
	{figure: "end to end: explorer → node → acknowledged result (burst)", bench: "BenchmarkEndToEnd/burst", metric: "reservations/s", scale: 1, unit: "/s", cmp: ">=", limit: 5000,
		why: "results reach the explorer in batches (each result's signature checked, the batch stored in one fsync'd transaction) and the node, the explorer and the other work on the machine share its cores: per reservation, ed25519 checks (the node's of the reservation, the explorer's of the result and of each request), the node's signature and bbolt commits, JSON, and one stats PUT per outbox pass. provisiond as configured by default also caps delivery at 20 results/s (Options.OutboxRate); the benchmark lifts it. Compare BenchmarkResults of explorer/server and the engine's rate in this run to see which side bounds it"},
	{figure: "end to end at 500/s: p50 due → acknowledged result", bench: "BenchmarkEndToEnd/paced-500", metric: "p50-ms", scale: 1, unit: "ms", cmp: ""},
	{figure: "end to end at 500/s: p99 due → acknowledged result", bench: "BenchmarkEndToEnd/paced-500", metric: "p99-ms", scale: 1, unit: "ms", cmp: "<", limit: 50,
		why: "the paced rate takes a good share of what the pipeline sustains on a small shared machine (compare the burst rate of this run), so whenever other work takes the CPU a queue forms and the tail is queueing time. Per reservation the explorer adds one fsync'd commit for the submission and its share of a batch request for the result; a miss means the machine was busy (rerun when idle) or the burst rate fell"},
	{figure: "end to end at 500/s: results acknowledged per second", bench: "BenchmarkEndToEnd/paced-500", metric: "reservations/s", scale: 1, unit: "/s", cmp: ""},
	{figure: "explorer: 5,000 long-polling nodes, p99 event delivery", bench: "BenchmarkLongPollNodes/nodes=5000", metric: "p99-ms", scale: 1, unit: "ms", cmp: "<", limit: 100,
		why: "simulated nodes, their clients and the explorer share one process and the machine's cores; a miss means the machine was busy (rerun when idle)"},
	{figure: "explorer: heap held by 5,000 long-polls (server and clients in one process)", bench: "BenchmarkLongPollNodes/nodes=5000", metric: "heap-MB", scale: 1, unit: "MiB", cmp: ""},
	{figure: "fleet, 10,000 long-polling nodes, 2 replicas on PostgreSQL, 200/s: p50 201 → delivered", bench: "BenchmarkFleet/store=postgres/paced-200", metric: "p50-ms", scale: 1, unit: "ms", cmp: ""},
	{figure: "fleet, 10,000 long-polling nodes, 2 replicas on PostgreSQL, 200/s: p99 201 → delivered", bench: "BenchmarkFleet/store=postgres/paced-200", metric: "p99-ms", scale: 1, unit: "ms", cmp: "<", limit: 100,
		why: "each delivery crosses from the replica that accepted the reservation to the one the node polls: after the commit the writer sends a NOTIFY, PostgreSQL hands it to the other replica's LISTEN connection, which wakes the held poll, which reads its events from PostgreSQL and answers: four processes (two explorers, two PostgreSQL backends) scheduled in turn where bbolt has one, on the same cores as the 10,000 simulated nodes. The tail is time spent waiting for a core; a miss means the machine was busy: rerun when idle, or put the simulated nodes on another machine"},
	{figure: "fleet on PostgreSQL, 200/s: p99 POST sent → delivered (acceptance included)", bench: "BenchmarkFleet/store=postgres/paced-200", metric: "p99-post-ms", scale: 1, unit: "ms", cmp: ""},
	{figure: "fleet on PostgreSQL (2 replicas): reservations accepted/s, 8 submitters", bench: "BenchmarkFleet/store=postgres/burst", metric: "accepted/s", scale: 1, unit: "/s", cmp: ""},
	{figure: "fleet on PostgreSQL (2 replicas): p99 201 → delivered at that rate", bench: "BenchmarkFleet/store=postgres/burst", metric: "p99-ms", scale: 1, unit: "ms", cmp: ""},
	{figure: "fleet on PostgreSQL: RSS of the 2 replicas, 10,000 polls held", bench: "BenchmarkFleet/store=postgres/paced-200", metric: "server-rss-MB", scale: 1, unit: "MiB", cmp: ""},
	{figure: "same fleet on bbolt (1 explorer), 200/s: p50 201 → delivered", bench: "BenchmarkFleet/store=bbolt/paced-200", metric: "p50-ms", scale: 1, unit: "ms", cmp: ""},
	{figure: "same fleet on bbolt (1 explorer), 200/s: p99 201 → delivered", bench: "BenchmarkFleet/store=bbolt/paced-200", metric: "p99-ms", scale: 1, unit: "ms", cmp: ""},
	{figure: "same fleet on bbolt, 200/s: p99 POST sent → delivered (acceptance included)", bench: "BenchmarkFleet/store=bbolt/paced-200", metric: "p99-post-ms", scale: 1, unit: "ms", cmp: ""},
	{figure: "same fleet on bbolt (1 explorer): reservations accepted/s, 8 submitters", bench: "BenchmarkFleet/store=bbolt/burst", metric: "accepted/s", scale: 1, unit: "/s", cmp: ""},
	{figure: "same fleet on bbolt (1 explorer): p99 201 → delivered at that rate", bench: "BenchmarkFleet/store=bbolt/burst", metric: "p99-ms", scale: 1, unit: "ms", cmp: ""},
	{figure: "same fleet on bbolt: RSS of the explorer, 10,000 polls held", bench: "BenchmarkFleet/store=bbolt/paced-200", metric: "server-rss-MB", scale: 1, unit: "MiB", cmp: ""},
	{figure: "fleet: accepted/s, PostgreSQL (2 replicas) ÷ bbolt", bench: "BenchmarkFleet/store=postgres/burst", ratio: "BenchmarkFleet/store=bbolt/burst", metric: "accepted/s", scale: 1, unit: "×", cmp: ""},
	{figure: "fleet: RSS of the process of the 10,000 simulated nodes (clients only)", bench: "BenchmarkFleet/store=postgres/paced-200", metric: "client-rss-MB", scale: 1, unit: "MiB", cmp: ""},
	{figure: "fleet: Go heap those 10,000 clients hold, polls in flight", bench: "BenchmarkFleet/store=postgres/paced-200", metric: "client-heap-MB", scale: 1, unit: "MiB", cmp: ""},
	{figure: "idle daemon: RSS, 1,000 deployed networks (non-race build)", bench: "BenchmarkIdleDaemon", metric: "rss-MB", scale: 1, unit: "MB", cmp: "<", limit: 25,
		why: "most of the RSS is file-backed, clean pages the kernel can drop under pressure: the executable (rss-exe) and bbolt's mmap of the database (rss-db, read by each resync); the rest is the Go heap and runtime (rss-anon, GOGC 100). The largest parts of the binary are chosen dependencies (urfave/cli with text/template, the Prometheus client with protobuf); a smaller flag parser and a hand-written exposition would lift the figure; the project keeps both libraries (see the README)"},
	{figure: "idle daemon: anonymous RSS (heap, stacks)", bench: "BenchmarkIdleDaemon", metric: "rss-anon-MB", scale: 1, unit: "MB", cmp: ""},
	{figure: "idle daemon: CPU over the measured window", bench: "BenchmarkIdleDaemon", metric: "cpu-%", scale: 1, unit: "%", cmp: "<", limit: 0.2,
		why: "idle, the daemon holds one long-poll (30 s) and otherwise sleeps; a reconcile pass over the 1,000 networks runs every --resync (5 m) and costs more when it falls in the window: a longer resync or an Inspect that reads all namespaces in one pass would lift it"},
	{figure: "container provision + decommission (cached image), median", bench: "BenchmarkContainerProvision", metric: "p50-ms", scale: 1, unit: "ms", cmp: ""},
	{figure: "container provision + decommission (cached image), p90", bench: "BenchmarkContainerProvision", metric: "p90-ms", scale: 1, unit: "ms", cmp: ""},
	{figure: "raw `runc run -d` + `runc delete --force` of the same bundle, median", bench: "BenchmarkRawRuncRun", metric: "p50-ms", scale: 1, unit: "ms", cmp: ""},
	{figure: "container provision ÷ raw runc (median)", bench: "BenchmarkContainerProvision", ratio: "BenchmarkRawRuncRun", metric: "p50-ms", scale: 1, unit: "×", cmp: "<=", limit: 1.3,
		why: "provisioning also verifies the image digest, mounts an overlay, writes the bundle and wires a veth into the network namespace around the same runc call"},
	{figure: "registry image, cold start of 50 MB (pull, check, store, unpack, run), median", bench: "BenchmarkRegistryColdStart", metric: "p50-ms", scale: 1, unit: "ms", cmp: ""},
	{figure: "`curl` the same blobs + `tar -xzf` the layers, same run, median", bench: "BenchmarkRegistryColdStart", metric: "curl-tar-p50-ms", scale: 1, unit: "ms", cmp: ""},
	{figure: "registry cold start ÷ curl + tar (medians)", bench: "BenchmarkRegistryColdStart", metric: "ratio", scale: 1, unit: "×", cmp: "<=", limit: 1.2,
		why: "on top of what curl and tar do, the node fsyncs each blob and syncfs's each unpacked layer before it counts as stored (a crash must not leave a half-written layer that looks complete), hashes every byte twice (the blob's digest, the layer's diff ID), and then makes the container's ext4 disk and runs it, which curl and tar do not; a miss means those fixed costs outweigh the transfer on this disk"},
	{figure: "registry image, cold pull of 50 MB alone (fetch, check, fsync, unpack as it arrives, syncfs) ÷ curl + tar (medians)", bench: "BenchmarkPullCold", metric: "ratio", scale: 1, unit: "×", cmp: ""},
	{figure: "registry image, warm start (layers present), provision + decommission, median", bench: "BenchmarkRegistryWarmStart", metric: "p50-ms", scale: 1, unit: "ms", cmp: ""},
	{figure: "local rootfs tar (unpacked), same run, median", bench: "BenchmarkRegistryWarmStart", metric: "local-tar-p50-ms", scale: 1, unit: "ms", cmp: ""},
	{figure: "registry warm start ÷ local tar (medians)", bench: "BenchmarkRegistryWarmStart", metric: "ratio", scale: 1, unit: "×", cmp: "<=", limit: 1.1,
		why: "a warm registry image reads its manifest and config back from the store and checks their digests, and mounts each layer idmapped; a miss means the machine was busy (the samples alternate)"},
	{figure: "second image sharing a base: blob bytes transferred ÷ its own layer and config", bench: "BenchmarkSharedBaseTransfer", metric: "ratio", scale: 1, unit: "×", cmp: "<=", limit: 1.01,
		why: "the shared base layer is found in the store by digest and not fetched again; more than its own bytes means a blob was fetched twice"},
	{figure: "lab: TCP between containers on two nodes over their WireGuard network (wireguard-go in userspace)", bench: "BenchmarkTunnelThroughput", metric: "tunnel-MB/s", scale: 1, unit: "MB/s", cmp: ""},
	{figure: "lab: the same transfer over the plain underlay between the two nodes, same run", bench: "BenchmarkTunnelThroughput", metric: "underlay-MB/s", scale: 1, unit: "MB/s", cmp: ""},
	{figure: "lab: tunnel ÷ underlay throughput", bench: "BenchmarkTunnelThroughput", metric: "tunnel/underlay", scale: 1, unit: "×", cmp: ""},
	{figure: "lab: RSS of the daemon and its WireGuard helpers, 10 networks", bench: "BenchmarkNetworksRSS/10", metric: "MB-rss", scale: 1, unit: "MB", cmp: ""},
	{figure: "lab: RSS of the daemon and its WireGuard helpers, 100 networks", bench: "BenchmarkNetworksRSS/100", metric: "MB-rss", scale: 1, unit: "MB", cmp: ""},
	{figure: "lab: RSS per WireGuard helper (one per network), 100 networks", bench: "BenchmarkNetworksRSS/100", metric: "MB-rss/helper", scale: 1, unit: "MB", cmp: ""},
	{figure: "lab: PSS (shared pages counted once) of the daemon and its WireGuard helpers, 10 networks", bench: "BenchmarkNetworksRSS/10", metric: "MB-pss", scale: 1, unit: "MB", cmp: ""},
	{figure: "lab: PSS of the daemon and its WireGuard helpers, 100 networks", bench: "BenchmarkNetworksRSS/100", metric: "MB-pss", scale: 1, unit: "MB", cmp: ""},
	{figure: "lab: PSS per WireGuard helper, 100 networks", bench: "BenchmarkNetworksRSS/100", metric: "MB-pss/helper", scale: 1, unit: "MB", cmp: ""},
	{figure: "network provision + decommission, median", bench: "BenchmarkNetworkProvision", metric: "p50-ms", scale: 1, unit: "ms", cmp: ""},
	{figure: "volume provision + decommission (1 GiB, mkfs.ext4, loop mount), median", bench: "BenchmarkVolumeProvision", metric: "p50-ms", scale: 1, unit: "ms", cmp: ""},
	{figure: "user command → verified ok: `provctl reserve container … --wait ok`, cached image, median of 20", bench: "BenchmarkUserWait", metric: "provctl-p50-ms", scale: 1, unit: "ms", cmp: ""},
	{figure: "`podman run -d --rootfs` of the same rootfs, same run, median of 20", bench: "BenchmarkUserWait", metric: "podman-p50-ms", scale: 1, unit: "ms", cmp: ""},
	{figure: "provctl --wait ok ÷ podman run -d (medians)", bench: "BenchmarkUserWait", metric: "ratio", scale: 1, unit: "×", cmp: "<=", limit: 0.75,
		why: "see where the time goes in the BenchmarkUserWait steps of this run (submitted, delivered, ok: the medians of the elapsed times provctl prints): the command's own start and a signed, fsync'd submission; the node's long-poll answered at once; the node's fsync'd accept and the container's provisioning (BenchmarkContainerProvision); the result's way through the node's outbox and the explorer's fsync'd store, which wakes the user's long-poll at once. A miss means the machine was busy (the samples alternate, so both sides meet the same load) or the provisioning itself grew"},
	{figure: "provctl --wait ok: submitted (median elapsed)", bench: "BenchmarkUserWait", metric: "submitted-p50-ms", scale: 1, unit: "ms", cmp: ""},
	{figure: "provctl --wait ok: delivered to the node (median elapsed)", bench: "BenchmarkUserWait", metric: "delivered-p50-ms", scale: 1, unit: "ms", cmp: ""},
	{figure: "provctl --wait ok: verified ok (median elapsed)", bench: "BenchmarkUserWait", metric: "ok-p50-ms", scale: 1, unit: "ms", cmp: ""},
	{figure: "reservation sign", bench: "BenchmarkSign", metric: "ns/op", scale: 1e-3, unit: "µs", cmp: ""},
	{figure: "reservation verify", bench: "BenchmarkVerify", metric: "ns/op", scale: 1e-3, unit: "µs", cmp: ""},
}

// result is every run of one benchmark name, summed up: a name run once
// holds that run's figures, a name run several times (go test -count, or
// several go test commands in one input) the median of each figure.
type result struct {
	name    string
	n       int                  // iterations: the median over the runs
	metrics map[string]float64   // each metric's median over the runs
	samples map[string][]float64 // each metric's value in every run, sorted
	order   []string             // metrics in the order the benchmark reports them
	iters   []float64            // iterations of every run, sorted once parsed
}

// runs returns how many lines of this name the input had.
func (r *result) runs() int { return len(r.iters) }

// add records one run's iterations and figures, each in the unit the
// benchmark reported it in. A unit reported twice on one line counts
// once, with its last value, as when the last run won.
func (r *result) add(n int, values []benchfmt.Value) {
	r.iters = append(r.iters, float64(n))
	got := map[string]float64{}
	for _, v := range values {
		u, x := v.Unit, v.Value
		if v.OrigUnit != "" {
			u, x = v.OrigUnit, v.OrigValue
		}
		if _, ok := got[u]; !ok {
			if _, known := r.samples[u]; !known {
				r.order = append(r.order, u)
			}
		}
		got[u] = x
	}
	for u, v := range got {
		r.samples[u] = append(r.samples[u], v)
	}
}

// finish sorts the samples and sets n and metrics to their medians, as
// benchstat computes them (golang.org/x/perf/benchmath).
func (r *result) finish() {
	sort.Float64s(r.iters)
	r.n = int(math.Round(median(r.iters)))
	for u, s := range r.samples {
		sort.Float64s(s)
		r.metrics[u] = median(s)
	}
}

// spread returns the least and the greatest value of metric u and the
// number of runs that reported it; none for a nil result.
func (r *result) spread(u string) (lo, hi float64, k int) {
	if r == nil {
		return 0, 0, 0
	}
	s := r.samples[u]
	if len(s) == 0 {
		return 0, 0, 0
	}
	return s[0], s[len(s)-1], len(s)
}

// median returns the median of values (benchmath's, which takes the mean
// of the two middle ones for an even count); 0 for none.
func median(values []float64) float64 {
	if len(values) == 0 {
		return 0
	}
	return benchmath.AssumeNothing.Summary(benchmath.NewSample(values, &benchmath.DefaultThresholds), 0.95).Center
}

// parse reads `go test -bench` output with golang.org/x/perf/benchfmt
// (benchstat's reader) and returns a result for every benchmark name (the
// -N GOMAXPROCS suffix dropped) with its runs summed up, and the names in
// the order they first appeared. Lines that are not benchmark results are
// skipped.
func parse(in io.Reader) (map[string]*result, []string, error) {
	res := map[string]*result{}
	var names []string
	rd := benchfmt.NewReader(in, "stdin")
	for rd.Scan() {
		rec, ok := rd.Result().(*benchfmt.Result)
		if !ok {
			continue // a syntax error or unit metadata: not a result
		}
		base, parts := rec.Name.Parts()
		name := "Benchmark" + string(base)
		for _, p := range parts {
			if !bytes.HasPrefix(p, []byte("-")) {
				name += string(p)
			}
		}
		r, seen := res[name]
		if !seen {
			r = &result{name: name, metrics: map[string]float64{}, samples: map[string][]float64{}}
			res[name] = r
			names = append(names, name)
		}
		r.add(rec.Iters, rec.Values)
	}
	for _, r := range res {
		r.finish()
	}
	return res, names, rd.Err()
}

// value returns the target's figure in display units, from the medians of
// its benchmark's runs, and whether the input had it.
func (t target) value(res map[string]*result) (float64, bool) {
	r, ok := res[t.bench]
	if !ok {
		return 0, false
	}
	v, ok := r.metrics[t.metric]
	if !ok {
		return 0, false
	}
	if t.ratio != "" {
		d, ok := res[t.ratio]
		if !ok || d.metrics[t.metric] == 0 {
			return 0, false
		}
		return v / d.metrics[t.metric], true
	}
	return v * t.scale, true
}

// measured returns the target's "measured" cell for figure v: the figure
// and its unit, and, when its benchmark ran more than once, how many runs
// the median is of and their range. A ratio shows no range; it only says
// it divides medians when either side ran more than once.
func (t target) measured(res map[string]*result, v float64) string {
	s := format(v) + " " + t.unit
	r := res[t.bench]
	if t.ratio != "" {
		for _, side := range []*result{r, res[t.ratio]} {
			if _, _, k := side.spread(t.metric); k > 1 {
				return s + " (ratio of medians)"
			}
		}
		return s
	}
	lo, hi, k := r.spread(t.metric)
	if k < 2 {
		return s
	}
	return fmt.Sprintf("%s (median of %d runs, %s–%s)", s, k, format(lo*t.scale), format(hi*t.scale))
}

func (t target) met(v float64) bool {
	switch t.cmp {
	case "<":
		return v < t.limit
	case "<=":
		return v <= t.limit
	case ">=":
		return v >= t.limit
	}
	return true
}

func format(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

func machine() string {
	var parts []string
	if out, err := exec.Command("uname", "-srm").Output(); err == nil {
		parts = append(parts, strings.TrimSpace(string(out)))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				parts = append(parts, strings.TrimSpace(l[strings.Index(l, ":")+1:]))
				break
			}
		}
	}
	parts = append(parts, fmt.Sprintf("%d cores", runtime.NumCPU()))
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb float64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %f kB", &kb); err == nil {
			parts = append(parts, fmt.Sprintf("%.0f GiB", kb/(1<<20)))
		}
	}
	return strings.Join(parts, ", ")
}

func write(w io.Writer, res map[string]*result, names []string, raw, only string) {
	if only != "" {
		fmt.Fprintf(w, "# Benchmarks: %s\n\nWritten by internal/benchdoc from a run of %s alone (`-only %s`); `make bench` runs it with all the others into benchmarks.md. Do not edit by hand.\n\n", only, only, only)
	} else {
		fmt.Fprintf(w, "# Benchmarks\n\nWritten by internal/benchdoc from the run of the command below (`make bench` runs them all); do not edit by hand.\n\n")
	}
	fmt.Fprintf(w, "Every figure below was measured by the run this file records (medians as benchstat computes them); a figure that did not run says \"not run\". The reasons given for a miss are reasoning, not measurement.\n\n")
	fmt.Fprintf(w, "- date: %s\n- machine: %s\n- Go: %s\n- command: `%s`\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), machine(), runtime.Version(), raw)
	fmt.Fprintf(w, "## Targets\n\n| figure | target | measured | |\n|---|---|---|---|\n")
	var misses []string
	for _, t := range targets {
		v, ok := t.value(res)
		want := "—"
		if t.cmp != "" {
			want = fmt.Sprintf("%s %s %s", t.cmp, strconv.FormatFloat(t.limit, 'g', -1, 64), t.unit)
		}
		switch {
		case !ok:
			fmt.Fprintf(w, "| %s | %s | not run | |\n", t.figure, want)
		case t.cmp == "":
			fmt.Fprintf(w, "| %s | %s | %s | |\n", t.figure, want, t.measured(res, v))
		case t.met(v):
			fmt.Fprintf(w, "| %s | %s | %s | met |\n", t.figure, want, t.measured(res, v))
		default:
			fmt.Fprintf(w, "| %s | %s | %s | **missed** |\n", t.figure, want, t.measured(res, v))
			misses = append(misses, fmt.Sprintf("- %s: %s against %s. Why it may miss, and what would fix it (not measured by this run): %s.", t.figure, t.measured(res, v), want, t.why))
		}
	}
	if len(misses) > 0 {
		fmt.Fprintf(w, "\n### Missed\n\n%s\n", strings.Join(misses, "\n"))
	}
	fmt.Fprintf(w, "\n## Every benchmark\n\n| benchmark | runs | figures |\n|---|---|---|\n")
	sort.Strings(names)
	for _, n := range names {
		r := res[n]
		var f []string
		for _, u := range r.order {
			if lo, hi, k := r.spread(u); k > 1 {
				f = append(f, fmt.Sprintf("%s (%s–%s) %s", format(r.metrics[u]), format(lo), format(hi), u))
			} else {
				f = append(f, format(r.metrics[u])+" "+u)
			}
		}
		runs := strconv.Itoa(r.n)
		if k := r.runs(); k > 1 {
			runs += fmt.Sprintf(" ×%d runs", k)
		}
		fmt.Fprintf(w, "| %s | %s | %s |\n", strings.TrimPrefix(n, "Benchmark"), runs, strings.Join(f, ", "))
	}
}

// onlyOf returns the targets of benchmarks whose name starts with prefix
// (all of them when prefix is empty): the targets of a partial run.
func onlyOf(ts []target, prefix string) []target {
	if prefix == "" {
		return ts
	}
	return slices.DeleteFunc(slices.Clone(ts), func(t target) bool { return !strings.HasPrefix(t.bench, prefix) })
}

func main() {
	out := flag.String("out", "docs/benchmarks.md", "markdown `FILE` to write")
	cmd := flag.String("command", "make bench", "the command that produced the input, for the record")
	only := flag.String("only", "", "keep only the targets of benchmarks whose name starts with `PREFIX` (a partial run)")
	flag.Parse()
	targets = onlyOf(targets, *only)
	res, names, err := parse(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchdoc:", err)
		os.Exit(1)
	}
	if len(names) == 0 {
		fmt.Fprintln(os.Stderr, "benchdoc: no benchmark lines on standard input")
		os.Exit(1)
	}
	f, err := os.Create(*out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchdoc:", err)
		os.Exit(1)
	}
	write(f, res, names, *cmd, *only)
	if err := f.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "benchdoc:", err)
		os.Exit(1)
	}
}
