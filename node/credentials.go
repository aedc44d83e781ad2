package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/unumos/unum/control"
	"github.com/unumos/unum/identity/delegation"
	"github.com/unumos/unum/internal/seal"
)

// The node's side of delegated credentials: every node verifies the ones
// presented to its API (keys from the control plane, revocations from its
// revocation view); a control node also mints them with its own keyring,
// sealed under its KEK in DIR/keys/cred.keyring, rotated every
// delegation.RotationPeriod and published to etcd.

// credKeyringEvery is how often a control node looks at whether its
// keyring is due for rotation or pruning, and republishes its keys.
const credKeyringEvery = time.Minute

// CredKeyring is the control node's sealed credential keyring.
func (l Layout) CredKeyring() string { return l.path("keys", "cred.keyring") }

// loadCredKeyring opens the node's keyring, making one on first use (a
// control node of a cluster made before delegation, or a fresh one).
func (n *node) loadCredKeyring(kek *seal.KEK, now time.Time) (*delegation.Keyring, error) {
	path := n.l.CredKeyring()
	if err := seal.CheckKeyFilePerms(path); err == nil {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("credential keyring: %w", err)
		}
		k, err := delegation.UnmarshalKeyring(b, kek.AEAD())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return k, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("credential keyring: %w", err)
	}
	k, err := delegation.NewKeyring(now)
	if err != nil {
		return nil, err
	}
	if err := n.saveCredKeyring(kek, k); err != nil {
		return nil, err
	}
	n.log.Info("credential keyring created", "path", path)
	return k, nil
}

func (n *node) saveCredKeyring(kek *seal.KEK, k *delegation.Keyring) error {
	b, err := k.Marshal(kek.AEAD())
	if err != nil {
		return err
	}
	if err := seal.WriteFileAtomic(n.l.CredKeyring(), b, 0o600); err != nil {
		return fmt.Errorf("save credential keyring: %w", err)
	}
	return nil
}

// useCredKeyring makes k the keyring this node signs with.
func (n *node) useCredKeyring(k *delegation.Keyring) error {
	iss, err := delegation.NewIssuer(n.td, k, time.Now)
	if err != nil {
		return err
	}
	n.credIssuer.Store(iss)
	return nil
}

// credKeyringLoop keeps a control node's keyring rotated and pruned and its
// public keys published, until ctx ends. The node signs with a keyring only
// once its own state cache shows that keyring's keys published (so every
// verifier can have them): on start, the issuer stays unset (Delegate
// answers Unavailable) until then, and after a rotation the previous
// primary keeps signing until then.
func (n *node) credKeyringLoop(ctx context.Context, kek *seal.KEK, k *delegation.Keyring, cli *clientv3.Client, ctl *control.Server) {
	var using *delegation.Keyring
	t := time.NewTimer(0)
	defer t.Stop()
	var changed <-chan struct{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-changed:
			// The cache moved: perhaps it shows what was just published.
		}
		_, changed, _ = ctl.CredentialKeys()
		if err := n.credKeyringStep(ctx, kek, &k, &using, cli, ctl); err != nil && ctx.Err() == nil {
			n.log.Warn("credential keyring", "err", err)
		}
		wait := credKeyringEvery
		if using != k {
			wait = time.Second
		} else {
			changed = nil
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(wait)
	}
}

// credKeyringStep rotates and prunes *k when due (saving it first), makes
// sure its keys are published, and switches the issuer to it once this
// node's cache shows them.
func (n *node) credKeyringStep(ctx context.Context, kek *seal.KEK, k, using **delegation.Keyring, cli *clientv3.Client, ctl *control.Server) error {
	now := time.Now()
	next := *k
	var err error
	if next.Due(now, delegation.RotationPeriod) {
		if next, err = next.Rotate(now); err != nil {
			return err
		}
	}
	if next, err = next.Prune(now); err != nil {
		return err
	}
	if next != *k {
		if err := n.saveCredKeyring(kek, next); err != nil {
			return err
		}
		*k = next
	}
	jwks, err := next.PublicJWKS()
	if err != nil {
		return err
	}
	sets, _, loaded := ctl.CredentialKeys()
	if !loaded || !sameJSON(sets[n.cfg.Name], jwks) {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		// Shown by the cache at a later step.
		return control.PublishCredentialKeys(pctx, cli, n.cfg.Name, jwks, now)
	}
	if *using != next {
		if err := n.useCredKeyring(next); err != nil {
			return err
		}
		n.log.Info("credential keyring in use", "primary", next.Primary().ID, "kid", next.PrimaryKID(), "keys", len(next.Keys()))
		*using = next
	}
	return nil
}

// sameJSON reports whether a and b are the same JSON text but for white
// space (the cache holds the keys as etcd gave them back).
func sameJSON(a, b []byte) bool {
	var ca, cb bytes.Buffer
	if json.Compact(&ca, a) != nil || json.Compact(&cb, b) != nil {
		return false
	}
	return bytes.Equal(ca.Bytes(), cb.Bytes())
}

// followCredKeys feeds a control node's verifier from its state cache.
func (n *node) followCredKeys(ctx context.Context, ctl *control.Server) {
	for {
		sets, changed, loaded := ctl.CredentialKeys()
		if loaded {
			n.setCredKeys(sets)
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// setCredKeys installs the published key sets in the node's verifier; a
// set that does not parse is left out and logged.
func (n *node) setCredKeys(sets map[string][]byte) {
	n.credKeysMu.Lock()
	defer n.credKeysMu.Unlock()
	if maps.EqualFunc(sets, n.credKeySets, bytes.Equal) {
		// Unchanged: keep the verifier's cache of verified tokens.
		return
	}
	keys, err := delegation.ParsePublicKeys(sets)
	if err != nil {
		n.log.Warn("credential keys", "err", err)
	}
	n.credVerifier.SetKeys(keys)
	n.credKeySets = sets
}
