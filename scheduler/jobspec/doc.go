// Package jobspec owns the job specification: the YAML a user submits, its
// defaults, its validation, and the canonical JSON the control plane stores
// in etcd and compares to tell whether a resubmitted job changed.
//
// It is pure: bytes in, a Job or field-named errors out; no I/O, no clock.
// Anyone may import it (the CLI validates before submitting, the control
// plane re-parses what it stores, the scheduler and executor read Jobs); it
// imports only identity for the job's SPIFFE ID.
//
// # Invariants
//
//   - A *Job returned by Parse or ParseCanonical is defaulted and valid.
//   - Canonical is deterministic: equal jobs give equal bytes, and
//     ParseCanonical(Canonical(j)) equals j. ParseCanonical accepts only bytes
//     that are exactly canonical.
//   - Parse never panics and never accepts what it cannot round-trip
//     (FuzzParse checks both).
//   - Declaring egress grants nothing: the effective network access is the
//     egress list intersected with what policy allows. Submitting a job into
//     a namespace is a policy decision made by the caller of this package.
//
// # Schema
//
// A full example (every field; the comments give defaults and rules):
//
//	name: web                # required; DNS label [a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?
//	namespace: shop          # DNS label; default "default"
//	type: service            # required: service (runs until stopped) | batch (runs to completion)
//	priority: 600            # 0..1000, default 500; higher preempts lower
//	class: prod              # prod | batch | best-effort; default prod for services, batch for batch jobs
//	count: 3                 # tasks, 1..10000, default 1
//	task:
//	  command: /bin/sh       # required; absolute clean path (no '..') or a bare name looked up in PATH
//	  args: ["-c", "exec my-server --port \"$UNUM_PORT_HTTP\""]  # passed as-is: unum runs no shell and expands nothing
//	  env: {MODE: prod}      # names [A-Za-z_][A-Za-z0-9_]*; SPIFFE_ENDPOINT_SOCKET and UNUM_* are reserved; values are strings (quote numbers)
//	  workdir: data          # relative to the task's own directory, no '..'; default "" (that directory)
//	resources:               # per task, both required
//	  cpu: 250               # millicores, 1..1000000; or "250m", or cores as a string: "0.5", "2" (at most 3 decimals)
//	  memory: 128            # MiB, 1..16777216; or "128Mi", "2Gi", "1Ti" (decimal units such as 128M are refused)
//	constraints:             # all must hold on a node; label keys are Kubernetes label keys ([prefix/]name)
//	  - {label: zone, op: "=", value: eu-1}          # = and != take value
//	  - {label: disk, op: in, values: [ssd, nvme]}   # in takes values (1..64, no repeats)
//	  - {label: gpu, op: exists}                     # exists takes neither
//	spread: zone             # label key to spread tasks across (soft); default none
//	anti_affinity: node      # label key: at most one task per value (hard); "node" means the node itself
//	restart:
//	  policy: on-failure     # on-failure (default) | always (services only) | never
//	  attempts: 0            # restarts before giving up; 0 = unlimited (default for services);
//	                         # batch default 3, and a batch job restarting on failure must set 1..1000
//	  delay: 1s              # first restart delay, doubled each time up to max_delay; 100ms..1h, default 1s
//	  max_delay: 1m          # delay..1h; default 1m (or delay, if larger)
//	ports: [http]            # names [a-z][a-z0-9_-]{0,31}; each task gets a port per name in UNUM_PORT_<NAME>
//	                         # (upper-cased, '-' as '_'; two names may not map to the same variable)
//	egress:                  # SPIFFE IDs the job intends to call (in the cluster's trust domain, see ValidateFor)
//	  - spiffe://unum.local/ns/shop/job/db
//
// The decoder is strict: unknown fields, keys repeated in a mapping, values of
// the wrong type (a string field given 1 or yes, a list given a string), null
// values, aliases, custom tags, more than one document, NUL bytes and specs
// over 64 KiB are refused, each error naming its field. Booleans follow YAML
// 1.2: only true and false are booleans, so a key or value such as "on" or
// "no" stays a string. Bounds: at most 256 args, 256 env entries, 64 KiB of
// command, args and env together, 64 constraints, 32 ports, 256 egress IDs.
//
// Why args are not expanded: the executor execve's the command with the args
// as written, so a spec means the same thing on every node and no shell
// quoting can be injected through it. A job that wants its port on the
// command line runs a shell itself, as above.
package jobspec
