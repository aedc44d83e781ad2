package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"time"

	"github.com/unumos/unum/node"
)

const recoverHelp = `unum admin recover: break-glass recovery of the built-in admin.

Mints a fresh, short-lived admin client config (spiffe://TD/user/admin) from
the local CA material of a control node, without asking the cluster: for when
the admin config was lost, or stolen (then first: unum user revoke admin).
It needs what running that control node needs: read access to its data
folder's keys and the key-encryption key (--kek-file). Anyone who has both
can already sign any certificate, so this grants nothing new; it only makes
it a documented, loud step: every use is recorded in the node's audit log
(recovery.admin) before the config is written, logged as a WARN line and
printed on the terminal. With the node running, the node records it (this
command waits for that); with it stopped, this command opens its log. When
it cannot be recorded, no config is written.

Run it on the control node, as the user that runs it:

  unum admin recover --data-dir DIR --kek-file PATH [--out FILE] [--ttl 1h]

The config goes to --out (default DIR/admin.yaml, replaced atomically, 0600)
and names the node's own API address and the control addresses it knows.
After unum user revoke admin, wait until the time it printed has passed:
a credential minted before then is refused like the revoked ones.

`

func runAdminRecover(e *env, args []string) error {
	fs := flag.NewFlagSet("unum admin recover", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "", "the control node's data folder (required)")
	kekFile := fs.String("kek-file", "", "the node's key-encryption key file (required)")
	out := fs.String("out", "", "where to write the admin config (default DIR/admin.yaml)")
	ttl := fs.Duration("ttl", node.DefaultRecoverTTL, fmt.Sprintf("certificate lifetime (%s to %s)", node.MinRecoverTTL, node.AdminCertTTL))
	pos, err := parseFlags(fs, args)
	if err != nil {
		if wantsHelp(args) {
			fmt.Fprint(e.stderr, recoverHelp+flagUsage(fs))
			return nil
		}
		return err
	}
	if err := noArgs(pos); err != nil {
		return err
	}
	switch {
	case *dataDir == "":
		return usagef("--data-dir is required (see unum admin recover --help)")
	case *kekFile == "":
		return usagef("--kek-file is required: the node's CA keys are sealed with it")
	case *ttl < node.MinRecoverTTL || *ttl > node.AdminCertTTL:
		return usagef("--ttl must be between %s and %s", node.MinRecoverTTL, node.AdminCertTTL)
	}
	path := *out
	if path == "" {
		path = node.Layout{Dir: *dataDir}.Admin()
	}
	who := localUser()
	cfg, err := node.RecoverAdmin(context.Background(), *dataDir, *kekFile, *ttl, who)
	if err != nil {
		return fmt.Errorf("admin recover: %w", err)
	}
	svid, err := cfg.SVID()
	if err != nil {
		return err
	}
	if err := cfg.SaveNew(path); err != nil {
		return err
	}
	host, _ := os.Hostname()
	now := time.Now().UTC()
	expires := svid.Certificates[0].NotAfter.UTC()
	e.log.Warn("BREAK-GLASS: admin credential minted from local CA material",
		"spiffe_id", svid.ID.String(), "by", who, "host", host, "at", now, "expires", expires,
		"serial", svid.Certificates[0].SerialNumber.String(), "data_dir", *dataDir, "out", path)
	fmt.Fprintf(e.stderr, "\n"+
		"!!! BREAK-GLASS: a new admin credential (%s) was minted\n"+
		"!!!   by %s on %s at %s, valid until %s\n"+
		"!!!   written to %s\n"+
		"!!! Whoever holds this file is the cluster's admin until it expires.\n"+
		"!!! Use it:  export UNUM_CONFIG=%s\n\n",
		svid.ID, who, host, now.Format(time.RFC3339), expires.Format(time.RFC3339), path, path)
	return nil
}

// localUser names the local account running the command: uid and, when
// known, the user name.
func localUser() string {
	uid := os.Getuid()
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return fmt.Sprintf("uid %d (%s)", uid, u.Username)
	}
	return fmt.Sprintf("uid %d", uid)
}

func wantsHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "-h", "-help", "--help":
			return true
		case "--":
			return false
		}
	}
	return false
}
