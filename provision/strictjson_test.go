package provision_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/provision"
)

// containerJSON is a valid container's Data with env and mounts replaced.
func containerJSON(env, mounts string) string {
	return `{"image":"/images/a.tar","image_digest":"` + strings.Repeat("ab", 32) + `","entrypoint":["/bin/sh"],` +
		`"env":` + env + `,"mounts":` + mounts + `,` +
		`"network":{"network_id":"","ip":""},"capacity":{"cpu":1,"memory":256,"disk_size":0}}`
}

// manyEnv returns an env object of n keys K0…K(n-1), then extra.
func manyEnv(n int, extra string) string {
	var b strings.Builder
	b.WriteString("{")
	for i := range n {
		fmt.Fprintf(&b, `"K%d":"v",`, i)
	}
	b.WriteString(extra + "}")
	return b.String()
}

// Embedded, tagged and skipped fields for the generic cases.
type (
	strictInner struct {
		Deep string `json:"deep"`
	}
	strictOuter struct {
		strictInner
		Plain  int             // untagged: its JSON name is Plain
		Skip   int             `json:"-"`
		Opt    string          `json:"opt,omitempty"`
		Raw    json.RawMessage `json:"raw"`
		Any    any             `json:"any"`
		When   time.Time       `json:"when"`
		Nested *strictInner    `json:"nested"`
		List   [2]strictInner  `json:"list"`
	}
)

