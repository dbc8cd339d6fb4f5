package explorer

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/edgeprov/provisiond/provision"
)

// ChangeToken returns a short token of what a user watches of r: its
// node's latest result (its signature), its delivery to the node and its
// delete flag. A client passes it as after= to GET
// /api/v1/reservations/{id}, which then answers only when the token
// changed (or the wait passed).
func ChangeToken(r *provision.Reservation) string {
	h := sha256.New()
	writeToken(h, r)
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// ListToken is ChangeToken for a user's list of reservations (in the
// order the explorer lists them): it changes when any of them changes, or
// one is added.
func ListToken(list []*provision.Reservation) string {
	h := sha256.New()
	for _, r := range list {
		writeToken(h, r)
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

func writeToken(h interface{ Write([]byte) (int, error) }, r *provision.Reservation) {
	field := func(s string) {
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(s))))
		h.Write([]byte(s))
	}
	field(r.ID)
	if r.Result != nil {
		field(r.Result.Signature)
	} else {
		field("")
	}
	if r.Delivered != nil {
		field(r.Delivered.UTC().Format(time.RFC3339Nano))
	} else {
		field("")
	}
	if r.ToDelete {
		field("delete")
	} else {
		field("")
	}
}

// WaitReservation returns reservation id once its ChangeToken differs from
// after, or when wait passed (the server caps it at MaxWait), whichever
// comes first: the reservation as it then is. An empty after answers at
// once, like GetReservation.
func (c *Client) WaitReservation(ctx context.Context, id, after string, wait time.Duration) (*provision.Reservation, error) {
	q := url.Values{}
	if after != "" && wait > 0 {
		q.Set("after", after)
		q.Set("wait", wait.String())
	}
	path := "/api/v1/reservations/" + url.PathEscape(id)
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var r provision.Reservation
	if err := c.do(ctx, http.MethodGet, path, nil, &r, min(wait, MaxWait)+c.opts.Timeout, maxUserReplySize); err != nil {
		return nil, err
	}
	if r.ID != id {
		return nil, provision.Temporary(fmt.Errorf("reading reservation %s: %w: the reply is reservation %q", id, ErrBadReply, r.ID))
	}
	return &r, nil
}

// WaitReservations returns the reservations of user (the client's own when
// empty) once their ListToken differs from after, or when wait passed.
func (c *Client) WaitReservations(ctx context.Context, user, after string, wait time.Duration) ([]*provision.Reservation, error) {
	if user == "" {
		user = hex.EncodeToString(c.key.Public().(ed25519.PublicKey))
	}
	q := url.Values{"user": {user}}
	if after != "" && wait > 0 {
		q.Set("after", after)
		q.Set("wait", wait.String())
	}
	var reply ReservationsReply
	if err := c.do(ctx, http.MethodGet, "/api/v1/reservations?"+q.Encode(), nil, &reply, min(wait, MaxWait)+c.opts.Timeout, maxUserReplySize); err != nil {
		return nil, err
	}
	return reply.Reservations, nil
}
