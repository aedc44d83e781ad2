package cli

import (
	"flag"
	"fmt"

	unumv1 "github.com/unumos/unum/api/unum/v1"
)

func runNodeRm(e *env, args []string) error {
	fs := flag.NewFlagSet("unum node rm", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	force := fs.Bool("force", false, "remove a node that is down (not heartbeating) without its cooperation")
	c, err := cf.connect(e, fs, args, 1, "unum node rm NAME [--force]", nil)
	if err != nil {
		return err
	}
	defer c.close()
	resp, err := unumv1.NewClusterClient(c.conn).RemoveNode(c.ctx, &unumv1.RemoveNodeRequest{Name: c.args[0], Force: *force})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "removed node %s: revoked %s", c.args[0], resp.GetRevokedSpiffeId())
	if resp.GetRemovedEtcdMember() {
		fmt.Fprint(e.stderr, ", left etcd")
	}
	fmt.Fprintf(e.stderr, ", deleted %d registration entries\n", resp.GetDeletedEntries())
	return nil
}
