// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Shared by net.c and lsm.c. The structs here have Go mirrors in
// enforcement/kernel/layout.go; layout_test.go checks them against the BTF
// of the compiled objects, so change both together.
#pragma once

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define EPERM 1
#define AF_INET 2
#define AF_INET6 10
#define AF_NETLINK 16
#define AF_PACKET 17 // also what socket(AF_INET, SOCK_PACKET) becomes
// Socket types as on every architecture but MIPS (which swaps STREAM and
// DGRAM and which unum does not build for).
#define SOCK_STREAM 1
#define SOCK_DGRAM 2
#define SOCK_RAW 3
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
