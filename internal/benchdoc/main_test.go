package main

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"testing"
)

const sample = `goos: linux
BenchmarkExpired1kOf1M-2   	   24000	     46000 ns/op	       0 B/op
BenchmarkEngineThroughput/bbolt-2	       1	2000000000 ns/op	      3100 reservations/s
BenchmarkContainerProvision-2	5	1 ns/op	 260.0 p50-ms	 300.0 p90-ms
BenchmarkRawRuncRun-2	5	1 ns/op	 200.0 p50-ms	 220.0 p90-ms
PASS
`

func TestParseAndWrite(t *testing.T) {
	res, names, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 4 || res["BenchmarkEngineThroughput/bbolt"] == nil || res["BenchmarkExpired1kOf1M"].metrics["ns/op"] != 46000 {
		t.Fatalf("parsed %v: %+v", names, res["BenchmarkExpired1kOf1M"])
	}
	var out bytes.Buffer
	write(&out, res, names, "test", "")
	doc := out.String()
	for _, want := range []string{
		"| store: expiry lookup, 1k expired among 1M records | < 5 ms | 0.046 ms | met |",
		"| engine: reservations/s, instant provisioner, bbolt (fsync) | >= 5000 /s | 3100 /s | **missed** |",
		"| container provision ÷ raw runc (median) | <= 1.3 × | 1.30 × | met |",
		"| idle daemon: RSS, 1,000 deployed networks (non-race build) | < 25 MB | not run | |",
		"### Missed",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("document lacks %q\n%s", want, doc)
		}
	}
}

// TestRepeatedRuns feeds several runs of one name and checks that the
// figures are the medians over them, with the least and greatest value
// and the run count, and that the targets are decided on the median, not
// on the last run.
func TestRepeatedRuns(t *testing.T) {
	const bbolt = "BenchmarkEngineThroughput/bbolt"
	run := func(n int, rate float64) string {
		return fmt.Sprintf("BenchmarkEngineThroughput/bbolt-2\t%d\t1 ns/op\t%g reservations/s\n", n, rate)
	}
	for _, c := range []struct {
		name             string
		in               string
		n, runs          int
		median, min, max float64
		want, not        []string
	}{{
		name: "odd count, last run would miss",
		in:   "goos: linux\n" + run(100, 5200) + run(300, 6000) + run(200, 4000) + "PASS\n",
		n:    200, runs: 3, median: 5200, min: 4000, max: 6000,
		want: []string{
			"| engine: reservations/s, instant provisioner, bbolt (fsync) | >= 5000 /s | 5200 /s (median of 3 runs, 4000–6000) | met |",
			"| EngineThroughput/bbolt | 200 ×3 runs | 1.00 (1.00–1.00) ns/op, 5200 (4000–6000) reservations/s |",
		},
		not: []string{"### Missed"},
	}, {
		name: "odd count, last run would meet",
		in:   run(100, 4000) + run(100, 4500) + run(100, 6000),
		n:    100, runs: 3, median: 4500, min: 4000, max: 6000,
		want: []string{
			"| engine: reservations/s, instant provisioner, bbolt (fsync) | >= 5000 /s | 4500 /s (median of 3 runs, 4000–6000) | **missed** |",
			"- engine: reservations/s, instant provisioner, bbolt (fsync): 4500 /s (median of 3 runs, 4000–6000) against >= 5000 /s.",
		},
	}, {
		name: "even count takes the mean of the middle two",
		in:   run(100, 3000) + run(200, 7000) + run(300, 4000) + run(400, 6000),
		n:    250, runs: 4, median: 5000, min: 3000, max: 7000,
		want: []string{
			"| >= 5000 /s | 5000 /s (median of 4 runs, 3000–7000) | met |",
			"| EngineThroughput/bbolt | 250 ×4 runs | 1.00 (1.00–1.00) ns/op, 5000 (3000–7000) reservations/s |",
		},
	}, {
		name: "a ratio divides medians and shows no range",
		in: run(100, 5000) +
			"BenchmarkContainerProvision-2\t5\t1 ns/op\t260.0 p50-ms\n" +
			"BenchmarkContainerProvision-2\t5\t1 ns/op\t300.0 p50-ms\n" +
			"BenchmarkContainerProvision-2\t5\t1 ns/op\t280.0 p50-ms\n" +
			"BenchmarkRawRuncRun-2\t5\t1 ns/op\t200.0 p50-ms\n",
		n: 100, runs: 1, median: 5000, min: 5000, max: 5000,
		want: []string{
			"| container provision ÷ raw runc (median) | <= 1.3 × | 1.40 × (ratio of medians) | **missed** |",
			"| container provision + decommission (cached image), median | — | 280 ms (median of 3 runs, 260–300) | |",
			"| engine: reservations/s, instant provisioner, bbolt (fsync) | >= 5000 /s | 5000 /s | met |",
			"| EngineThroughput/bbolt | 100 | 1.00 ns/op, 5000 reservations/s |",
			"| ContainerProvision | 5 ×3 runs | 1.00 (1.00–1.00) ns/op, 280 (260–300) p50-ms |",
		},
	}} {
		t.Run(c.name, func(t *testing.T) {
			res, names, err := parse(strings.NewReader(c.in))
			if err != nil {
				t.Fatal(err)
			}
			r := res[bbolt]
			if r == nil || names[0] != bbolt {
				t.Fatalf("parsed %v", names)
			}
			lo, hi, k := r.spread("reservations/s")
			if r.n != c.n || r.runs() != c.runs || k != c.runs || r.metrics["reservations/s"] != c.median || lo != c.min || hi != c.max {
				t.Errorf("n %d runs %d, reservations/s median %g of %d, range %g–%g; want n %d runs %d, median %g, range %g–%g",
					r.n, r.runs(), r.metrics["reservations/s"], k, lo, hi, c.n, c.runs, c.median, c.min, c.max)
			}
			var out bytes.Buffer
			write(&out, res, names, "test", "")
			doc := out.String()
			for _, want := range c.want {
				if !strings.Contains(doc, want) {
					t.Errorf("document lacks %q\n%s", want, doc)
				}
			}
			for _, not := range c.not {
				if strings.Contains(doc, not) {
					t.Errorf("document has %q\n%s", not, doc)
				}
			}
		})
	}
}