func TestDecodeDataKeys(t *testing.T) {
	tests := []struct {
		name string
		new  func() any // the target
		in   string
		want any    // the decoded value, when the document is accepted
		err  string // else a part of the error
	}{
		// Valid documents of each type.
		{"network", func() any { return new(provision.Network) }, networkData,
			&provision.Network{Name: "office", IPRange: "10.20.0.0/16", Subnet: "10.20.3.0/24"}, ""},
		{"volume", func() any { return new(provision.Volume) }, volumeData, &provision.Volume{Size: 10, Type: provision.SSD}, ""},
		{"container", func() any { return new(provision.Container) },
			containerJSON(`{"GREETING":"hi"}`, `[{"volume_id":"a","mountpoint":"/a"},{"volume_id":"b","mountpoint":"/b"}]`),
			&provision.Container{Image: "/images/a.tar", ImageDigest: strings.Repeat("ab", 32), Entrypoint: []string{"/bin/sh"},
				Env:      map[string]string{"GREETING": "hi"},
				Mounts:   []provision.Mount{{VolumeID: "a", Mountpoint: "/a"}, {VolumeID: "b", Mountpoint: "/b"}},
				Capacity: provision.ContainerCapacity{CPU: 1, Memory: 256}}, ""},
		{"null", func() any { return new(provision.Volume) }, `null`, &provision.Volume{}, ""},
		{"whitespace-around-keys", func() any { return new(provision.Volume) }, "{ \"size\" :\n1 ,\t\"type\" : \"hdd\" }",
			&provision.Volume{Size: 1, Type: provision.HDD}, ""},
		{"escaped-key", func() any { return new(provision.Volume) }, `{"si\u007ae":2,"\u0074ype":"ssd"}`,
			&provision.Volume{Size: 2, Type: provision.SSD}, ""},
		{"env-case-different-keys", func() any { return new(provision.Container) }, containerJSON(`{"PATH":"/bin","path":"x","Path":"y"}`, `[]`),
			&provision.Container{Image: "/images/a.tar", ImageDigest: strings.Repeat("ab", 32), Entrypoint: []string{"/bin/sh"},
				Env:      map[string]string{"PATH": "/bin", "path": "x", "Path": "y"},
				Mounts:   []provision.Mount{},
				Capacity: provision.ContainerCapacity{CPU: 1, Memory: 256}}, ""},
		{"env-quotes-and-braces-in-strings", func() any { return new(map[string]string) }, `{"a\"}":"\"}{","b\\":"\\\\\"","\\\"":""}`,
			&map[string]string{`a"}`: `"}{`, `b\`: `\\"`, `\"`: ""}, ""},
		{"many-env-keys", func() any { return new(map[string]string) }, manyEnv(40, `"k0":"case"`), func() any {
			m := map[string]string{"k0": "case"}
			for i := range 40 {
				m[fmt.Sprint("K", i)] = "v"
			}
			return &m
		}(), ""},

		// Duplicate keys.
		{"duplicate-top-level", func() any { return new(provision.Volume) }, `{"size":1,"type":"ssd","size":100000}`, nil,
			`duplicate key "size"`},
		{"duplicate-same-value", func() any { return new(provision.Volume) }, `{"type":"ssd","type":"ssd"}`, nil, `duplicate key "type"`},
		{"duplicate-escaped", func() any { return new(provision.Volume) }, `{"size":1,"type":"ssd","si\u007ae":100000}`, nil,
			`duplicate key "size"`},
		{"duplicate-in-capacity", func() any { return new(provision.Container) },
			strings.Replace(containerJSON(`{}`, `[]`), `"cpu":1`, `"cpu":1,"cpu":64`, 1), nil, `duplicate key "cpu" in capacity`},
		{"duplicate-in-mount", func() any { return new(provision.Container) },
			containerJSON(`{}`, `[{"volume_id":"a","mountpoint":"/a"},{"volume_id":"b","mountpoint":"/b","mountpoint":"/etc"}]`), nil,
			`duplicate key "mountpoint" in mounts[1]`},
		{"duplicate-env", func() any { return new(provision.Container) }, containerJSON(`{"PATH":"/bin","path":"x","PATH":"/evil"}`, `[]`),
			nil, `duplicate key "PATH" in env`},
		{"duplicate-env-escaped", func() any { return new(provision.Container) }, containerJSON(`{"PATH":"/bin","P\u0041TH":"/evil"}`, `[]`),
			nil, `duplicate key "PATH" in env`},
		{"duplicate-env-escaped-replacement", func() any { return new(provision.Container) }, containerJSON(`{"A\ufffd":"1","A\uFFFD":"2"}`, `[]`),
			nil, "duplicate key \"A\ufffd\" in env"},

		// Bytes that are not UTF-8, anywhere: encoding/json would read them
		// as U+FFFD, a strict reader would refuse the document.
		{"invalid-utf8-key", func() any { return new(provision.Container) }, containerJSON("{\"A\xff\":\"1\",\"A\xfe\":\"2\"}", `[]`),
			nil, "not valid UTF-8"},
		{"invalid-utf8-value", func() any { return new(provision.Volume) }, "{\"size\":1,\"type\":\"ss\xffd\"}", nil, "not valid UTF-8 (at byte 20)"},
		{"invalid-utf8-in-raw", func() any { return new(strictOuter) }, "{\"raw\":\"\xc0\x80\"}", nil, "not valid UTF-8 (at byte 8)"},
		{"truncated-utf8", func() any { return new(map[string]string) }, "{\"a\":\"\xe2\x82\"}", nil, "not valid UTF-8"},
		{"duplicate-env-after-many", func() any { return new(provision.Container) }, containerJSON(manyEnv(40, `"K3":"again"`), `[]`),
			nil, `duplicate key "K3" in env`},
		{"duplicate-env-many-at-boundary", func() any { return new(map[string]string) }, manyEnv(16, `"K15":"again"`),
			nil, `duplicate key "K15"`},

		// Field names in another case.
		{"upper-case-field", func() any { return new(provision.Volume) }, `{"SIZE":1,"type":"ssd"}`, nil,
			`field "SIZE": use "size" (field names are case-sensitive)`},
		{"case-variant-beside-field", func() any { return new(provision.Volume) }, `{"size":1,"Size":2,"type":"ssd"}`, nil,
			`field "Size": use "size"`},
		{"case-variant-before-field", func() any { return new(provision.Volume) }, `{"Size":2,"size":1,"type":"ssd"}`, nil,
			`field "Size": use "size"`},
		{"unicode-fold-field", func() any { return new(provision.Volume) }, `{"ſize":1,"type":"ssd"}`, nil, `field "ſize": use "size"`},
		{"case-in-capacity", func() any { return new(provision.Container) },
			strings.Replace(containerJSON(`{}`, `[]`), `"cpu"`, `"CPU"`, 1), nil, `field "CPU" in capacity: use "cpu"`},
		{"case-in-mount", func() any { return new(provision.Container) },
			containerJSON(`{}`, `[{"volume_id":"a","mountpoint":"/a"},{"Volume_ID":"b","mountpoint":"/b"}]`), nil,
			`field "Volume_ID" in mounts[1]: use "volume_id"`},
		{"unknown-field", func() any { return new(provision.Volume) }, `{"size ":1}`, nil, `unknown field "size "`},

		// Embedded, untagged, skipped and opaque fields.
		{"generic-valid", func() any { return new(strictOuter) },
			`{"deep":"d","Plain":1,"opt":"o","raw":{"a":1,"A":2},"any":[{"b":1,"B":2}],"when":"2025-01-02T03:04:05Z",` +
				`"nested":{"deep":"n"},"list":[{"deep":"0"},{"deep":"1"}]}`,
			&strictOuter{strictInner: strictInner{Deep: "d"}, Plain: 1, Opt: "o", Raw: json.RawMessage(`{"a":1,"A":2}`),
				Any: []any{map[string]any{"b": 1.0, "B": 2.0}}, When: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
				Nested: &strictInner{Deep: "n"}, List: [2]strictInner{{Deep: "0"}, {Deep: "1"}}}, ""},
		{"generic-embedded-case", func() any { return new(strictOuter) }, `{"Deep":"d"}`, nil, `field "Deep": use "deep"`},
		{"generic-untagged-case", func() any { return new(strictOuter) }, `{"plain":1}`, nil, `field "plain": use "Plain"`},
		{"generic-skipped", func() any { return new(strictOuter) }, `{"Skip":1}`, nil, `unknown field "Skip"`},
		{"generic-duplicate-in-raw", func() any { return new(strictOuter) }, `{"raw":{"a":{"x":1,"x":2}}}`, nil,
			`duplicate key "x" in raw.a`},
		{"generic-duplicate-in-any", func() any { return new(strictOuter) }, `{"any":[0,[{"b":1,"b":2}]]}`, nil,
			`duplicate key "b" in any[1][0]`},
		{"generic-duplicate-odd-key", func() any { return new(any) }, `{"a b":{"x":1,"x":2}}`, nil, `duplicate key "x" in ["a b"]`},
		{"generic-case-in-nested-pointer", func() any { return new(strictOuter) }, `{"nested":{"DEEP":"x"}}`, nil,
			`field "DEEP" in nested: use "deep"`},
		{"generic-case-in-array", func() any { return new(strictOuter) }, `{"list":[{},{"Deep":"x"}]}`, nil,
			`field "Deep" in list[1]: use "deep"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.new()
			err := provision.DecodeData([]byte(tt.in), got)
			if tt.err != "" {
				if !errors.Is(err, provision.ErrBadData) || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("DecodeData(%s) = %v, want ErrBadData with %q", tt.in, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeData(%s) = %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("DecodeData(%s) gives %#v, want %#v", tt.in, got, tt.want)
			}
		})
	}
}

// strictSelf embeds a pointer to itself, as encoding/json allows.
type strictSelf struct {
	*strictSelf
	Name string `json:"name"`
}

func TestDecodeDataSelfEmbedding(t *testing.T) {
	var v strictSelf
	if err := provision.DecodeData([]byte(`{"name":"a"}`), &v); err != nil || v.Name != "a" || v.strictSelf != nil {
		t.Fatalf("DecodeData() = %v, %+v", err, v)
	}
	if err := provision.DecodeData([]byte(`{"Name":"a"}`), &v); !errors.Is(err, provision.ErrBadData) {
		t.Fatalf("DecodeData() = %v, want ErrBadData", err)
	}
}

// TestDecodeDataAmbiguous: what other JSON readers would read differently
// (a key twice, a name in another case, bytes that are not UTF-8) wraps
// ErrAmbiguousJSON; other malformed data only ErrBadData.
func TestDecodeDataAmbiguous(t *testing.T) {
	for in, ambiguous := range map[string]bool{
		`{"size":1,"size":2}`:           true,
		`{"SIZE":1}`:                    true,
		"{\"type\":\"s\xffd\"}":         true,
		`{"size":1,"path":"/etc"}`:      false,
		`{"size":"big"}`:                false,
		`{"size":1.5}`:                  false,
		`[1]`:                           false,
		`{"size":1,"type":"ssd"} {"x"}`: false,
	} {
		err := provision.DecodeData([]byte(in), new(provision.Volume))
		if !errors.Is(err, provision.ErrBadData) || errors.Is(err, provision.ErrAmbiguousJSON) != ambiguous {
			t.Errorf("DecodeData(%s) = %v; want ErrBadData, ErrAmbiguousJSON %v", in, err, ambiguous)
		}
	}
}
