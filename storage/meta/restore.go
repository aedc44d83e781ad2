package meta

import (
	"errors"
	"fmt"
	"log/slog"

	"go.etcd.io/etcd/etcdutl/v3/snapshot"
)

// restoreRevisionBump is added to the restored store's revision, which is
// then marked compacted (etcd's own disaster-recovery advice): revisions
// never go backwards for anyone who saw the lost cluster, and a watcher
// resuming from an old revision is told to reload rather than fed a history
// that did not happen.
const restoreRevisionBump = 1_000_000_000

// RestoreSnapshot builds the data folder of a new single-member cluster,
// cfg.Name at cfg.PeerURL, from an etcd snapshot file, with etcd's own
// restore (etcdutl). It checks the hash etcd appends to every snapshot it
// streams, and refuses a cfg.DataDir that is not empty. Start the member
// afterwards with ClusterStateNew and the same name and peer URL.
func RestoreSnapshot(snapshotPath string, cfg Config) error {
	if err := validMemberName(cfg.Name); err != nil {
		return fmt.Errorf("restore etcd snapshot: %w", err)
	}
	if _, err := parseHTTPSURL("peer url", cfg.PeerURL); err != nil {
		return fmt.Errorf("restore etcd snapshot: %w", err)
	}
	if cfg.DataDir == "" {
		return errors.New("restore etcd snapshot: no data dir")
	}
	handler := slog.DiscardHandler
	if cfg.Logger != nil {
		handler = cfg.Logger.Handler()
	}
	errs := &errorMemo{}
	lg := newZapLogger(errs.wrap(handler), nil)
	err := snapshot.NewV3(lg).Restore(snapshot.RestoreConfig{
		SnapshotPath:        snapshotPath,
		Name:                cfg.Name,
		OutputDataDir:       cfg.DataDir,
		PeerURLs:            []string{cfg.PeerURL},
		InitialCluster:      cfg.Name + "=" + cfg.PeerURL,
		InitialClusterToken: clusterToken,
		RevisionBump:        restoreRevisionBump,
		MarkCompacted:       true,
	})
	if err != nil {
		return fmt.Errorf("restore etcd snapshot: %w", withReason(err, errs))
	}
	return nil
}
