package kernel

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/enforcement"
)

// TestLayoutMatchesBTF holds the Go mirrors to the C structs as compiled:
// same size, same fields in the same order at the same offsets and sizes.
func TestLayoutMatchesBTF(t *testing.T) {
	spec, err := loadNet()
	require.NoError(t, err)
	for _, tc := range []struct {
		c      string
		mirror any
	}{
		{"binding", bindingValue{}},
		{"rule_key", ruleKey{}},
		{"settings", settingsValue{}},
		{"event", eventRecord{}},
	} {
		t.Run(tc.c, func(t *testing.T) {
			var st *btf.Struct
			require.NoError(t, spec.Types.TypeByName(tc.c, &st))
			checkStruct(t, st, reflect.TypeOf(tc.mirror))
		})
	}
	// The maps use those structs (and the sizes Go marshals).
	for name, want := range map[string][2]any{
		"cgroups":  {uint64(0), bindingValue{}},
		"rules":    {ruleKey{}, uint8(0)},
		"settings": {uint32(0), settingsValue{}},
		"dropped":  {uint32(0), uint64(0)},
	} {
		ms := spec.Maps[name]
		require.Equal(t, uint32(binary.Size(want[0])), ms.KeySize, name)
		require.Equal(t, uint32(binary.Size(want[1])), ms.ValueSize, name)
	}
	var st *btf.Struct
	require.NoError(t, spec.Types.TypeByName("rule_key", &st))
	require.Same(t, st, btf.UnderlyingType(spec.Maps["rules"].Key), "rules map key is struct rule_key")
	require.NoError(t, spec.Types.TypeByName("binding", &st))
	require.Same(t, st, btf.UnderlyingType(spec.Maps["cgroups"].Value), "cgroups map value is struct binding")
	require.Equal(t, uint32(1<<20), spec.Maps["rules"].MaxEntries)
	require.Equal(t, ebpf.LPMTrie, spec.Maps["rules"].Type)
}

func checkStruct(t *testing.T, st *btf.Struct, gt reflect.Type) {
	t.Helper()
	require.Equal(t, int(st.Size), int(gt.Size()), "size of %s", st.Name)
	require.Equal(t, len(st.Members), gt.NumField(), "fields of %s", st.Name)
	for i, m := range st.Members {
		f := gt.Field(i)
		require.Equal(t, strings.ReplaceAll(m.Name, "_", ""), strings.ToLower(f.Name), "field %d of %s", i, st.Name)
		require.Equal(t, int(m.Offset.Bytes()), int(f.Offset), "offset of %s.%s", st.Name, m.Name)
		sz, err := btf.Sizeof(m.Type)
		require.NoError(t, err)
		require.Equal(t, sz, int(f.Type.Size()), "size of %s.%s", st.Name, m.Name)
	}
}

func TestRuleKeyEncoding(t *testing.T) {
	for _, tc := range []struct {
		rule   string
		family uint8
		bits   uint32
		addr   string
	}{
		{"tcp 10.0.0.0/8:443", afInet, 64 + 96 + 8, "::ffff:10.0.0.0"},
		{"udp 127.0.0.1/32:53", afInet, 64 + 128, "::ffff:127.0.0.1"},
		{"any 0.0.0.0/0:*", afInet, 64 + 96, "::ffff:0.0.0.0"},
		{"any [::/0]:*", afInet6, 64, "::"},
		{"tcp [fd00::/8]:80", afInet6, 64 + 8, "fd00::"},
		{"tcp [::1/128]:80", afInet6, 64 + 128, "::1"},
	} {
		t.Run(tc.rule, func(t *testing.T) {
			r, err := enforcement.ParseRule(tc.rule)
			require.NoError(t, err)
			k, err := encodeRule(42, r)
			require.NoError(t, err)
			require.Equal(t, tc.family, k.Family)
			require.Equal(t, tc.bits, k.Prefixlen)
			require.Equal(t, netip.MustParseAddr(tc.addr).As16(), k.Addr)
			require.Equal(t, uint32(42), k.Identity)
			id, back, err := decodeRule(k)
			require.NoError(t, err)
			require.Equal(t, enforcement.IdentityNum(42), id)
			require.Equal(t, r, back)
		})
	}
	// Keys no rule encodes to are refused, not misread.
	for _, k := range []ruleKey{
		{Prefixlen: 63, Family: afInet6},
		{Prefixlen: 64 + 129, Family: afInet6},
		{Prefixlen: 64 + 95, Family: afInet},                          // IPv4 shorter than the mapped prefix
		{Prefixlen: 64 + 128, Family: afInet},                         // IPv4 not inside ::ffff:0:0/96
		{Prefixlen: 64 + 8, Family: 7},                                // unknown family
		{Prefixlen: 64 + 8, Family: afInet6, Addr: [16]byte{0xfd, 1}}, // host bits
	} {
		_, _, err := decodeRule(k)
		require.Error(t, err, "%+v", k)
	}
}

