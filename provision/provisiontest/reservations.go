package provisiontest

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/edgeprov/provisiond/provision"
)

// User is a test user with a deterministic ed25519 key, who builds and
// signs reservations.
type User struct {
	// Key is the user's private key.
	Key ed25519.PrivateKey
	// ID is the user's public key, hex encoded (Reservation.UserID).
	ID string
}

// NewUser returns the user of seed (the same seed gives the same key).
func NewUser(seed byte) *User {
	k := ed25519.NewKeyFromSeed(seedBytes(seed))
	return &User{Key: k, ID: hex.EncodeToString(k.Public().(ed25519.PublicKey))}
}

// NewNodeSigner returns the node signer of seed and its public key.
func NewNodeSigner(seed byte) (provision.KeySigner, ed25519.PublicKey) {
	k := ed25519.NewKeyFromSeed(seedBytes(seed ^ 0x80))
	return provision.KeySigner(k), k.Public().(ed25519.PublicKey)
}

func seedBytes(seed byte) []byte {
	b := make([]byte, ed25519.SeedSize)
	for i := range b {
		b[i] = seed + byte(i)
	}
	return b
}

// Reservation builds a reservation of typ with data (encoded to JSON), for
// nodeID, created at created and living for life, signed by u. Its
// Reference is its ID, so that equal specifications under different IDs
// are different reservations (not replays).
func (u *User) Reservation(id, nodeID string, typ provision.ReservationType, data any, created time.Time, life time.Duration) *provision.Reservation {
	raw, err := json.Marshal(data)
	if err != nil {
		panic(fmt.Sprintf("provisiontest: encoding data of %s: %v", id, err))
	}
	r := &provision.Reservation{
		ID: id, NodeID: nodeID, Type: typ, Data: raw,
		Created: created, Duration: life, Version: 1, Reference: id,
	}
	r.Sign(u.Key)
	return r
}

// Volume builds a signed SSD volume reservation of size GiB.
func (u *User) Volume(id, nodeID string, size int64, created time.Time, life time.Duration) *provision.Reservation {
	return u.Reservation(id, nodeID, provision.VolumeReservation, provision.Volume{Size: size, Type: provision.SSD}, created, life)
}

// Network builds a signed network reservation named name.
func (u *User) Network(id, nodeID, name string, created time.Time, life time.Duration) *provision.Reservation {
	return u.Reservation(id, nodeID, provision.NetworkReservation,
		provision.Network{Name: name, IPRange: "10.1.0.0/16", Subnet: "10.1.1.0/24"}, created, life)
}

// Container builds a signed container reservation with cpu cores and
// memory MiB, joining network (a NetworkID, may be empty) and mounting
// volumes (reservation IDs).
func (u *User) Container(id, nodeID string, cpu, memory int64, network string, volumes []string, created time.Time, life time.Duration) *provision.Reservation {
	c := provision.Container{
		Image:       "/images/base.tar",
		ImageDigest: strings.Repeat("ab", 32),
		Entrypoint:  []string{"/bin/sh"},
		Capacity:    provision.ContainerCapacity{CPU: cpu, Memory: memory},
	}
	if network != "" {
		c.Network = provision.ContainerNetwork{NetworkID: network, IP: "10.1.1.10"}
	}
	for i, v := range volumes {
		c.Mounts = append(c.Mounts, provision.Mount{VolumeID: v, Mountpoint: fmt.Sprintf("/data%d", i)})
	}
	return u.Reservation(id, nodeID, provision.ContainerReservation, c, created, life)
}

// Delete returns a copy of r carrying u's signed delete request.
func (u *User) Delete(r *provision.Reservation) *provision.Reservation {
	c := *r
	c.SignDelete(u.Key)
	return &c
}

// Update returns the next version of prev with data (encoded to JSON),
// signed by u: the same ID, node, type, created, duration and reference,
// Version plus one and Previous naming prev's digest.
func (u *User) Update(prev *provision.Reservation, data any) *provision.Reservation {
	raw, err := json.Marshal(data)
	if err != nil {
		panic(fmt.Sprintf("provisiontest: encoding data of %s: %v", prev.ID, err))
	}
	r := &provision.Reservation{
		ID: prev.ID, NodeID: prev.NodeID, Type: prev.Type, Data: raw,
		Created: prev.Created, Duration: prev.Duration, Reference: prev.Reference,
		Version: prev.Version + 1, Previous: prev.Digest(),
	}
	r.Sign(u.Key)
	return r
}
