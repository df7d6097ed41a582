package fec

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that nothing here, the Reed-Solomon code included, leaves
// a goroutine behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
