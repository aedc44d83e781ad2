package node

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/enforcement"
)

// TestDenialsAggregate: a task looping on a forbidden connect makes one
// event at once and one more per window with the repeats counted; other
// kinds are separate; the per-minute count sees every denial and forgets
// those older than a minute.
func TestDenialsAggregate(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	a := newDenials(10 * time.Second)
	vault := denial{key: denyKey{task: "t1", hook: enforcement.HookConnect4, addr: netip.MustParseAddr("10.0.0.2"), port: 8200, proto: enforcement.ProtoTCP},
		spiffe: "spiffe://td/ns/shop/job/web", identity: 7, family: 2}
	etcd := vault
	etcd.key.port = 2379

	require.True(t, a.add(vault, t0), "the first is recorded at once")
	for i := 1; i <= 5; i++ {
		require.False(t, a.add(vault, t0.Add(time.Duration(i)*time.Second)), "a repeat within the window")
	}
	require.True(t, a.add(etcd, t0.Add(time.Second)), "another destination is another kind")
	require.Empty(t, a.expire(t0.Add(9*time.Second)), "no window is over yet")
	got := a.expire(t0.Add(10 * time.Second))
	require.Len(t, got, 1, "etcd had no repeat: nothing more to record")
	require.Equal(t, 5, got[0].count)
	require.Equal(t, vault.key, got[0].key)
	require.Equal(t, vault.spiffe, got[0].spiffe)
	require.Equal(t, vault.identity, got[0].identity, "a repeat keeps what the kernel judged with")
	require.Equal(t, vault.family, got[0].family)
	require.Equal(t, t0.Add(time.Second), got[0].since, "repeats since the first repeat")
	require.Empty(t, a.expire(t0.Add(11*time.Second)), "both windows ended")
	require.True(t, a.add(vault, t0.Add(12*time.Second)), "a new window starts with a recorded event")

	require.Equal(t, int64(8), a.perMinute(t0.Add(12*time.Second)))
	require.Equal(t, int64(1), a.perMinute(t0.Add(65*time.Second)), "only the denial at +12 s is within the minute")
	require.Equal(t, int64(0), a.perMinute(t0.Add(5*time.Minute)))
}

// TestDenialsBounded: a task scanning destinations cannot grow the
// aggregation without bound: past the cap its denials are counted under
// its task and hook, with no destination.
func TestDenialsBounded(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	a := newDenials(10 * time.Second)
	a.max = 3
	scan := func(port uint16) denial {
		return denial{key: denyKey{task: "t1", hook: enforcement.HookConnect4, addr: netip.MustParseAddr("10.0.0.9"), port: port, proto: enforcement.ProtoTCP}, identity: 7}
	}
	recorded := 0
	for p := uint16(1); p <= 100; p++ {
		if a.add(scan(p), t0) {
			recorded++
		}
	}
	require.Equal(t, 3, recorded, "the first of each kind up to the cap")
	require.Len(t, a.pending, 4, "the cap plus one overflow kind")
	got := a.expire(t0.Add(10 * time.Second))
	require.Len(t, got, 1)
	require.True(t, got[0].key.overflow)
	require.False(t, got[0].key.addr.IsValid())
	require.Equal(t, 97, got[0].count)
}
