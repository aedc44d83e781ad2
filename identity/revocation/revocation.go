package revocation

import (
	"crypto/x509"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/unumos/unum/identity/ca"
)

// ClockSkewAllowance is added to the revoking server's clock to form a
// revocation's Before: the largest clock difference between control nodes
// under which revocation stays exact. Documented in the README.
const ClockSkewAllowance = 5 * time.Second

var (
	// ErrRevoked: the certificate's identity was revoked after it was issued.
	ErrRevoked = errors.New("certificate revoked")
	// ErrMustRenew: the certificate was issued between a backup and its
	// restore; it must renew against the restored state first.
	ErrMustRenew = errors.New("certificate issued after the restored backup was taken: renew it first")
	// ErrStale: the view has not heard from its source within its bound.
	ErrStale = errors.New("revocation view is stale")
	// ErrNoView: the view has never been loaded.
	ErrNoView = errors.New("revocation view not loaded yet")
)

// Entry revokes every certificate for ID issued before Before.
type Entry struct {
	ID        string    `json:"spiffe_id"`
	Before    time.Time `json:"before"`
	Reason    string    `json:"reason"`
	RevokedBy string    `json:"revoked_by"`
	RevokedAt time.Time `json:"revoked_at"`
}

// Window is a restore from backup; the zero Window means none.
type Window struct {
	BackupAt   time.Time `json:"backup_at"`
	RestoredAt time.Time `json:"restored_at"`
}

// IsZero reports whether w marks no restore.
func (w Window) IsZero() bool { return w.BackupAt.IsZero() && w.RestoredAt.IsZero() }

// Merge returns e revoking at least what e and o revoke: the later Before
// wins (with its reason). Re-revoking never shortens a revocation.
func (e Entry) Merge(o Entry) Entry {
	if o.Before.After(e.Before) {
		return o
	}
	return e
}

// IssuedAt is when the CA issued cert: its NotBefore plus the backdating the
// CA applies to every certificate (ca.ClockSkew).
func IssuedAt(cert *x509.Certificate) time.Time { return cert.NotBefore.Add(ca.ClockSkew) }

// Set is an immutable revocation set. The zero value and nil revoke nothing.
type Set struct {
	entries  map[string]Entry
	restore  Window
	revision int64
}

// NewSet builds a set; of two entries for one ID the later Before wins.
func NewSet(entries []Entry, restore Window, revision int64) *Set {
	s := &Set{entries: make(map[string]Entry, len(entries)), restore: restore, revision: revision}
	for _, e := range entries {
		if old, ok := s.entries[e.ID]; ok {
			e = old.Merge(e)
		}
		s.entries[e.ID] = e
	}
	return s
}

// Len is the number of revoked IDs.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.entries)
}

// Revision is the etcd revision the set was read at.
func (s *Set) Revision() int64 {
	if s == nil {
		return 0
	}
	return s.revision
}

// Restore is the set's restore window.
func (s *Set) Restore() Window {
	if s == nil {
		return Window{}
	}
	return s.restore
}

// Entries returns the entries sorted by ID.
func (s *Set) Entries() []Entry {
	if s == nil {
		return nil
	}
	out := make([]Entry, 0, len(s.entries))
	for _, e := range s.entries {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Lookup returns the entry for id.
func (s *Set) Lookup(id string) (Entry, bool) {
	if s == nil {
		return Entry{}, false
	}
	e, ok := s.entries[id]
	return e, ok
}

// Check decides a certificate for id issued at issuedAt. The error wraps
// ErrRevoked or ErrMustRenew and says why.
func (s *Set) Check(id string, issuedAt time.Time) error {
	if s == nil {
		return nil
	}
	if e, ok := s.entries[id]; ok && issuedAt.Before(e.Before) {
		why := e.Reason
		if why == "" {
			why = "revoked"
		}
		return fmt.Errorf("%w: %s: every certificate issued before %s is refused (%s, by %s)",
			ErrRevoked, id, e.Before.UTC().Format(time.RFC3339), why, e.RevokedBy)
	}
	if !s.restore.IsZero() && issuedAt.After(s.restore.BackupAt) && issuedAt.Before(s.restore.RestoredAt) {
		return fmt.Errorf("%w: %s issued %s, backup taken %s, restored %s", ErrMustRenew, id,
			issuedAt.UTC().Format(time.RFC3339), s.restore.BackupAt.UTC().Format(time.RFC3339), s.restore.RestoredAt.UTC().Format(time.RFC3339))
	}
	return nil
}

// CheckCert checks a leaf certificate; one without a SPIFFE ID is refused.
func (s *Set) CheckCert(leaf *x509.Certificate) error {
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return fmt.Errorf("%w: certificate has no spiffe id: %v", ErrRevoked, err)
	}
	return s.Check(id.String(), IssuedAt(leaf))
}

// FirstSignable is the earliest instant at which a certificate signed for
// a revoked ID is not itself refused by e: certificates carry whole seconds,
// so a certificate signed at t counts as issued at t rounded down.
func (e Entry) FirstSignable() time.Time {
	t := e.Before.Truncate(time.Second)
	if t.Before(e.Before) {
		t = t.Add(time.Second)
	}
	return t
}

// CheckChain checks every certificate of a presented chain that carries a
// SPIFFE ID: the leaf, and the intermediates (a control node's
// intermediate carries its node ID, so revoking a node also refuses every
// certificate its intermediate signed before the revocation). Certificates
// without a SPIFFE ID above the leaf (roots) are not subject to revocation.
//
// Every certificate is checked before the verdict: a revocation anywhere in
// the chain wins over a restore window (ErrMustRenew admits the renewal
// calls, and must never admit a chain through a revoked intermediate).
//
// The restore window applies to the leaf only. An intermediate cannot
// renew, and the window opens a few seconds before the backup (whole-second
// certificate times plus clock skew), so an intermediate made just before
// the backup, and kept in it, would be refused for good. An intermediate
// made after the backup belongs to a control node the restored state does
// not know; `unum node rm --force NAME` revokes it.
func (s *Set) CheckChain(chain []*x509.Certificate) error {
	if len(chain) == 0 {
		return fmt.Errorf("%w: empty certificate chain", ErrRevoked)
	}
	var mustRenew error
	for i, c := range chain {
		var err error
		if i == 0 {
			err = s.CheckCert(c)
		} else if id, idErr := x509svid.IDFromCert(c); idErr == nil {
			if err = s.Check(id.String(), IssuedAt(c)); errors.Is(err, ErrMustRenew) {
				err = nil
			} else if err != nil {
				err = fmt.Errorf("issuer: %w", err)
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, ErrMustRenew):
			if mustRenew == nil {
				mustRenew = err
			}
		default:
			return err
		}
	}
	return mustRenew
}
