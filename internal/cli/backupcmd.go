package cli

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/internal/backup"
	"github.com/unumos/unum/internal/output"
	"github.com/unumos/unum/node"
)

type backupView struct {
	File         string          `json:"file"`
	Size         int64           `json:"size"`
	SHA256       string          `json:"sha256"`
	TrustDomain  string          `json:"trust_domain"`
	CreatedAt    time.Time       `json:"created_at"`
	Node         string          `json:"node"`
	EtcdRevision int64           `json:"etcd_revision"`
	Members      []backup.Member `json:"members"`
}

func runBackupCreate(e *env, args []string) error {
	fs := flag.NewFlagSet("unum backup create", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	// A snapshot of a large store takes longer than a usual call.
	to := fs.Lookup("timeout")
	to.DefValue = "10m0s"
	_ = to.Value.Set(to.DefValue)
	c, err := cf.connect(e, fs, args, 1, "unum backup create FILE", func(pos []string) error {
		if _, err := os.Lstat(pos[0]); err == nil {
			return fmt.Errorf("%s exists: refusing to overwrite a backup", pos[0])
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer c.close()
	file := c.args[0]
	tmp := file + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s exists (left by a failed backup?): remove it first", tmp)
		}
		return err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	stream, err := unumv1.NewBackupClient(c.conn).Create(c.ctx, &unumv1.CreateBackupRequest{})
	if err != nil {
		return err
	}
	h := sha256.New()
	w := io.MultiWriter(f, h)
	var size int64
	for {
		chunk, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		n, err := w.Write(chunk.GetData())
		if err != nil {
			return fmt.Errorf("write %s: %w", tmp, err)
		}
		size += int64(n)
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	// Check what arrived: complete, and every member as the manifest says.
	// Only a KEK holder can check the manifest's tag (at restore).
	m, err := verifyFile(tmp)
	if err != nil {
		return fmt.Errorf("the backup received is damaged: %w", err)
	}
	// link(2) refuses an existing name: never overwrite a backup.
	if err := os.Link(tmp, file); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	ok = true
	_ = os.Remove(tmp)
	v := backupView{File: file, Size: size, SHA256: hex.EncodeToString(h.Sum(nil)), TrustDomain: m.TrustDomain, CreatedAt: m.CreatedAt,
		Node: m.Node.Name, EtcdRevision: m.EtcdRevision, Members: m.Members}
	return output.Write(e.stdout, c.format, v, func(tw *tabwriter.Writer) error {
		fmt.Fprintf(tw, "backup\t%s\nsize\t%d bytes\nsha256\t%s\ntrust domain\t%s\ncreated at\t%s\nnode\t%s\netcd revision\t%d\n\n",
			v.File, v.Size, v.SHA256, v.TrustDomain, v.CreatedAt.Format(time.RFC3339), v.Node, v.EtcdRevision)
		fmt.Fprintln(tw, "MEMBER\tSIZE\tSHA256")
		for _, x := range v.Members {
			fmt.Fprintf(tw, "%s\t%d\t%s\n", x.Name, x.Size, x.SHA256)
		}
		return nil
	})
}

func verifyFile(path string) (*backup.Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return backup.Verify(f)
}

func runBackupRestore(e *env, args []string) error {
	fs := flag.NewFlagSet("unum backup restore", flag.ContinueOnError)
	var o node.RestoreOptions
	fs.StringVar(&o.DataDir, "data-dir", "", "the new control node's data folder (required; must not hold a node)")
	fs.StringVar(&o.KEKFile, "kek-file", "", "the key-encryption key of the node the backup was taken on (required)")
	fs.StringVar(&o.TrustDomain, "trust-domain", "", "refuse a backup of any other trust domain")
	portFlags(fs, &o.Ports)
	fs.DurationVar(&o.EtcdHeartbeat, "etcd-heartbeat", 0, "etcd heartbeat interval (default etcd's)")
	fs.DurationVar(&o.EtcdElection, "etcd-election", 0, "etcd election timeout (default etcd's)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) != 1:
		return usagef("usage: unum backup restore FILE --data-dir DIR --kek-file PATH [--listen HOST:PORT ...]")
	case o.DataDir == "":
		return usagef("--data-dir is required")
	case o.KEKFile == "":
		return usagef("--kek-file is required: the backup's keys are sealed under the key-encryption key of the node it was taken on")
	}
	o.Archive = pos[0]
	o.Log = e.log
	res, err := node.Restore(e.ctx, o)
	if err != nil {
		return err
	}
	m := res.Manifest
	w := e.stderr
	fmt.Fprintf(w, "restored trust domain %s from the backup of %s taken %s into %s\n", m.TrustDomain, m.Node.Name, m.CreatedAt.Format(time.RFC3339), o.DataDir)
	fmt.Fprintf(w, "nodes kept:       %s\n", strings.Join(res.Rewrite.Nodes, ", "))
	if len(res.Rewrite.Removed) > 0 {
		fmt.Fprintf(w, "control nodes removed (they were members of the lost etcd cluster; wipe them, then join them again with new tokens): %s\n", strings.Join(res.Rewrite.Removed, ", "))
	}
	if res.Rewrite.Tokens > 0 {
		fmt.Fprintf(w, "unused join and user tokens voided: %d\n", res.Rewrite.Tokens)
	}
	fmt.Fprintf(w, "certificates issued between %s and %s are refused until renewed: nodes renew by themselves, people renew or log in again\n",
		res.Window.BackupAt.Format(time.RFC3339), res.Window.RestoredAt.Format(time.RFC3339))
	fmt.Fprintln(w, "revocations made after the backup are lost: make them again")
	if !res.HoldsRoot {
		fmt.Fprintln(w, "this backup holds no root CA key: control nodes cannot join until the root is imported")
	}
	fmt.Fprintf(w, "start the node:   unum node --data-dir %s --kek-file %s\nadmin config:     export UNUM_CONFIG=%s\n",
		o.DataDir, o.KEKFile, node.Layout{Dir: o.DataDir}.Admin())
	return nil
}
