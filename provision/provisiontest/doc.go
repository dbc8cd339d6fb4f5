// Package provisiontest holds fakes of the interfaces the provision Engine
// consumes, and the conformance suites every real implementation must pass.
//
// NewStore returns an in-memory provision.Store with the same semantics as
// the bbolt store of package cache; RunStoreSuite is the one conformance
// suite both run, so a behaviour the Engine relies on is pinned down once.
package provisiontest
