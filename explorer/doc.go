// Package explorer is the node's and the user's side of the Explorer API v1
// (docs/explorer-api.md): the wire types, the request signing scheme and
// Client, which implements provision.Poller, provision.Feedbacker and
// provision.BatchFeedbacker (many results per request) for the daemon and
// the reservation calls for provctl.
//
// # Request signing
//
// Every request carries four headers: X-Provisiond-Key (the signer's node
// ID in base58, or a user's hex public key), X-Provisiond-Timestamp (unix
// seconds), X-Provisiond-Nonce (16 random bytes, hex) and
// X-Provisiond-Signature, the hex ed25519 signature over
//
//	"provisiond/request/v1", method, request URI (path and raw query),
//	timestamp, nonce, hex sha256(body)
//
// each field preceded by its length as a big-endian uint32. The server
// refuses a timestamp further than MaxSkew from its clock and remembers
// every signature until it is stale, so a captured request cannot be
// replayed. The nonce makes two identical requests sent in the same second
// distinct (ed25519 signatures are deterministic).
//
// The server lives in explorer/server, a test fixture in explorer/explorertest
// and the user's command line in explorer/provctl.
package explorer
