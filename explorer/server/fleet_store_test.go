package server_test

import (
	"testing"

	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/explorer/server/storetest"
)

func TestBoltFleetConformance(t *testing.T) {
	storetest.RunFleet(t, func(t *testing.T) server.Store {
		s, err := server.OpenBolt(t.TempDir(), true)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