// FuzzRuleKey: every valid rule survives rule → key → rule, and IPv4 keys
// always sit inside ::ffff:0:0/96 with family AF_INET.
func FuzzRuleKey(f *testing.F) {
	f.Add([]byte{10, 0, 0, 0}, uint8(8), uint16(443), uint8(6))
	f.Add([]byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, uint8(128), uint16(0), uint8(0))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4}, uint8(120), uint16(1), uint8(17))
	f.Fuzz(func(t *testing.T, raw []byte, bits uint8, port uint16, proto uint8) {
		a, ok := netip.AddrFromSlice(raw)
		if !ok {
			return
		}
		p, err := a.Prefix(int(bits))
		if err != nil {
			return
		}
		r := enforcement.Rule{Prefix: p, Port: port, Proto: enforcement.Proto(proto)}
		k, err := encodeRule(1, r)
		if r.Validate() != nil {
			require.Error(t, err)
			return
		}
		require.NoError(t, err)
		if a.Is4() {
			require.Equal(t, uint8(afInet), k.Family)
			require.True(t, netip.AddrFrom16(k.Addr).Is4In6())
		} else {
			require.Equal(t, uint8(afInet6), k.Family)
		}
		id, back, err := decodeRule(k)
		require.NoError(t, err)
		require.Equal(t, enforcement.IdentityNum(1), id)
		require.Equal(t, r, back)
	})
}

// TestLookupMatchesReference checks the kernel's LPM trie, keyed as
// encodeRule keys it and probed the way the programs probe it (any proto
// with the port first, then exact, then the port wildcards), against a
// naive matcher: random
// rules, random destinations, IPv4 asked both as IPv4 and as v4-mapped
// IPv6 (which the programs turn into the same key).
func TestLookupMatchesReference(t *testing.T) {
	requireCgroupBPF(t)
	spec, err := loadNet()
	require.NoError(t, err)
	ms := spec.Maps["rules"].Copy()
	ms.Pinning = ebpf.PinNone
	m, err := ebpf.NewMap(ms)
	require.NoError(t, err)
	defer m.Close()

	rng := rand.New(rand.NewPCG(1, 2))
	addrs := []netip.Addr{
		netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("10.1.200.3"), netip.MustParseAddr("10.9.2.3"),
		netip.MustParseAddr("192.168.0.1"), netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00:1::1"),
		netip.MustParseAddr("::1"), netip.MustParseAddr("2001:db8::5"),
	}
	ports := []uint16{0, 53, 80, 443}
	protos := []enforcement.Proto{enforcement.ProtoAny, enforcement.ProtoTCP, enforcement.ProtoUDP}
	var rs []struct {
		id enforcement.IdentityNum
		r  enforcement.Rule
	}
	for range 80 {
		a := addrs[rng.IntN(len(addrs))]
		// Mostly long prefixes, so that most destinations are refused.
		bits := a.BitLen() - rng.IntN(20)
		p, _ := a.Prefix(bits)
		r := enforcement.Rule{Prefix: p, Port: ports[rng.IntN(len(ports))], Proto: protos[rng.IntN(len(protos))]}
		id := enforcement.IdentityNum(1 + rng.IntN(3))
		k, err := encodeRule(id, r)
		require.NoError(t, err)
		require.NoError(t, m.Put(k, uint8(1)))
		rs = append(rs, struct {
			id enforcement.IdentityNum
			r  enforcement.Rule
		}{id, r})
	}
	naive := func(id enforcement.IdentityNum, a netip.Addr, port uint16, proto enforcement.Proto) bool {
		for _, x := range rs {
			if x.id == id && x.r.Prefix.Contains(a) && (x.r.Port == 0 || x.r.Port == port) &&
				(x.r.Proto == enforcement.ProtoAny || x.r.Proto == proto) {
				return true
			}
		}
		return false
	}
	kernel := func(id enforcement.IdentityNum, a netip.Addr, port uint16, proto enforcement.Proto) bool {
		// What the programs build: 16 address bytes, family from the
		// address (a v4-mapped IPv6 destination is AF_INET).
		k := ruleKey{Prefixlen: fixedBits + 128, Identity: uint32(id), Addr: a.As16(), Family: afInet6}
		if a.Is4() || a.Is4In6() {
			k.Family = afInet
		}
		for _, pp := range [][2]uint16{{0, port}, {uint16(proto), port}, {uint16(proto), 0}, {0, 0}} {
			k.Proto, k.Port = uint8(pp[0]), pp[1]
			var v uint8
			if m.Lookup(k, &v) == nil {
				return true
			}
		}
		return false
	}
	hits := 0
	for range 5000 {
		a := addrs[rng.IntN(len(addrs))]
		// Perturb the low bits so prefixes are exercised, not just hosts.
		b := a.AsSlice()
		b[len(b)-1] ^= byte(rng.IntN(256))
		if rng.IntN(2) == 0 {
			b[len(b)-2] ^= byte(rng.IntN(256))
		}
		a, _ = netip.AddrFromSlice(b)
		id := enforcement.IdentityNum(1 + rng.IntN(3))
		port := ports[1+rng.IntN(len(ports)-1)]
		proto := protos[1+rng.IntN(2)]
		want := naive(id, a, port, proto)
		require.Equal(t, want, kernel(id, a, port, proto), "%d %s:%d %s", id, a, port, proto)
		if a.Is4() {
			require.Equal(t, want, kernel(id, netip.AddrFrom16(a.As16()), port, proto), "mapped %s", a)
		}
		if want {
			hits++
		}
	}
	t.Logf("%d of 5000 allowed", hits)
	require.Greater(t, hits, 500, "the reference must allow a fair share, or the test proves little")
	require.Less(t, hits, 4500)
}