func TestOnlyKeepsThePartialRunsTargets(t *testing.T) {
	got := onlyOf(targets, "BenchmarkUserWait")
	if len(got) == 0 || len(got) >= len(targets) {
		t.Fatalf("%d of %d targets kept", len(got), len(targets))
	}
	for _, tg := range got {
		if !strings.HasPrefix(tg.bench, "BenchmarkUserWait") {
			t.Fatalf("kept %s", tg.bench)
		}
	}
	if all := onlyOf(targets, ""); len(all) != len(targets) {
		t.Fatalf("no prefix kept %d of %d", len(all), len(targets))
	}
	var out strings.Builder
	res, names, err := parse(strings.NewReader("BenchmarkUserWait-2 1 100 ns/op 0.5 ratio\n"))
	if err != nil {
		t.Fatal(err)
	}
	saved := targets
	targets = got
	defer func() { targets = saved }()
	write(&out, res, names, "test", "BenchmarkUserWait")
	if s := out.String(); !strings.Contains(s, "# Benchmarks: BenchmarkUserWait") || !strings.Contains(s, "0.5 × | met") || strings.Contains(s, "store:") {
		t.Fatalf("partial doc:\n%s", s)
	}
}

// TestWhyHoldsNoOldFigures keeps figures of earlier runs out of the
// document: the reasons shown for a miss are reasoning, and say so.
func TestWhyHoldsNoOldFigures(t *testing.T) {
	figure := regexp.MustCompile(`\d[\d,.]*\s?(ms|µs|/s|%|MB|MiB|KiB|GiB|×)`)
	for _, tg := range targets {
		if f := figure.FindString(tg.why); f != "" {
			t.Errorf("the reason for %q quotes a figure, %q, that this run did not measure", tg.figure, f)
		}
	}
	res, names, err := parse(strings.NewReader("BenchmarkEngineThroughput/bbolt-2 1 1 ns/op 10 reservations/s\n"))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	write(&out, res, names, "test", "")
	for _, want := range []string{"Every figure below was measured by the run this file records", "(not measured by this run)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("document lacks %q", want)
		}
	}
}
