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
#define AF_PACKET 17 // also what socket(AF_INET, SOCK_PACKET) becomes
#define SOCK_RAW 3
