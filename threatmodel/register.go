package threatmodel

// Register returns the threat register, sorted by ID. It is built afresh on
// every call.
//
// Boundaries are named consistently so the register can be grouped by them:
// "enrolment listener", "Workload API socket", "node data directory",
// "etcd client and peer ports", "control-plane quorum".
func Register() []Threat {
	threats := []Threat{
		{
			ID:       "T-001",
			Title:    "Join-token theft and replay",
			STRIDE:   "S",
			Asset:    "a node identity (spiffe://TD/node/NAME and the roles the token grants)",
			Boundary: "out-of-band token hand-over; enrolment listener",
			Attacker: "anyone who reads a token (shell history, chat, CI log, screen share) or captures one already redeemed, " +
				"and presents it to the enrolment listener",
			Mitigation: "Tokens are single-use (marked used when redeemed), expire after a short TTL (default 15m), " +
				"fix the node name and roles, and carry 32 random bytes of secret of which the control plane stores only " +
				"the SHA-256, compared in constant time; only a caller holding the secret learns whether a token is used " +
				"or expired, and no error or log line contains the secret.",
			Status: Mitigated,
			Tests:  []string{"identity/jointoken.TestRecordCheck", "control.TestJoinMisuse", "node.TestJoinRefusedNodeExits"},
		},
		{
			ID:       "T-002",
			Title:    "CSR SAN smuggling",
			STRIDE:   "E",
			Asset:    "the CA's signing authority: which SPIFFE IDs and names a certificate vouches for",
			Boundary: "enrolment listener and SVID renewal RPC into the CA",
			Attacker: "a joining or enrolled node that submits a crafted CSR: extra or foreign URI SANs, DNS/IP/e-mail SANs, " +
				"CA basic constraints, another node's name or another trust domain",
			Mitigation: "The CA builds every certificate from its own template: from the CSR it takes only the public key " +
				"(after checking the CSR's signature) and requires exactly the one URI SAN the server derived from the token " +
				"or the caller's verified identity; anything else in the CSR is refused, not ignored.",
			Status: Mitigated,
			Tests:  []string{"identity/ca.TestVerifyCSR", "identity/ca.TestCSRSubjectIsNeverCopied", "control.TestJoinMisuse"},
		},
		{
			ID:       "T-003",
			Title:    "PID reuse during workload attestation",
			STRIDE:   "S",
			Asset:    "workload SVIDs",
			Boundary: "Workload API socket",
			Attacker: "a local process that connects, exits, and has its pid recycled by a process of a workload it wants " +
				"to impersonate, so that attestation by pid reads the victim's cgroup",
			Mitigation: "The agent takes a pidfd for the peer from the socket at connect time (SO_PEERPIDFD, or " +
				"SO_PEERCRED plus pidfd_open and a re-check), never a bare pid, reads the process's uid, gids and " +
				"executable from /proc, and then checks through the pidfd that the same process is still alive; if it " +
				"is gone the call is refused, so a recycled pid never inherits an identity.",
			Status: Mitigated,
			Tests:  []string{"identity/attest.TestProcessGone"},
		},
		{
			ID:       "T-004",
			Title:    "Exec after connect",
			STRIDE:   "S",
			Asset:    "workload SVIDs",
			Boundary: "Workload API socket",
			Attacker: "a process that connects to the Workload API and then execs another program (e.g. a setuid " +
				"or allow-listed binary), hoping the identity attested for the new image is served on the old connection",
			Mitigation: "Attestation happens on every call and before every streamed update, not once per connection; " +
				"the executable's identity (device, inode) is recorded at connect and a process that has exec'd another " +
				"binary since is refused. Path and sha256 selectors are accepted only together with a uid or gid selector. " +
				"Not covered: a connection inherited by a forked child while the connecting process lives on unchanged " +
				"is served as that process; the uid/gid boundary still holds, which is why binary selectors never stand alone.",
			Status: Mitigated,
			Tests:  []string{"identity/attest.TestExecAfterConnect", "identity/agent.TestExecAfterConnect", "identity/selector.TestValidateSet"},
		},
		{
			ID:       "T-005",
			Title:    "Key files readable by other local users",
			STRIDE:   "I",
			Asset:    "private keys on disk: CA keys (sealed), node SVID keys, etcd keys, the KEK",
			Boundary: "node data directory",
			Attacker: "a local user or task on the node other than unum, reading key files left with loose permissions",
			Mitigation: "Key material is written 0600 inside 0700 directories, and readers refuse (fail closed, naming the " +
				"file and its mode) a key file whose mode lets group or others read it, rather than using it.",
			Status: Mitigated,
			Tests:  []string{"internal/seal.TestReadersRefuseLooseOrOddFiles", "node.TestRestartKeepsIdentity", "node.TestKeysOnDiskSealedAndPrivate"},
		},
		{
			ID:       "T-006",
			Title:    "etcd reached by a non-control identity",
			STRIDE:   "E",
			Asset:    "the consistent store: membership, policy bundles, assignments, join-token records, revocations",
			Boundary: "etcd client and peer ports",
			Attacker: "a compromised compute node or workload holding a valid node or workload SVID, connecting to etcd directly",
			Mitigation: "etcd serves only mutual TLS with its own certificates, issued to control-plane processes and " +
				"checked by role; node and workload SVIDs are refused at the handshake, so everyone else goes through " +
				"unum RPCs and the policy.",
			Status: Mitigated,
			Tests:  []string{"storage/meta.TestForeignCertificatesRefused", "node.TestComputeSVIDCannotReachEtcd"},
		},
		{
			ID:       "T-007",
			Title:    "Key-encryption key on the same disk as the sealed keys",
			STRIDE:   "I",
			Asset:    "CA private keys sealed with Tink AEAD",
			Boundary: "node data directory",
			Attacker: "anyone with a copy of the data directory: a backup, a snapshot, a stolen or decommissioned disk",
			Mitigation: "CA keys are sealed under a KEK; `unum init` and `unum node` refuse a KEK path inside the data " +
				"directory, so a copy of DIR alone does not unseal them.",
			Status: Accepted,
			Reason: "Accepted in development only: `unum dev` keeps the KEK in DIR for convenience, since a one-machine " +
				"development cluster has no second place to keep it. `unum init` and `unum node` refuse a KEK inside DIR.",
			Tests: []string{"cmd/unum.TestInitRefusesKEKInsideDataDir", "node.TestKEKOutside"},
		},
		{
			ID:       "T-008",
			Title:    "Minting by a control node in the minority",
			STRIDE:   "E",
			Asset:    "SVID issuance decisions: which node or workload may still get an identity",
			Boundary: "control-plane quorum",
			Attacker: "a control node cut off from the etcd quorum (or an attacker who partitions it) that would mint " +
				"from a stale view, e.g. for a revoked node or a job assigned elsewhere since",
			Mitigation: "The CA signs a workload SVID only after a batched linearizable etcd read confirms the " +
				"registration entry and the requesting node's membership; a member in the minority cannot complete the " +
				"read and refuses to mint (agents keep serving SVIDs they already hold until those expire).",
			Status: Mitigated,
			Tests:  []string{"storage/meta.TestMinorityCannotRead", "cmd/unum.TestDevCluster"},
		},
		{
			ID:       "T-009",
			Title:    "Man in the middle on join with another CA",
			STRIDE:   "S",
			Asset:    "the joining node's trust bundle, and the join token it sends",
			Boundary: "enrolment listener (the network between the joining node and it)",
			Attacker: "a network attacker, or a rogue unum cluster, presenting a certificate from another CA to a node " +
				"that is joining",
			Mitigation: "The token carries the SHA-256 of the cluster's root CA certificate; the joining node refuses the " +
				"TLS handshake unless the server's chain ends at that root, before it sends the token or its CSR.",
			Status: Mitigated,
			Tests:  []string{"control.TestJoinMisuse", "node.TestJoinMITM"},
		},
		{
			ID:       "T-010",
			Title:    "Unregistered process obtains an SVID",
			STRIDE:   "SE",
			Asset:    "workload SVIDs and the rights the policy grants them",
			Boundary: "Workload API socket",
			Attacker: "any local process on a compute node that is not a task the scheduler assigned there " +
				"(another uid, a shell, a process outside the job cgroups)",
			Mitigation: "The agent serves an SVID only to a process whose attested uid/gid (and binary, where the " +
				"entry says so) match a registration entry for this node; everyone else gets PermissionDenied. The CA " +
				"re-checks every mint against the entry with a linearizable read. (Scheduler-started tasks, attested by " +
				"cgroup, come with the scheduler issue.)",
			Status: Mitigated,
			Tests:  []string{"identity/agent.TestUnregisteredUIDDenied", "node.TestNoEntryNoSVID", "control.TestMintRequiresEntry"},
		},
		{
			ID:       "T-011",
			Title:    "A registration entry hands out a privileged identity",
			STRIDE:   "E",
			Asset:    "user, node and system identities",
			Boundary: "control-plane API (registration)",
			Attacker: "an operator mistake or a principal allowed to register workloads who names spiffe://TD/user/admin, " +
				"a node or a system service as the entry's SPIFFE ID",
			Mitigation: "Registrations may only name workload IDs (spiffe://TD/ns/...) of the cluster's trust domain, " +
				"on a node that exists at the moment the entry is written (one etcd transaction).",
			Status: Mitigated,
			Tests:  []string{"control.TestCreateEntryValidation"},
		},
		{
			ID:       "T-012",
			Title:    "A node mints SVIDs for another node's workloads",
			STRIDE:   "E",
			Asset:    "workload SVIDs of other nodes",
			Boundary: "control-plane API (Identity.MintX509SVID)",
			Attacker: "a compromised compute node holding its own valid node SVID",
			Mitigation: "The CA derives the node from the caller's verified SVID and signs only for an entry that names " +
				"that node (or all nodes) and the requested ID; it ignores any node name in the request.",
			Status: Mitigated,
			Tests:  []string{"control.TestMintRequiresEntry"},
		},
		{
			ID:       "T-013",
			Title:    "A non-admin principal performs administrative actions",
			STRIDE:   "E",
			Asset:    "join tokens, registration entries, cluster membership",
			Boundary: "control-plane API",
			Attacker: "a compromised node or workload, or a user without the admin role, holding a valid SVID",
			Mitigation: "Every RPC passes one interceptor that classifies the verified peer SPIFFE ID and asks the " +
				"Authorizer (deny by default: admin everything, nodes node operations, everyone WhoAmI); denials are " +
				"PermissionDenied and exit code 3. The enrolment listener serves only Join.",
			Status: Mitigated,
			Tests:  []string{"control.TestJoinMisuse", "control.TestCreateEntryValidation", "internal/rpc.TestBuiltinAuthorizer", "cmd/unum.TestDevCluster"},
		},
		{
			ID:       "T-014",
			Title:    "Server-side request forgery against the Workload API",
			STRIDE:   "S",
			Asset:    "workload SVIDs",
			Boundary: "Workload API socket",
			Attacker: "a confused program (e.g. a proxy following a user-supplied unix:// URL) that can be made to talk " +
				"to the agent socket on another process's behalf",
			Mitigation: "Every Workload API call must carry the workload.spiffe.io: true metadata header, as the SPIFFE " +
				"spec requires; calls without it are refused with InvalidArgument.",
			Status: Mitigated,
			Tests:  []string{"identity/agent.TestSecurityHeaderRequired"},
		},
		{
			ID:       "T-015",
			Title:    "Join token read from a command line",
			STRIDE:   "I",
			Asset:    "join tokens, and through a control token a root-signed intermediate CA",
			Boundary: "the local machine: /proc/PID/cmdline is readable by every user",
			Attacker: "a local user on the machine where a node is being joined, racing the node to the enrolment listener",
			Mitigation: "`unum node` takes the token from $UNUM_JOIN_TOKEN or --token-file (--token remains, documented as " +
				"visible to local users); `unum dev` passes tokens to its nodes in the environment only.",
			Status: Mitigated,
			Tests:  []string{"cmd/unum.TestDevCluster"},
		},
		{
			ID:       "T-016",
			Title:    "Another local user replaces the Workload API socket",
			STRIDE:   "S",
			Asset:    "workloads' trust in the agent: the SVIDs and bundles they receive",
			Boundary: "Workload API socket",
			Attacker: "a local user who can write to the socket's folder and binds an impostor socket in its place",
			Mitigation: "The agent serves only from a real folder (not a symlink) owned by its own uid and writable by " +
				"no one else; it replaces a stale socket only, never a live one or any other file.",
			Status: Mitigated,
			Tests:  []string{"identity/agent.TestServeSocketSafety"},
		},
		{
			ID:       "T-017",
			Title:    "Flooding the enrolment listener",
			STRIDE:   "D",
			Asset:    "etcd and the control node's CPU",
			Boundary: "enrolment listener",
			Attacker: "any network peer, unauthenticated, sending join requests with made-up tokens",
			Mitigation: "The enrolment listener serves only Join, takes small messages, and passes every call through a " +
				"token bucket per source (IPv6 grouped by /64) and one for all sources together before any etcd read.",
			Status: Mitigated,
			Tests:  []string{"internal/rpc.TestEnrollmentListenerRateLimited", "internal/rpc.TestLimiterKey"},
		},
		{
			ID:       "T-018",
			Title:    "A compute node poses as the control plane",
			STRIDE:   "S",
			Asset:    "join tokens, agents' trust bundles and entries, CLI sessions",
			Boundary: "control-plane API and enrolment listener",
			Attacker: "a compromised compute node holding a valid node SVID of the cluster, with a network position " +
				"between clients and control nodes",
			Mitigation: "Clients and joining nodes accept a server only if its SVID was issued by its own intermediate " +
				"(the chain shape only control nodes have: intermediates are signed by the root at init and on control joins).",
			Status: Mitigated,
			Tests:  []string{"internal/rpc.TestClientRefusesComputeNodeServer", "internal/rpc.TestVerifyPinned", "node.TestJoinMITM"},
		},
		{
			ID:       "T-019",
			Title:    "TLS session resumption skips certificate checks",
			STRIDE:   "S",
			Asset:    "every mutual-TLS API",
			Boundary: "control-plane API",
			Attacker: "a client whose CA is no longer trusted (or, later, whose identity is revoked) holding a session " +
				"ticket from before",
			Mitigation: "API servers issue no session tickets: every connection is a full handshake that verifies the " +
				"client's SVID against the current bundle.",
			Status: Mitigated,
			Tests:  []string{"internal/rpc.TestResumedSessionsReverify"},
		},
		{
			ID:       "T-025",
			Title:    "Stolen intermediate CA key after a rotation",
			STRIDE:   "S",
			Asset:    "every identity: an intermediate signs SVIDs for any ID in the trust domain",
			Boundary: "node data directory",
			Attacker: "someone holding a control node's old intermediate key and certificate (a disk image, a backup) " +
				"after the CA was rotated, minting SVIDs with it",
			Mitigation: "A root rotation moves every control node to a new intermediate under a new root and then drops the " +
				"old root from every bundle, so nothing the old intermediates sign verifies any more; old intermediates are " +
				"never used again. An intermediates-only rotation leaves the old ones valid under the same root until they " +
				"expire: rotate with --root when a key may have leaked. Removing a control node revokes its node ID, which " +
				"also refuses its intermediate (same SPIFFE ID) on every call the control plane checks.",
			Status: Mitigated,
			Tests:  []string{"node.TestCARotationUnderWorkloadStream"},
		},
		{
			ID:       "T-026",
			Title:    "Root CA key exposure on a running control node",
			STRIDE:   "I",
			Asset:    "the root CA key",
			Boundary: "node data directory",
			Attacker: "someone who compromises the control node holding the sealed root key together with its KEK",
			Mitigation: "`unum ca export-root` moves the root key off the cluster: the key is written to a new 0600 file on " +
				"the admin's machine (never overwriting one) and only after that file is synced is the sealed copy deleted; " +
				"from then on only intermediates sign. Control joins and rotations that need the root then fail with an " +
				"error naming `unum ca import-root FILE` or `--root-key FILE` (one command, never stored). Import accepts " +
				"only a key belonging to a root of the current bundle.",
			Status: Mitigated,
			Tests:  []string{"node.TestCARootOffline", "cmd/unum.TestCACommands"},
		},
		{
			ID:       "T-027",
			Title:    "A CA rotation leaves workloads without a trust path",
			STRIDE:   "D",
			Asset:    "availability of every mutual-TLS connection between workloads and to the control plane",
			Boundary: "Workload API socket; control-plane API",
			Attacker: "none needed: a rotation that signs with a new root before every verifier trusts it, or drops the " +
				"old root while certificates under it are still in use, breaks handshakes cluster-wide",
			Mitigation: "The rotation is a state machine with a fixed order: the new root joins the bundle beside the old " +
				"one; nothing chains to it until every live node reports it in its heartbeat (so every Workload API stream " +
				"carries it); only then do control nodes switch intermediates; the old root leaves the bundle only after " +
				"the longest leaf lifetime any control node signs has passed since the last switch. Keys are replaced so " +
				"that a crash leaves a matching pair. Nodes down across the switch must join again.",
			Status: Mitigated,
			Tests:  []string{"control.TestRotationStep", "node.TestCARotationUnderWorkloadStream", "node.TestReplacePairRecovers"},
		},
		{
			ID:       "T-028",
			Title:    "Forged CA rotation, export or intermediate request",
			STRIDE:   "E",
			Asset:    "the root and intermediate CA keys",
			Boundary: "control-plane API",
			Attacker: "a compute node, a workload or a non-admin user calling the CA service; a control node asking for " +
				"an intermediate outside a rotation or for another node",
			Mitigation: "Rotate, ExportRoot, ConfirmExportRoot and ImportRoot are admin-only and privileged (refused while " +
				"the server's revocation view is stale); SignIntermediate is open to nodes at the authorizer but the " +
				"handler requires a control node's membership record, a rotation waiting for intermediates with the given " +
				"id, and a CSR for the caller's own node ID.",
			Status: Mitigated,
			Tests:  []string{"internal/rpc.TestCAMethodsPrivileged", "node.TestSignIntermediateRefusesNonControl"},
		},
	}
	sortByID(threats)
	return threats
}
