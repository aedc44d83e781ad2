package revocation_test

import (
	"crypto/x509"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/identity/revocation"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

const alice = "spiffe://unum.local/user/alice"

func TestSetCheck(t *testing.T) {
	set := revocation.NewSet([]revocation.Entry{
		{ID: alice, Before: t0, Reason: "user removed", RevokedBy: "spiffe://unum.local/user/admin"},
		// An older revocation of the same ID never shortens the newer one.
		{ID: alice, Before: t0.Add(-time.Hour), Reason: "older"},
		{ID: "spiffe://unum.local/node/n2", Before: t0.Add(time.Minute)},
	}, revocation.Window{BackupAt: t0.Add(time.Hour), RestoredAt: t0.Add(2 * time.Hour)}, 42)
	require.Equal(t, 2, set.Len())
	require.Equal(t, int64(42), set.Revision())
	for _, tc := range []struct {
		name     string
		id       string
		issuedAt time.Time
		want     error
	}{
		{"issued before the revocation", alice, t0.Add(-time.Nanosecond), revocation.ErrRevoked},
		{"issued well before", alice, t0.Add(-24 * time.Hour), revocation.ErrRevoked},
		{"issued at the revocation instant works", alice, t0, nil},
		{"issued after works (user added again)", alice, t0.Add(time.Second), nil},
		{"other ids unaffected", "spiffe://unum.local/user/bob", t0.Add(-time.Hour), nil},
		{"node revoked later", "spiffe://unum.local/node/n2", t0.Add(30 * time.Second), revocation.ErrRevoked},
		{"issued in the restore window must renew", "spiffe://unum.local/user/bob", t0.Add(90 * time.Minute), revocation.ErrMustRenew},
		{"issued exactly at the backup is fine", "spiffe://unum.local/user/bob", t0.Add(time.Hour), nil},
		{"issued after the restore is fine", "spiffe://unum.local/user/bob", t0.Add(3 * time.Hour), nil},
		{"revocation wins over the restore window", alice, t0.Add(-time.Minute), revocation.ErrRevoked},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := set.Check(tc.id, tc.issuedAt)
			if tc.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tc.want)
			require.Contains(t, err.Error(), tc.id)
		})
	}
	e, ok := set.Lookup(alice)
	require.True(t, ok)
	require.Equal(t, "user removed", e.Reason)

	var none *revocation.Set
	require.NoError(t, none.Check(alice, t0.Add(-time.Hour)), "a nil set revokes nothing")
}

func TestFirstSignable(t *testing.T) {
	for _, tc := range []struct{ before, want time.Time }{
		{t0, t0},
		{t0.Add(time.Nanosecond), t0.Add(time.Second)},
		{t0.Add(999 * time.Millisecond), t0.Add(time.Second)},
	} {
		e := revocation.Entry{ID: alice, Before: tc.before}
		got := e.FirstSignable()
		require.Equal(t, tc.want, got)
		// A certificate signed at FirstSignable is not refused.
		cert := leafAt(t, alice, got)
		require.NoError(t, revocation.NewSet([]revocation.Entry{e}, revocation.Window{}, 1).CheckCert(cert))
		// One signed a second earlier is.
		require.ErrorIs(t, revocation.NewSet([]revocation.Entry{e}, revocation.Window{}, 1).CheckCert(leafAt(t, alice, got.Add(-time.Second))), revocation.ErrRevoked)
	}
}

// leafAt is a certificate for id as the CA would issue it at issued: whole
// seconds, backdated by ca.ClockSkew.
func leafAt(t *testing.T, id string, issued time.Time) *x509.Certificate {
	t.Helper()
	u, err := url.Parse(id)
	require.NoError(t, err)
	return &x509.Certificate{URIs: []*url.URL{u}, NotBefore: issued.Add(-ca.ClockSkew).Truncate(time.Second)}
}

