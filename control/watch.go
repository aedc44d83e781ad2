package control

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// feed runs follow until ctx ends, starting it again (after a short pause)
// whenever it fails: the control node's views are fed for as long as the
// server runs.
func (s *Server) feed(ctx context.Context, what string, follow func(context.Context) error) {
	for ctx.Err() == nil {
		if err := follow(ctx); err != nil && ctx.Err() == nil {
			s.cfg.Log.Warn(what+" interrupted", "err", err)
			sleep(ctx, 200*time.Millisecond)
		}
	}
}

// watchFrom follows the keys under prefix from etcd revision from+1 until
// ctx ends (nil) or the watch fails (an error naming what). Every batch of
// events goes to onEvents. A progress notification is requested every
// progressEvery; it answers only while the watch is current and the member
// reaches its leader (wctx carries WithRequireLeader), and each one calls
// onProgress: that is how a quiet feed proves it is still current.
func (s *Server) watchFrom(ctx, wctx context.Context, what, prefix string, from int64, onEvents func(clientv3.WatchResponse) error, onProgress func()) error {
	wch := s.cfg.Etcd.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(from+1), clientv3.WithProgressNotify())
	tick := time.NewTicker(progressEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			// Answered by a progress notification on wch when the watch
			// is current; an error here means the member is unreachable.
			if err := s.cfg.Etcd.RequestProgress(wctx); err != nil {
				return fmt.Errorf("request watch progress: %w", err)
			}
		case wr, ok := <-wch:
			if !ok {
				return errors.New(what + " watch closed")
			}
			if err := wr.Err(); err != nil {
				return fmt.Errorf("%s watch: %w", what, err)
			}
			if wr.IsProgressNotify() {
				onProgress()
				continue
			}
			if err := onEvents(wr); err != nil {
				return err
			}
		}
	}
}
