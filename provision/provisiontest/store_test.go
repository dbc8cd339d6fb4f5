package provisiontest

import (
	"testing"

	"github.com/edgeprov/provisiond/provision"
)

func TestStore(t *testing.T) {
	RunStoreSuite(t, func(testing.TB) provision.Store { return NewStore() })
}