// TestCheckChainRevokesIntermediate: revoking a control node refuses every
// certificate its intermediate signed before the revocation, whoever it
// names (the attack: a removed control node keeps minting with its
// intermediate).
func TestCheckChainRevokesIntermediate(t *testing.T) {
	node := "spiffe://unum.local/node/ctl-2"
	set := revocation.NewSet([]revocation.Entry{{ID: node, Before: t0}}, revocation.Window{}, 1)
	inter := leafAt(t, node, t0.Add(-24*time.Hour))
	admin := leafAt(t, "spiffe://unum.local/user/admin", t0.Add(time.Hour))
	err := set.CheckChain([]*x509.Certificate{admin, inter})
	require.ErrorIs(t, err, revocation.ErrRevoked)
	require.Contains(t, err.Error(), "issuer")
	// A fresh intermediate for a node added again under the same name works.
	require.NoError(t, set.CheckChain([]*x509.Certificate{admin, leafAt(t, node, t0.Add(time.Minute))}))
	// Roots (no SPIFFE ID) are not subject to revocation.
	require.NoError(t, set.CheckChain([]*x509.Certificate{admin, {NotBefore: t0.Add(-time.Hour)}}))
	require.ErrorIs(t, set.CheckChain(nil), revocation.ErrRevoked)
	// A leaf without a SPIFFE ID is refused.
	require.ErrorIs(t, set.CheckChain([]*x509.Certificate{{NotBefore: t0}}), revocation.ErrRevoked)
}

func TestViewFreshness(t *testing.T) {
	now := t0
	v := revocation.NewView(10*time.Second, func() time.Time { return now })
	require.ErrorIs(t, v.Fresh(), revocation.ErrNoView, "an unloaded view is not fresh")
	_, ok := v.Age()
	require.False(t, ok)

	_, changed, _ := v.Snapshot()
	v.Update(revocation.NewSet(nil, revocation.Window{}, 1), now)
	select {
	case <-changed:
	default:
		t.Fatal("Update did not signal a change")
	}
	require.NoError(t, v.Fresh())

	now = now.Add(10 * time.Second)
	require.NoError(t, v.Fresh(), "exactly at the bound is still fresh")
	now = now.Add(time.Millisecond)
	err := v.Fresh()
	require.ErrorIs(t, err, revocation.ErrStale)
	require.Contains(t, err.Error(), "bound 10s")

	v.Touch(now.Add(-2 * time.Second))
	require.NoError(t, v.Fresh())
	age, _ := v.Age()
	require.Equal(t, 2*time.Second, age)
	// An older confirmation never makes the view look older.
	v.Touch(now.Add(-time.Hour))
	age, _ = v.Age()
	require.Equal(t, 2*time.Second, age)
	require.False(t, errors.Is(v.Fresh(), revocation.ErrStale))
}

// TestCheckChainRevocationBeatsRestoreWindow: a leaf dated inside a restore
// window must not carry a revoked intermediate through the renewal calls
// (the attack: sign user/admin with a removed control node's key, date it
// into the window, and renew it into a real certificate).
func TestCheckChainRevocationBeatsRestoreWindow(t *testing.T) {
	node := "spiffe://unum.local/node/ctl-2"
	window := revocation.Window{BackupAt: t0.Add(time.Hour), RestoredAt: t0.Add(2 * time.Hour)}
	set := revocation.NewSet([]revocation.Entry{{ID: node, Before: t0.Add(3 * time.Hour)}}, window, 1)
	inter := leafAt(t, node, t0)
	forged := leafAt(t, "spiffe://unum.local/user/admin", t0.Add(90*time.Minute))
	err := set.CheckChain([]*x509.Certificate{forged, inter})
	require.ErrorIs(t, err, revocation.ErrRevoked)
	require.NotErrorIs(t, err, revocation.ErrMustRenew)

	// The window applies to leaves only: an intermediate (which cannot
	// renew) made just before the backup stays usable.
	inWindow := leafAt(t, "spiffe://unum.local/node/ctl-1", t0.Add(80*time.Minute))
	fresh := leafAt(t, "spiffe://unum.local/user/bob", t0.Add(3*time.Hour))
	require.NoError(t, set.CheckChain([]*x509.Certificate{fresh, inWindow}))
}

// TestViewIgnoresOlderSets: a set read at an older etcd revision (a
// lagging control node after a failover) does not replace a newer one.
func TestViewIgnoresOlderSets(t *testing.T) {
	v := revocation.NewView(time.Minute, func() time.Time { return t0 })
	v.Update(revocation.NewSet([]revocation.Entry{{ID: alice, Before: t0}}, revocation.Window{}, 10), t0)
	v.Update(revocation.NewSet(nil, revocation.Window{}, 9), t0)
	set, _, _ := v.Snapshot()
	_, ok := set.Lookup(alice)
	require.True(t, ok, "an older set rolled a revocation back")
	v.Update(revocation.NewSet(nil, revocation.Window{}, 11), t0)
	set, _, _ = v.Snapshot()
	require.Equal(t, 0, set.Len())
}
