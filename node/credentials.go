package node

import (
	"bytes"
	"context"
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

// kekAEAD is the node's key-encryption key as the tink.AEAD a keyring is
// sealed with.
type kekAEAD struct{ k *seal.KEK }

func (a kekAEAD) Encrypt(plaintext, ad []byte) ([]byte, error)  { return a.k.Seal(plaintext, ad) }
func (a kekAEAD) Decrypt(ciphertext, ad []byte) ([]byte, error) { return a.k.Open(ciphertext, ad) }

// loadCredKeyring opens the node's keyring, making one on first use (a
// control node of a cluster made before delegation, or a fresh one).
func (n *node) loadCredKeyring(kek *seal.KEK, now time.Time) (*delegation.Keyring, error) {
	path := n.l.CredKeyring()
	if err := seal.CheckKeyFilePerms(path); err == nil {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("credential keyring: %w", err)
		}
		k, err := delegation.UnmarshalKeyring(b, kekAEAD{kek})
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
	b, err := k.Marshal(kekAEAD{kek})
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
// public keys published, until ctx ends. Keys are published before a new
// primary signs anything: a rotated keyring is saved and published first,
// then used.
func (n *node) credKeyringLoop(ctx context.Context, kek *seal.KEK, k *delegation.Keyring, cli *clientv3.Client) {
	published := false
	t := time.NewTicker(credKeyringEvery)
	defer t.Stop()
	for {
		now := time.Now()
		next := k
		var err error
		if next.Due(now, delegation.RotationPeriod) {
			next, err = next.Rotate(now)
		}
		if err == nil {
			next, err = next.Prune(now)
		}
		if err == nil && next != k {
			err = n.saveCredKeyring(kek, next)
		}
		if err == nil && (next != k || !published) {
			var jwks []byte
			if jwks, err = next.PublicJWKS(); err == nil {
				pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				err = control.PublishCredentialKeys(pctx, cli, n.cfg.Name, jwks, now)
				cancel()
			}
			if err == nil {
				published = true
			}
		}
		if err == nil && next != k {
			if err = n.useCredKeyring(next); err == nil {
				n.log.Info("credential keyring rotated", "primary", next.Primary().ID, "keys", len(next.Keys()))
				k = next
			}
		}
		if err != nil && ctx.Err() == nil {
			n.log.Warn("credential keyring", "err", err)
		}
		wait := credKeyringEvery
		if !published {
			wait = time.Second
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
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
