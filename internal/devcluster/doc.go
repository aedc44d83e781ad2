// Package devcluster is `unum dev`: a whole cluster on one machine, for a
// newcomer's first five minutes and for end-to-end tests. It creates the
// trust domain unum.local, then starts N nodes as separate `unum node`
// processes on 127.0.0.1 (node-1 … node-N; all compute, nodes 1–3 also
// control), joined with real join tokens, and stays in the foreground until
// its context ends; then it stops every node. The nodes never outlive it:
// each is started with PR_SET_PDEATHSIG from one locked OS thread.
//
// The KEK lives in DIR/kek, beside the nodes: an accepted dev-only threat
// (threatmodel T-007). `unum init` and `unum node` refuse a KEK inside the
// node's own data folder.
package devcluster
