package provision_test

import (
	"crypto/ed25519"
	"strings"
	"testing"

	"github.com/edgeprov/provisiond/provision"
)

func BenchmarkSign(b *testing.B) {
	f := newFixture(b)
	r := f.unsigned(provision.ContainerReservation)
	for b.Loop() {
		r.Sign(f.user)
	}
}

func BenchmarkVerify(b *testing.B) {
	f := newFixture(b)
	r := f.signed(b, provision.ContainerReservation)
	for b.Loop() {
		if err := r.Verify(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkResultSign(b *testing.B) {
	f := newFixture(b)
	res := f.result(b, f.signed(b, provision.VolumeReservation), provision.StateOk, "", `{"path":"/var/lib/provisiond/volumes/prv-r-volume"}`)
	signer := provision.KeySigner(f.node)
	for b.Loop() {
		if err := res.Sign(signer); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkResultVerify(b *testing.B) {
	f := newFixture(b)
	res := f.result(b, f.signed(b, provision.VolumeReservation), provision.StateOk, "", `{"path":"/var/lib/provisiond/volumes/prv-r-volume"}`)
	pub := f.node.Public().(ed25519.PublicKey)
	for b.Loop() {
		if err := res.Verify(pub); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkValidate(b *testing.B) {
	f := newFixture(b)
	for _, typ := range provision.Types {
		b.Run(string(typ), func(b *testing.B) {
			r := f.signed(b, typ)
			for b.Loop() {
				if err := provision.Validate(r, f.nodeID, f.now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkCanonicalData(b *testing.B) {
	data := []byte(newFixture(b).containerData())
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		provision.CanonicalData(data)
	}
}

// BenchmarkDecodeData decodes a container's Data, with an environment and
// mounts, as every ingested reservation's Data is decoded.
func BenchmarkDecodeData(b *testing.B) {
	data := []byte(`{
  "image": "https://images.example.com/alpine-3.20.tar",
  "image_digest": "sha256:` + strings.Repeat("ab", 32) + `",
  "entrypoint": ["/bin/sh", "-c", "echo <hi> & bye"],
  "env": {"GREETING": "hello", "PATH": "/usr/bin:/bin", "path": "lower", "HOME": "/root"},
  "mounts": [{"volume_id": "r-volume", "mountpoint": "/data"}, {"volume_id": "r-logs", "mountpoint": "/var/log/app"}],
  "network": {"network_id": "0123456789abcdef", "ip": "10.20.3.5"},
  "capacity": {"cpu": 1, "memory": 256, "disk_size": 1024}
}`)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		var c provision.Container
		if err := provision.DecodeData(data, &c); err != nil {
			b.Fatal(err)
		}
	}
}