// TestDecodeEvent: a record of the programs' layout decodes field by field;
// a record of any other size (short, empty, garbage, longer) is an error,
// never a partly read event.
func TestDecodeEvent(t *testing.T) {
	rec := eventRecord{CgroupID: 0x0102030405060708, Identity: 9, Hook: uint8(enforcement.HookConnect6),
		Proto: 6, Port: 443, Family: afInet6, AuditOnly: 1, SockProto: 6, SockType: 1,
		Addr: netip.MustParseAddr("2001:db8::1").As16()}
	b, err := binary.Append(nil, binary.NativeEndian, rec)
	require.NoError(t, err)
	require.Len(t, b, 40)
	ev, err := decodeEvent(b)
	require.NoError(t, err)
	require.Equal(t, Event{CgroupID: 0x0102030405060708, Identity: 9, Hook: enforcement.HookConnect6,
		Proto: enforcement.ProtoTCP, Addr: netip.MustParseAddr("2001:db8::1"), Port: 443, Family: afInet6,
		SockProto: 6, SockType: 1, AuditOnly: true}, ev)

	// sock_create: no destination, the protocol in full.
	rec = eventRecord{CgroupID: 1, Hook: uint8(enforcement.HookSockCreate), Family: afInet, SockProto: 262, SockType: 1}
	b, err = binary.Append(nil, binary.NativeEndian, rec)
	require.NoError(t, err)
	ev, err = decodeEvent(b)
	require.NoError(t, err)
	require.Equal(t, Event{CgroupID: 1, Hook: enforcement.HookSockCreate, Family: afInet, SockProto: 262, SockType: 1}, ev)
	require.False(t, ev.Addr.IsValid())

	rng := rand.New(rand.NewPCG(1, 2))
	garbage := make([]byte, 200)
	for i := range garbage {
		garbage[i] = byte(rng.IntN(256))
	}
	for _, n := range []int{0, 1, 8, 39, 41, 48, 200} {
		_, err := decodeEvent(garbage[:n])
		require.Error(t, err, "%d bytes", n)
	}
	_, err = decodeEvent(nil)
	require.Error(t, err)
}

// TestSyscallLayoutMatchesBTF: the syscall object's event matches its Go
// mirror, and the maps it shares by pin name with the network and LSM
// objects are defined exactly as there (otherwise loading it would
// recreate, and empty, the network layer's bindings).
func TestSyscallLayoutMatchesBTF(t *testing.T) {
	sys, err := loadSyscall()
	require.NoError(t, err)
	var st *btf.Struct
	require.NoError(t, sys.Types.TypeByName("syscall_event", &st))
	checkStruct(t, st, reflect.TypeOf(syscallRecord{}))
	require.NoError(t, sys.Types.TypeByName("binding", &st))
	checkStruct(t, st, reflect.TypeOf(bindingValue{}))
	net, err := loadNet()
	require.NoError(t, err)
	lsm, err := loadLsm()
	require.NoError(t, err)
	for name, other := range map[string]*ebpf.CollectionSpec{"cgroups": net, "dropped": net, "task_root": lsm} {
		a, b := sys.Maps[name], other.Maps[name]
		require.NotNil(t, a, name)
		require.NotNil(t, b, name)
		require.Equal(t, [5]any{b.Type, b.KeySize, b.ValueSize, b.MaxEntries, b.Flags},
			[5]any{a.Type, a.KeySize, a.ValueSize, a.MaxEntries, a.Flags}, "map %s", name)
	}
}

// TestDecodeSyscallEvent: a syscall record decodes with its errno and
// command name; another size, or a return value that is no error, is
// refused.
func TestDecodeSyscallEvent(t *testing.T) {
	rec := syscallRecord{CgroupID: 7, Identity: 3, Nr: 101, Ret: -1, Pid: 4242, Args: [2]uint64{16, 1}}
	copy(rec.Comm[:], "escape")
	b, err := binary.Append(nil, binary.NativeEndian, rec)
	require.NoError(t, err)
	require.Len(t, b, 56)
	ev, err := decodeSyscallEvent(b)
	require.NoError(t, err)
	require.Equal(t, Event{CgroupID: 7, Identity: 3, Hook: enforcement.HookSyscall, Syscall: 101,
		Args: [2]uint64{16, 1}, Errno: 1, PID: 4242, Comm: "escape"}, ev)
	for _, n := range []int{0, 40, 55, 57} {
		_, err := decodeSyscallEvent(make([]byte, n))
		require.Error(t, err, "%d bytes", n)
	}
	rec.Ret = 0
	b, err = binary.Append(nil, binary.NativeEndian, rec)
	require.NoError(t, err)
	_, err = decodeSyscallEvent(b)
	require.Error(t, err)
}
