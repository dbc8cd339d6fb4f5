package provision

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Domain tags separate the kinds of signed messages, so a signature made for
// one can never be accepted as another.
const (
	reservationDomain = "provisiond/reservation/v1"
	deleteDomain      = "provisiond/delete/v1"
	resultDomain      = "provisiond/result/v1"
	networkDomain     = "provisiond/network/v1"
)

// LengthPrefixed concatenates fields, each preceded by its length as a
// big-endian uint32, so that no two different field lists give the same
// bytes. Every canonical signing message of provisiond is built with it.
func LengthPrefixed(fields ...string) []byte {
	n := 0
	for _, f := range fields {
		n += 4 + len(f)
	}
	out := make([]byte, 0, n)
	for _, f := range fields {
		out = binary.BigEndian.AppendUint32(out, uint32(len(f)))
		out = append(out, f...)
	}
	return out
}

// CanonicalData returns the form of a JSON document that signatures cover:
// compacted, with <, >, &, U+2028 and U+2029 escaped as encoding/json emits
// them. The form is idempotent under re-encoding by encoding/json, so a
// relay that re-marshals a reservation cannot break its signature. Data that
// is not valid JSON is returned unchanged (and then fails validation).
func CanonicalData(data []byte) []byte {
	if len(data) == 0 {
		return nil
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, data); err != nil {
		return data
	}
	var out bytes.Buffer
	json.HTMLEscape(&out, compact.Bytes())
	return out.Bytes()
}

func formatTime(t time.Time) string {
	return t.UTC().Format(time.RFC3339Nano)
}

// Challenge returns the canonical bytes the owner signs: the domain tag
// "provisiond/reservation/v1", then node_id, user_id, type, created (UTC,
// RFC 3339 nano), duration (decimal nanoseconds), reference, version
// (decimal), data (CanonicalData) and, for an update only, previous (the
// digest of the version it replaces), each length-prefixed. ID is not
// covered: the explorer assigns it after signing.
func (r *Reservation) Challenge() []byte {
	if r.Previous != "" {
		return append(r.challenge(), LengthPrefixed(r.Previous)...)
	}
	return r.challenge()
}

func (r *Reservation) challenge() []byte {
	return LengthPrefixed(reservationDomain,
		r.NodeID,
		r.UserID,
		string(r.Type),
		formatTime(r.Created),
		strconv.FormatInt(int64(r.Duration), 10),
		r.Reference,
		strconv.FormatUint(uint64(r.Version), 10),
		string(CanonicalData(r.Data)),
	)
}

// Sign signs the reservation's challenge with the owner's key and sets UserID
// and Signature. Invalid UTF-8 in ID, NodeID, Type and Reference is first
// replaced as encoding/json would transmit it (see jsonString), so the
// signature survives the trip to the node.
func (r *Reservation) Sign(key ed25519.PrivateKey) {
	r.ID, r.NodeID, r.Reference = jsonString(r.ID), jsonString(r.NodeID), jsonString(r.Reference)
	r.Previous = jsonString(r.Previous)
	r.Type = ReservationType(jsonString(string(r.Type)))
	r.UserID = hex.EncodeToString(key.Public().(ed25519.PublicKey))
	r.Signature = hex.EncodeToString(ed25519.Sign(key, r.Challenge()))
}

// Verify checks Signature against UserID over the challenge.
func (r *Reservation) Verify() error {
	return verifyHex(r.UserID, r.Signature, r.Challenge(), ErrBadSignature)
}

// DeleteChallenge returns the canonical bytes an owner signs to delete a
// reservation early: the domain tag "provisiond/delete/v1", the ID and the
// digest, each length-prefixed.
func DeleteChallenge(id, digest string) []byte {
	return LengthPrefixed(deleteDomain, id, digest)
}

// SignDelete marks the reservation for deletion with the owner's signature.
func (r *Reservation) SignDelete(key ed25519.PrivateKey) {
	r.ToDelete = true
	r.DeleteSignature = hex.EncodeToString(ed25519.Sign(key, DeleteChallenge(r.ID, r.Digest())))
}

// VerifyDelete checks DeleteSignature against UserID over DeleteChallenge.
func (r *Reservation) VerifyDelete() error {
	return verifyHex(r.UserID, r.DeleteSignature, DeleteChallenge(r.ID, r.Digest()), ErrBadDeleteSignature)
}

// Bytes returns the canonical bytes a node signs for a result: the domain tag
// "provisiond/result/v1", node_id, id, digest, version (decimal), state,
// created (UTC, RFC 3339 nano), message and data (CanonicalData), each
// length-prefixed.
func (r *Result) Bytes() []byte {
	return LengthPrefixed(resultDomain,
		r.NodeID,
		r.ID,
		r.Digest,
		strconv.FormatUint(uint64(r.Version), 10),
		string(r.State),
		formatTime(r.Created),
		r.Message,
		string(CanonicalData(r.Data)),
	)
}

// Sign signs the result with the node's signer and sets Signature. Invalid
// UTF-8 in the string fields (an error message naming a file, an ID a
// malformed reservation carried) is first replaced as encoding/json would
// transmit it (see jsonString), so the explorer can verify what it receives.
func (r *Result) Sign(s Signer) error {
	r.Type = ReservationType(jsonString(string(r.Type)))
	r.ID, r.NodeID, r.Digest = jsonString(r.ID), jsonString(r.NodeID), jsonString(r.Digest)
	r.State = ResultState(jsonString(string(r.State)))
	r.Message = jsonString(r.Message)
	sig, err := s.Sign(r.Bytes())
	if err != nil {
		return fmt.Errorf("signing result %s: %w", r.ID, err)
	}
	r.Signature = hex.EncodeToString(sig)
	return nil
}

// Verify checks the result's Signature with the node's public key.
func (r *Result) Verify(nodeKey ed25519.PublicKey) error {
	sig, err := hex.DecodeString(r.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: result signature is not %d hex-encoded bytes", ErrBadResultSignature, ed25519.SignatureSize)
	}
	if len(nodeKey) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: node key is not %d bytes", ErrBadResultSignature, ed25519.PublicKeySize)
	}
	if !ed25519.Verify(nodeKey, r.Bytes(), sig) {
		return fmt.Errorf("%w: result %s", ErrBadResultSignature, r.ID)
	}
	return nil
}

// KeySigner signs with an ed25519 private key held in memory.
type KeySigner ed25519.PrivateKey

var _ Signer = KeySigner(nil)

// Sign returns the ed25519 signature of msg.
func (k KeySigner) Sign(msg []byte) ([]byte, error) {
	if len(k) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("provision: signer key is %d bytes, want %d", len(k), ed25519.PrivateKeySize)
	}
	return ed25519.Sign(ed25519.PrivateKey(k), msg), nil
}

// jsonString returns s as it reads after an encoding/json round trip: each
// byte that is not part of valid UTF-8 becomes U+FFFD (as json.Marshal
// writes it), other text is unchanged. Signers apply it to string fields so
// that what they sign is what the receiver decodes.
func jsonString(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

func verifyHex(pubHex, sigHex string, msg []byte, sentinel error) error {
	pub, err := hex.DecodeString(pubHex)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: user_id is not a hex-encoded ed25519 public key", sentinel)
	}
	sig, err := hex.DecodeString(sigHex)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: signature is not %d hex-encoded bytes", sentinel, ed25519.SignatureSize)
	}
	if !ed25519.Verify(pub, msg, sig) {
		return fmt.Errorf("%w: does not verify against user_id", sentinel)
	}
	return nil
}
