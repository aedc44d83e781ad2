// Package kbench measures what kernel enforcement costs a connect(): the
// figures behind `unum bench enforce` and docs/BENCHMARKS.md. It compares
// a process under no program, under the enforcement programs with 0, 1,000
// and 10,000 allow entries for its identity, and (optionally) under
// iptables OUTPUT rules of the same counts in a network namespace of its
// own, so the host's tables are never touched.
//
// Run needs root and cgroup BPF. It moves the calling process between
// cgroups while it measures, so it is for a bench command or a benchmark,
// never for a running agent. Only internal/bench (`unum bench enforce`)
// imports it.
package kbench
