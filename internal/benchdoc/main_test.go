package main

import (
	"bytes"
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
	write(&out, res, names, "test")
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
