package kernel

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/unumos/unum/enforcement"
)

// Go mirrors of the structs in bpf/net.c. layout_test.go checks their
// sizes and field offsets against the BTF of the compiled objects.

// bindingValue is the value of the cgroups map.
type bindingValue struct {
	Identity uint32
	Flags    uint32
}

// ruleKey is the key of the rules LPM trie. Prefixlen counts the bits after
// itself: identity, proto, family and port are always matched (fixedBits),
// then the address prefix. IPv4 lives in ::ffff:0:0/96 with family AF_INET.
type ruleKey struct {
	Prefixlen uint32
	Identity  uint32
	Proto     uint8
	Family    uint8
	Port      uint16 // host order
	Addr      [16]byte
}

// settingsValue is the one element of the settings array.
type settingsValue struct {
	Flags uint32
}

// eventRecord is one ring buffer record.
type eventRecord struct {
	CgroupID  uint64
	Identity  uint32
	Hook      uint8
	Proto     uint8
	Port      uint16 // host order
	Family    uint8
	AuditOnly uint8
	SockProto uint16 // the socket's protocol in full (Proto is 0 when it does not fit)
	SockType  uint32
	Addr      [16]byte
}

// syscallRecord is one record of the syscall_events ring buffer
// (struct syscall_event in bpf/syscall.c).
type syscallRecord struct {
	CgroupID uint64
	Identity uint32
	Nr       uint32
	Ret      int32
	Pid      uint32
	Args     [2]uint64
	Comm     [16]byte
}

const (
	// fixedBits: identity(32) + proto(8) + family(8) + port(16).
	fixedBits = 64
	// v4Bits: the ::ffff:0:0/96 prefix every IPv4 address sits in.
	v4Bits = 96

	afInet  = 2
	afInet6 = 10

	settingAuditOnly = 1
)

// eventSize and syscallEventSize are the sizes of the records as the BPF
// programs write them.
var (
	eventSize        = binary.Size(eventRecord{})
	syscallEventSize = binary.Size(syscallRecord{})
)

// encodeRule turns a rule of identity id into its LPM key. The rule must be
// valid (enforcement.Rule.Validate).
func encodeRule(id enforcement.IdentityNum, r enforcement.Rule) (ruleKey, error) {
	if err := r.Validate(); err != nil {
		return ruleKey{}, err
	}
	if id == 0 {
		return ruleKey{}, fmt.Errorf("rule %s: identity number 0 is never assigned", r)
	}
	k := ruleKey{
		Identity:  uint32(id),
		Proto:     uint8(r.Proto),
		Port:      r.Port,
		Addr:      r.Prefix.Addr().As16(),
		Prefixlen: fixedBits + uint32(r.Prefix.Bits()),
		Family:    afInet6,
	}
	if r.Prefix.Addr().Is4() {
		k.Family = afInet
		k.Prefixlen += v4Bits
	}
	return k, nil
}

// decodeRule is the inverse of encodeRule.
func decodeRule(k ruleKey) (enforcement.IdentityNum, enforcement.Rule, error) {
	if k.Prefixlen < fixedBits || k.Prefixlen > fixedBits+128 {
		return 0, enforcement.Rule{}, fmt.Errorf("rule key: prefix length %d out of range", k.Prefixlen)
	}
	bits := int(k.Prefixlen - fixedBits)
	a := netip.AddrFrom16(k.Addr)
	switch k.Family {
	case afInet:
		if bits < v4Bits || !a.Is4In6() {
			return 0, enforcement.Rule{}, fmt.Errorf("rule key: IPv4 key %s/%d is not inside ::ffff:0:0/96", a, bits)
		}
		a, bits = a.Unmap(), bits-v4Bits
	case afInet6:
	default:
		return 0, enforcement.Rule{}, fmt.Errorf("rule key: unknown family %d", k.Family)
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return 0, enforcement.Rule{}, fmt.Errorf("rule key: %w", err)
	}
	r := enforcement.Rule{Prefix: p, Port: k.Port, Proto: enforcement.Proto(k.Proto)}
	if p != netip.PrefixFrom(a, bits) {
		return 0, enforcement.Rule{}, fmt.Errorf("rule key %s: host bits set", r)
	}
	if err := r.Validate(); err != nil {
		return 0, enforcement.Rule{}, fmt.Errorf("rule key: %w", err)
	}
	return enforcement.IdentityNum(k.Identity), r, nil
}

// decodeEvent reads one ring buffer record. A record of another size than
// the programs write is an error: a short one cannot be read, and a longer
// one comes from programs this agent does not know.
func decodeEvent(b []byte) (Event, error) {
	var rec eventRecord
	if len(b) != eventSize {
		return Event{}, fmt.Errorf("event record of %d bytes, want %d", len(b), eventSize)
	}
	if _, err := binary.Decode(b, binary.NativeEndian, &rec); err != nil {
		return Event{}, fmt.Errorf("event record of %d bytes: %w", len(b), err)
	}
	e := Event{
		CgroupID:  rec.CgroupID,
		Identity:  enforcement.IdentityNum(rec.Identity),
		Hook:      enforcement.Hook(rec.Hook),
		Proto:     enforcement.Proto(rec.Proto),
		Port:      rec.Port,
		Family:    rec.Family,
		SockProto: rec.SockProto,
		SockType:  rec.SockType,
		AuditOnly: rec.AuditOnly != 0,
	}
	if e.Hook != enforcement.HookSockCreate && (rec.Family == afInet || rec.Family == afInet6) {
		// A v4-mapped IPv6 destination is reported as the IPv4 address
		// it was judged as.
		e.Addr = netip.AddrFrom16(rec.Addr).Unmap()
	}
	return e, nil
}

// decodeSyscallEvent reads one syscall_events record.
func decodeSyscallEvent(b []byte) (Event, error) {
	var rec syscallRecord
	if len(b) != syscallEventSize {
		return Event{}, fmt.Errorf("syscall event record of %d bytes, want %d", len(b), syscallEventSize)
	}
	if _, err := binary.Decode(b, binary.NativeEndian, &rec); err != nil {
		return Event{}, fmt.Errorf("syscall event record of %d bytes: %w", len(b), err)
	}
	if rec.Ret >= 0 {
		return Event{}, fmt.Errorf("syscall event with return value %d: not a refusal", rec.Ret)
	}
	comm := rec.Comm[:]
	if i := bytes.IndexByte(comm, 0); i >= 0 {
		comm = comm[:i]
	}
	return Event{
		CgroupID: rec.CgroupID,
		Identity: enforcement.IdentityNum(rec.Identity),
		Hook:     enforcement.HookSyscall,
		Syscall:  rec.Nr,
		Args:     rec.Args,
		Errno:    unix.Errno(-rec.Ret),
		PID:      rec.Pid,
		Comm:     string(comm),
	}, nil
}
