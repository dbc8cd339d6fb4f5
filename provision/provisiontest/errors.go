package provisiontest

import "errors"

// Errors the fakes return.
var (
	ErrInjected = errors.New("provisiontest: injected failure")
	ErrDown     = errors.New("provisiontest: explorer down")
	ErrRefused  = errors.New("provisiontest: explorer refused")
	ErrCrashed  = errors.New("provisiontest: store crashed")
)
