package provctl

import (
	"slices"
	"strings"
	"testing"

	"github.com/edgeprov/provisiond/provision"
)

func TestFlagsFirst(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"flags-after-id", "provctl watch ID --until ok --timeout 2m", "provctl watch --until ok --timeout 2m ID"},
		{"globals-kept", "provctl --explorer http://x --key k get ID --json", "provctl --explorer http://x --key k get --json ID"},
		{"already-ordered", "provctl delete --help", "provctl delete --help"},
		{"equals-form", "provctl watch ID --until=deleted", "provctl watch --until=deleted ID"},
		{"subcommand-path", "provctl reserve volume --node N --size 1", "provctl reserve volume --node N --size 1"},
		{"network-path", "provctl network access --name web", "provctl network access --name web"},
		{"double-dash", "provctl get -- -odd-id", "provctl get -odd-id"},
		{"no-command", "provctl", "provctl"},
		{"dangling-flag", "provctl watch ID --until", "provctl watch --until ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := flagsFirst(strings.Fields(tt.in))
			if !slices.Equal(got, strings.Fields(tt.want)) {
				t.Fatalf("flagsFirst(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestSplitWords(t *testing.T) {
	tests := []struct {
		in   string
		want []string
		err  bool
	}{
		{"pg_isready -q", []string{"pg_isready", "-q"}, false},
		{`  sh  -c 'test -f /x && echo "ok"'  `, []string{"sh", "-c", `test -f /x && echo "ok"`}, false},
		{`a"b c"d e\ f`, []string{"ab cd", "e f"}, false},
		{`"say \"hi\" \\ \n"`, []string{`say "hi" \ \n`}, false},
		{`''`, []string{""}, false},
		{"", nil, true},
		{"   ", nil, true},
		{"'open", nil, true},
		{`"open`, nil, true},
		{`end\`, nil, true},
	}
	for _, tt := range tests {
		got, err := splitWords(tt.in)
		if (err != nil) != tt.err || !slices.Equal(got, tt.want) {
			t.Errorf("splitWords(%q) = %q, %v; want %q (error %v)", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestContainerStatus(t *testing.T) {
	ok := func(data string) *provision.Result {
		return &provision.Result{State: provision.StateOk, Data: []byte(data)}
	}
	tests := []struct {
		name string
		typ  provision.ReservationType
		res  *provision.Result
		want string
	}{
		{"running", provision.ContainerReservation, ok(`{"id":"c","ip":"","state":"running","health":"healthy"}`), "running, healthy, 0 restarts"},
		{"exited", provision.ContainerReservation,
			ok(`{"id":"c","ip":"","state":"exited","restarts":2,"last_exit":{"code":7,"at":"2030-01-01T00:00:00Z","reason":"exited"}}`),
			"exited, 2 restarts, last exit: exited (code 7) at 2030-01-01T00:00:00Z"},
		{"unknown-code", provision.ContainerReservation,
			ok(`{"id":"c","ip":"","state":"restarting","restarts":1,"last_exit":{"code":-1,"at":"2030-01-01T00:00:00Z","reason":"exited"}}`),
			"restarting, 1 restarts, last exit: exited (code unknown) at 2030-01-01T00:00:00Z"},
		{"earlier-release", provision.ContainerReservation, ok(`{"id":"c","ip":"10.0.0.2"}`), ""},
		{"volume", provision.VolumeReservation, ok(`{"state":"running"}`), ""},
		{"error", provision.ContainerReservation, &provision.Result{State: provision.StateError}, ""},
	}
	for _, tt := range tests {
		if got := containerStatus(tt.typ, tt.res); got != tt.want {
			t.Errorf("%s: containerStatus = %q, want %q", tt.name, got, tt.want)
		}
	}
}
