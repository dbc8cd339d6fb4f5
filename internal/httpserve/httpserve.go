// Package httpserve serves an http.Handler on a listener until a context
// ends, then shuts it down gracefully.
package httpserve

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"
)

// ShutdownGrace is how long in-flight requests may take after ctx ended.
const ShutdownGrace = 5 * time.Second

// Serve serves h on ln until ctx ends, then shuts down within
// ShutdownGrace and returns nil; it returns the error that stopped serving
// otherwise. ln is closed on return.
func Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-ctx.Done():
		case <-stop: // Serve failed on its own: nothing to shut down
			return
		}
		shut, cancel := context.WithTimeout(context.Background(), ShutdownGrace)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	err := srv.Serve(ln)
	close(stop)
	<-done
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
