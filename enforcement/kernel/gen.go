package kernel

// The BPF objects and their Go loaders are generated from bpf/*.c and
// committed, so building unum needs no clang. Regenerate with
// `make generate-bpf`, which sets BPF2GO_CFLAGS (the multiarch include
// directory differs per machine).
//go:generate go tool bpf2go -no-global-types -target bpfel,bpfeb net bpf/net.c
//go:generate go tool bpf2go -no-global-types -target bpfel,bpfeb lsm bpf/lsm.c
//go:generate go tool bpf2go -no-global-types -target bpfel,bpfeb syscall bpf/syscall.c
