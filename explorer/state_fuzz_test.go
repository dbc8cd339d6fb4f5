package explorer

import (
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
)

// FuzzDecodeState checks the client's decoder of the state snapshot, which
// comes from the explorer (not trusted): it never panics, and what it
// accepts names the node, has low ≤ seq, strictly increasing IDs and hex
// sha256 digests, and encodes back to a snapshot it accepts again.
func FuzzDecodeState(f *testing.F) {
	const node = "6MxTXfeV1J6YBX7mbvcsNrz6cr6Z8nxmGZrzFGq3Dsta"
	d := strings.Repeat("ab", 32)
	f.Add(`{"node_id":"` + node + `","seq":4,"low":2,"reservations":[{"id":"a","digest":"` + d + `","version":1},{"id":"b","digest":"` + d + `"}]}`)
	f.Add(`{"node_id":"` + node + `","seq":0,"low":0,"reservations":null}`)
	f.Add(`{"node_id":"` + node + `","seq":1,"low":2}`)
	f.Add(`{"node_id":"` + node + `","reservations":[{"id":"b","digest":"` + d + `"},{"id":"a","digest":"` + d + `"}]}`)
	f.Add(`{"node_id":"other"}`)
	f.Add(`[`)
	f.Fuzz(func(t *testing.T, raw string) {
		st, err := decodeState([]byte(raw), node)
		if err != nil {
			if st != nil {
				t.Fatal("a refused snapshot was returned")
			}
			return
		}
		if st.NodeID != node || st.Low > st.Seq || st.Reservations == nil {
			t.Fatalf("accepted %+v", st)
		}
		for i, e := range st.Reservations {
			if b, err := hex.DecodeString(e.Digest); err != nil || len(b) != 32 || e.ID == "" || (i > 0 && e.ID <= st.Reservations[i-1].ID) {
				t.Fatalf("accepted entry %d %+v", i, e)
			}
		}
		again, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodeState(again, node); err != nil {
			t.Fatalf("the re-encoded snapshot is refused: %v", err)
		}
	})
}
