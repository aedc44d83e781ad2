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
			Crosses:    []string{"offline", "enrolment"},
			Capability: NetworkPeer,
			Mitigation: "Tokens are single-use (marked used when redeemed), expire after a short TTL (default 15m), " +
				"fix the node name and roles, and carry 32 random bytes of secret of which the control plane stores only " +
				"the SHA-256, compared in constant time; only a caller holding the secret learns whether a token is used " +
				"or expired, and no error or log line contains the secret.",
			Status: Mitigated,
			Tests:  []string{"identity/jointoken.TestRecordCheck", "control.TestJoinMisuse", "node.TestJoinRefusedNodeExits", "cmd/unum.TestAttackSuite/a_used_join_token_cannot_be_replayed", "cmd/unum.TestAttackSuite/an_expired_join_token_is_refused"},
		},
		{
			ID:       "T-002",
			Title:    "CSR SAN smuggling",
			STRIDE:   "E",
			Asset:    "the CA's signing authority: which SPIFFE IDs and names a certificate vouches for",
			Boundary: "enrolment listener and SVID renewal RPC into the CA",
			Attacker: "a joining or enrolled node that submits a crafted CSR: extra or foreign URI SANs, DNS/IP/e-mail SANs, " +
				"CA basic constraints, another node's name or another trust domain",
			Crosses:    []string{"enrolment", "control-api"},
			Capability: NetworkPeer,
			Mitigation: "The CA builds every certificate from its own template: from the CSR it takes only the public key " +
				"(after checking the CSR's signature) and requires exactly the one URI SAN the server derived from the token " +
				"or the caller's verified identity; anything else in the CSR is refused, not ignored.",
			Status: Mitigated,
			Tests:  []string{"identity/ca.TestVerifyCSR", "identity/ca.TestCSRSubjectIsNeverCopied", "control.TestJoinMisuse", "cmd/unum.TestAttackSuite/a_join_csr_cannot_smuggle_extra_names", "cmd/unum.TestAttackSuite/a_renewal_csr_cannot_smuggle_another_identity"},
		},
		{
			ID:       "T-003",
			Title:    "PID reuse during workload attestation",
			STRIDE:   "S",
			Asset:    "workload SVIDs",
			Boundary: "Workload API socket",
			Attacker: "a local process that connects, exits, and has its pid recycled by a process of a workload it wants " +
				"to impersonate, so that attestation by pid reads the victim's cgroup",
			Crosses:    []string{"workload-api"},
			Capability: CompromisedWorkload,
			Mitigation: "The agent takes a pidfd for the peer from the socket at connect time (SO_PEERPIDFD, or " +
				"SO_PEERCRED plus pidfd_open and a re-check), never a bare pid, reads the process's uid, gids and " +
				"executable from /proc, and then checks through the pidfd that the same process is still alive; if it " +
				"is gone the call is refused, so a recycled pid never inherits an identity.",
			Status: Mitigated,
			Tests:  []string{"identity/attest.TestProcessGone", "cmd/unum.TestAttackSuite/a_recycled_pid_does_not_inherit_a_workload_api_connection"},
		},
		{
			ID:       "T-004",
			Title:    "Exec after connect",
			STRIDE:   "S",
			Asset:    "workload SVIDs",
			Boundary: "Workload API socket",
			Attacker: "a process that connects to the Workload API and then execs another program (e.g. a setuid " +
				"or allow-listed binary), hoping the identity attested for the new image is served on the old connection",
			Crosses:    []string{"workload-api"},
			Capability: CompromisedWorkload,
			Mitigation: "Attestation happens on every call and before every streamed update, not once per connection; " +
				"the executable's identity (device, inode) is recorded at connect and a process that has exec'd another " +
				"binary since is refused. Path and sha256 selectors are accepted only together with a uid or gid selector. " +
				"Not covered: a connection inherited by a forked child while the connecting process lives on unchanged " +
				"is served as that process; the uid/gid boundary still holds, which is why binary selectors never stand alone.",
			Status: Mitigated,
			Tests:  []string{"identity/attest.TestExecAfterConnect", "identity/agent.TestExecAfterConnect", "identity/selector.TestValidateSet", "cmd/unum.TestAttackSuite/a_process_that_execs_after_connecting_is_not_served_as_the_new_binary"},
		},
		{
			ID:         "T-005",
			Title:      "Key files readable by other local users",
			STRIDE:     "I",
			Asset:      "private keys on disk: CA keys (sealed), node SVID keys, etcd keys, the KEK",
			Boundary:   "node data directory",
			Attacker:   "a local user or task on the node other than unum, reading key files left with loose permissions",
			Crosses:    []string{"node-disk"},
			Capability: CompromisedWorkload,
			Mitigation: "Key material is written 0600 inside 0700 directories, and readers refuse (fail closed, naming the " +
				"file and its mode) a key file whose mode lets group or others read it, rather than using it.",
			Status: Mitigated,
			Tests:  []string{"internal/seal.TestReadersRefuseLooseOrOddFiles", "node.TestRestartKeepsIdentity", "node.TestKeysOnDiskSealedAndPrivate"},
		},
		{
			ID:         "T-006",
			Title:      "etcd reached by a non-control identity",
			STRIDE:     "E",
			Asset:      "the consistent store: membership, policy bundles, assignments, join-token records, revocations",
			Boundary:   "etcd client and peer ports",
			Attacker:   "a compromised compute node or workload holding a valid node or workload SVID, connecting to etcd directly",
			Crosses:    []string{"control-quorum"},
			Capability: CompromisedWorkload,
			Mitigation: "etcd serves only mutual TLS with its own certificates, issued to control-plane processes and " +
				"checked by role; node and workload SVIDs are refused at the handshake, so everyone else goes through " +
				"unum RPCs and the policy.",
			Status: Mitigated,
			Tests:  []string{"storage/meta.TestForeignCertificatesRefused", "node.TestComputeSVIDCannotReachEtcd", "cmd/unum.TestAttackSuite/a_workload_cannot_reach_etcd_directly"},
		},
		{
			ID:         "T-007",
			Title:      "Key-encryption key on the same disk as the sealed keys",
			STRIDE:     "I",
			Asset:      "CA private keys sealed with Tink AEAD",
			Boundary:   "node data directory",
			Attacker:   "anyone with a copy of the data directory: a backup, a snapshot, a stolen or decommissioned disk",
			Crosses:    []string{"node-disk", "offline"},
			Capability: StolenDisk,
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
			Crosses:    []string{"control-quorum"},
			Capability: NetworkPeer,
			Mitigation: "The CA signs a workload SVID only after a batched linearizable etcd read confirms the " +
				"registration entry and the requesting node's membership; a member in the minority cannot complete the " +
				"read and refuses to mint (agents keep serving SVIDs they already hold until those expire).",
			Status: Mitigated,
			Tests:  []string{"storage/meta.TestMinorityCannotRead", "cmd/unum.TestDevCluster", "internal/faultcluster.TestFaults/a_minority_partition_cannot_change_policy_or_mint_and_converges_after_heal"},
		},
		{
			ID:       "T-009",
			Title:    "Man in the middle on join with another CA",
			STRIDE:   "S",
			Asset:    "the joining node's trust bundle, and the join token it sends",
			Boundary: "enrolment listener (the network between the joining node and it)",
			Attacker: "a network attacker, or a rogue unum cluster, presenting a certificate from another CA to a node " +
				"that is joining",
			Crosses:    []string{"enrolment"},
			Capability: NetworkPeer,
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
			Crosses:    []string{"workload-api"},
			Capability: CompromisedWorkload,
			Mitigation: "The agent serves an SVID only to a process whose attested uid/gid (and binary, where the " +
				"entry says so) match a registration entry for this node; everyone else gets PermissionDenied. The CA " +
				"re-checks every mint against the entry with a linearizable read. Scheduler-started tasks are attested " +
				"by their cgroup (T-095 to T-097).",
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
			Crosses:    []string{"control-api"},
			Capability: MaliciousInsider,
			Mitigation: "Registrations may only name workload IDs (spiffe://TD/ns/...) of the cluster's trust domain, " +
				"on a node that exists at the moment the entry is written (one etcd transaction).",
			Status: Mitigated,
			Tests:  []string{"control.TestCreateEntryValidation"},
		},
		{
			ID:         "T-012",
			Title:      "A node mints SVIDs for another node's workloads",
			STRIDE:     "E",
			Asset:      "workload SVIDs of other nodes",
			Boundary:   "control-plane API (Identity.MintX509SVID)",
			Attacker:   "a compromised compute node holding its own valid node SVID",
			Crosses:    []string{"control-api"},
			Capability: CompromisedNode,
			Mitigation: "The CA derives the node from the caller's verified SVID and signs only for an entry that names " +
				"that node (or all nodes) and the requested ID; it ignores any node name in the request.",
			Status: Mitigated,
			Tests:  []string{"control.TestMintRequiresEntry", "cmd/unum.TestAttackSuite/a_compromised_node_cannot_mint_for_foreign_workloads"},
		},
		{
			ID:         "T-013",
			Title:      "A non-admin principal performs administrative actions",
			STRIDE:     "E",
			Asset:      "join tokens, registration entries, cluster membership",
			Boundary:   "control-plane API",
			Attacker:   "a compromised node or workload, or a user without the admin role, holding a valid SVID",
			Crosses:    []string{"control-api", "enrolment"},
			Capability: CompromisedWorkload,
			Mitigation: "Every RPC passes one interceptor that classifies the verified peer SPIFFE ID, maps the method " +
				"to an action and resource, and asks the cluster's Rego policy (the shipped policy denies by default: users " +
				"by role (viewer reads, operator also manages entries, admin everything), nodes node operations on " +
				"themselves, everyone id.show); denials are PermissionDenied with a decision id and exit code 3. The " +
				"enrolment listener serves only Join and Login.",
			Status: Mitigated,
			Tests:  []string{"control.TestJoinMisuse", "control.TestCreateEntryValidation", "internal/rpc.TestPolicyAuthorizer", "policy.TestBuiltinBundleTestsPass", "cmd/unum.TestDevCluster", "cmd/unum.TestAttackSuite/a_workload_cannot_apply_policy_or_register_identities"},
		},
		{
			ID:       "T-014",
			Title:    "Server-side request forgery against the Workload API",
			STRIDE:   "S",
			Asset:    "workload SVIDs",
			Boundary: "Workload API socket",
			Attacker: "a confused program (e.g. a proxy following a user-supplied unix:// URL) that can be made to talk " +
				"to the agent socket on another process's behalf",
			Crosses:    []string{"workload-api"},
			Capability: NetworkPeer,
			Mitigation: "Every Workload API call must carry the workload.spiffe.io: true metadata header, as the SPIFFE " +
				"spec requires; calls without it are refused with InvalidArgument.",
			Status: Mitigated,
			Tests:  []string{"identity/agent.TestSecurityHeaderRequired"},
		},
		{
			ID:         "T-015",
			Title:      "Join token read from a command line",
			STRIDE:     "I",
			Asset:      "join tokens, and through a control token a root-signed intermediate CA",
			Boundary:   "the local machine: /proc/PID/cmdline is readable by every user",
			Attacker:   "a local user on the machine where a node is being joined, racing the node to the enrolment listener",
			Crosses:    []string{"offline", "enrolment"},
			Capability: CompromisedWorkload,
			Mitigation: "`unum node` takes the token from $UNUM_JOIN_TOKEN or --token-file (--token remains, documented as " +
				"visible to local users); `unum dev` passes tokens to its nodes in the environment only.",
			Status: Mitigated,
			Tests:  []string{"cmd/unum.TestDevCluster"},
		},
		{
			ID:         "T-016",
			Title:      "Another local user replaces the Workload API socket",
			STRIDE:     "S",
			Asset:      "workloads' trust in the agent: the SVIDs and bundles they receive",
			Boundary:   "Workload API socket",
			Attacker:   "a local user who can write to the socket's folder and binds an impostor socket in its place",
			Crosses:    []string{"workload-api"},
			Capability: CompromisedWorkload,
			Mitigation: "The agent serves only from a real folder (not a symlink) owned by its own uid and writable by " +
				"no one else; it replaces a stale socket only, never a live one or any other file.",
			Status: Mitigated,
			Tests:  []string{"identity/agent.TestServeSocketSafety"},
		},
		{
			ID:         "T-017",
			Title:      "Flooding the enrolment listener",
			STRIDE:     "D",
			Asset:      "etcd and the control node's CPU",
			Boundary:   "enrolment listener",
			Attacker:   "any network peer, unauthenticated, sending join requests with made-up tokens",
			Crosses:    []string{"enrolment"},
			Capability: NetworkPeer,
			Mitigation: "The enrolment listener serves only Join and Login, takes small messages, and passes every call through a " +
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
			Crosses:    []string{"control-api", "enrolment"},
			Capability: CompromisedNode,
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
			Crosses:    []string{"control-api"},
			Capability: CompromisedWorkload,
			Mitigation: "API servers issue no session tickets: every connection is a full handshake that verifies the " +
				"client's SVID against the current bundle.",
			Status: Mitigated,
			Tests:  []string{"internal/rpc.TestResumedSessionsReverify"},
		},
		{
			ID:       "T-036",
			Title:    "A removed node reconnects",
			STRIDE:   "S",
			Asset:    "cluster membership; for a control node, its intermediate CA and etcd membership",
			Boundary: "control-plane API; etcd peer port",
			Attacker: "a node removed with `unum node rm` (decommissioned, or removed because it was compromised) that " +
				"keeps its data folder and tries to go on: heartbeats, minting, renewing, serving workloads, signing with " +
				"its intermediate",
			Crosses:    []string{"control-api", "control-quorum"},
			Capability: CompromisedNode,
			Mitigation: "node rm removes the etcd member first, then in one transaction revokes the node's SPIFFE ID " +
				"(every certificate for it issued before now+5s is refused by every unum server, on every call and open " +
				"stream), deletes its record and node-specific registrations and keeps a removal record. The revocation " +
				"covers the chain: an intermediate carries its node's ID, so everything a removed control node's " +
				"intermediate signed before the removal is refused too. The node's heartbeat is refused as revoked and " +
				"it stops; joining again needs a new token. The registrations deleted with it have their IDs revoked too, " +
				"so workload SVIDs minted for a compromised node stop working. The node holding the root key is not " +
				"removed until the key is moved off (or with --force when it is lost); a name the cluster does not know " +
				"(a node that joined after a restored backup) can still be revoked with --force.",
			Status: Mitigated,
			Tests: []string{"node.TestRemoveComputeNode", "cmd/unum.TestNodeRemoveControl", "internal/rpc.TestClientRefusesRevokedServer", "control.TestRemovedControlNodeKeepsItsIntermediate",
				"identity/revocation.TestCheckChainRevokesIntermediate", "internal/rpc.TestRevokedCallerRefused"},
		},
		{
			ID:       "T-037",
			Title:    "A deleted registration's workload keeps using its live SVID",
			STRIDE:   "E",
			Asset:    "workload identities",
			Boundary: "control-plane API and every node's API",
			Attacker: "a workload whose registration entry was deleted (decommissioned, or found compromised) using the " +
				"SVID it already holds until it expires (up to its TTL, 1h by default)",
			Crosses:    []string{"control-api", "node-api"},
			Capability: CompromisedWorkload,
			Mitigation: "Deleting the last entry that grants an ID revokes the ID in the same etcd transaction; control " +
				"nodes see it on their etcd watch, other nodes on the WatchRevocations stream, and every server then " +
				"refuses the SVID on every call and cuts its open streams (measured: p99 under 25 ms on 3 nodes, target 2 s). " +
				"The agent drops the entry at the next sync and stops serving it.",
			Status: Mitigated,
			Tests: []string{"node.TestDeletedEntryRevoked", "internal/rpc.TestRevokedStreamCut", "identity/revocation.TestSetCheck",
				"control.TestDeleteSharedEntries"},
		},
		{
			ID:       "T-038",
			Title:    "A server cut off from the control plane honours a revoked credential",
			STRIDE:   "E",
			Asset:    "every privileged action (minting, changing state)",
			Boundary: "control-plane quorum; the revocation stream",
			Attacker: "someone holding a revoked certificate who talks to a server that cannot learn of the revocation: " +
				"a control node in a minority partition, or a node whose revocation stream is blocked",
			Crosses:    []string{"control-quorum", "control-api"},
			Capability: CompromisedWorkload,
			Mitigation: "Every server tracks how old its revocation view is: control nodes from etcd progress " +
				"notifications (requested every second; none arrive without a leader), other nodes from stream heartbeats " +
				"that carry the sender's own age. Past the bound (10 s) the server refuses every privileged action with " +
				"Unavailable and says why, until it catches up; unprivileged calls (WhoAmI, Status) keep working. " +
				"Enrolment (Join, Login) refuses too. Before its first load a view serves only WhoAmI, Status and " +
				"heartbeats; a set older (by etcd revision) than the one held is ignored, so failing over to a lagging " +
				"control node does not roll revocations back.",
			Status: Mitigated,
			Tests: []string{"internal/rpc.TestStaleViewRefusesPrivileged", "identity/revocation.TestViewFreshness",
				"cmd/unum.TestDevCluster", "control.TestEnrolmentRefusedOnStaleView",
				"internal/rpc.TestUnloadedViewServesOnlyHarmlessCalls", "identity/revocation.TestViewIgnoresOlderSets", "internal/faultcluster.TestFaults/a_minority_partition_cannot_change_policy_or_mint_and_converges_after_heal"},
		},
		{
			ID:       "T-039",
			Title:    "A certificate signed just after a revocation is born revoked, or escapes it",
			STRIDE:   "D",
			Asset:    "availability of re-added identities; exactness of revocation",
			Boundary: "clocks of control nodes",
			Attacker: "not an attacker but a race: an identity revoked and granted again within seconds (user removed " +
				"and added, entry deleted and registered, node removed and joined), or control nodes whose clocks differ",
			Crosses:    []string{"offline", "control-api"},
			Capability: MaliciousInsider,
			Mitigation: "A revocation's issued-before time is the revoking server's clock plus 5 s (the tolerated skew " +
				"between control nodes); the CA waits out that tail before signing for the ID, so fresh certificates are " +
				"never refused; the issue time is read back exactly from NotBefore (backdated by exactly 30 s, in whole " +
				"seconds, which FirstSignable accounts for).",
			Status: Mitigated,
			Tests:  []string{"identity/revocation.TestFirstSignable", "node.TestDeletedEntryRevoked", "node.TestRemoveComputeNode"},
		},
		{
			ID:         "T-034",
			Title:      "Metrics endpoint exposes the node",
			STRIDE:     "I",
			Asset:      "what the node's metrics reveal (CA fingerprints and expiries, enrolment outcomes, etcd health) and its CPU",
			Boundary:   "metrics endpoint",
			Attacker:   "a network peer scraping /metrics, or flooding it with label-exploding requests; a revoked scraper",
			Crosses:    []string{"metrics"},
			Capability: NetworkPeer,
			Mitigation: "Plain HTTP is served only on a loopback address (decided on the address actually bound, so 0.0.0.0 " +
				"counts as exposed); any other address serves HTTPS with mutual TLS requiring a client SVID of the trust " +
				"domain whose chain is not revoked, and http:// on such an address is refused at start. Labels are fixed " +
				"small sets (callers' values outside them become \"other\") plus CA fingerprints; no SPIFFE ID, node name, " +
				"token or secret is a label. At most 4 scrapes run at once.",
			Status: Mitigated,
			Tests: []string{"internal/metrics.TestServeRule", "internal/metrics.TestMTLSScrape", "internal/metrics.TestAutoOnWildcardIsMTLS",
				"internal/metrics.TestListenRefusesPlainOnAllInterfaces", "internal/metrics.TestCountersAreBounded"},
		},
		{
			ID:         "T-035",
			Title:      "A stale revocation view goes unnoticed",
			STRIDE:     "E",
			Asset:      "revocation: a revoked certificate must stop working everywhere within seconds",
			Boundary:   "control-plane quorum",
			Attacker:   "an attacker holding a revoked certificate, counting on a node whose revocation feed has quietly stopped",
			Crosses:    []string{"control-quorum", "control-api"},
			Capability: CompromisedWorkload,
			Mitigation: "A stale view already refuses privileged actions (rpc interceptor); in addition every node exports its " +
				"view's age and bound (-1 before it loads), reports the age in its heartbeats, and `unum status` warns about " +
				"any node whose view is older than the bound or not loaded, or which stopped reporting, so the operator " +
				"sees it before anyone has to exploit it.",
			Status: Mitigated,
			Tests: []string{"control.TestWarnings", "internal/metrics.TestGaugesAtScrapeTime", "node.TestMetricsEndpoint",
				"internal/cli.TestStatusShowsWarnings"},
		},
		{
			ID:       "T-020",
			Title:    "Stolen user certificate used after `unum user rm`",
			STRIDE:   "S",
			Asset:    "a person's authority (spiffe://TD/user/NAME and the role in their record)",
			Boundary: "control-plane API",
			Attacker: "someone holding a removed (or revoked) user's certificate and key, copied from their config, " +
				"including over a connection opened before the removal",
			Crosses:    []string{"control-api"},
			Capability: MaliciousInsider,
			Mitigation: "RemoveUser deletes the user record and their pending tokens and records a revocation of the " +
				"user's ID in the same etcd transaction; the API interceptor checks every call's chain against the " +
				"revocation view, so an open connection is refused (Unauthenticated, with the reason) at its next call, " +
				"and renewal with the revoked certificate is refused the same way. RevokeUser does the same and keeps " +
				"the user, who logs in again with a reissued token; roles are read from the record, so a removed " +
				"user's role is gone too. A user added again later gets certificates issued after the revocation.",
			Status: Mitigated,
			Tests:  []string{"control.TestRemovedUserLiveConnectionRefused", "control.TestRevokeUser", "cmd/unum.TestUserLoginEndToEnd"},
		},
		{
			ID:       "T-021",
			Title:    "User enrolment token replay",
			STRIDE:   "S",
			Asset:    "a person's identity (spiffe://TD/user/NAME)",
			Boundary: "out-of-band token hand-over; enrolment listener",
			Attacker: "anyone who reads a user token (chat, shell history) or captures one already redeemed, and presents " +
				"it again, concurrently, as a node token, or after its user was removed and re-added",
			Crosses:    []string{"offline", "enrolment"},
			Capability: NetworkPeer,
			Mitigation: "User tokens are jointoken tokens of their own kind (a node token is refused at Login and a user " +
				"token at Join, without being consumed); the control plane stores only the secret's hash; Login checks " +
				"the token, the CSR and the lifetime first, then one etcd transaction marks the token used, conditional " +
				"on the token and the user record being unchanged, so of concurrent uses exactly one wins. Tokens are " +
				"deleted with their user and valid only for the incarnation of the user they were minted for. The " +
				"client pins the cluster's CA by the token's fingerprint before sending it, and `unum login` takes the " +
				"token from $UNUM_LOGIN_TOKEN or a file.",
			Status: Mitigated,
			Tests:  []string{"identity/jointoken.TestUserKind", "control.TestUserLoginMisuse", "cmd/unum.TestUserLoginEndToEnd"},
		},
		{
			ID:       "T-022",
			Title:    "Break-glass admin recovery misused",
			STRIDE:   "E",
			Asset:    "the built-in admin identity (spiffe://TD/user/admin)",
			Boundary: "node data directory",
			Attacker: "a local user of a control node, or someone with a copy of its data folder, who runs " +
				"`unum admin recover` to become the cluster's admin",
			Crosses:    []string{"node-disk"},
			Capability: CompromisedWorkload,
			Mitigation: "Recovery signs with the node's intermediate CA key, which is sealed under the KEK: it needs read " +
				"access to the node's keys folder (0700, the node's uid) and the KEK file kept outside the data folder " +
				"(refused when inside), which is exactly what can already sign any certificate, so it grants nothing " +
				"new. The credential is short-lived (default 1 h, at most 24 h), and every use is logged as a WARN line " +
				"and printed on the terminal with the local uid, host and time. A stolen admin config is revoked with " +
				"`unum user revoke admin`; the built-in admin cannot be removed or re-added over the API.",
			Status: Mitigated,
			Tests:  []string{"node.TestRecoverAdmin", "cmd/unum.TestUserLoginEndToEnd"},
		},
		{
			ID:       "T-023",
			Title:    "A user raises their own role",
			STRIDE:   "E",
			Asset:    "roles (admin, operator, viewer) and what they allow",
			Boundary: "control-plane API and enrolment listener",
			Attacker: "an enrolled operator or viewer who renews, re-enrols, or crafts requests to gain a higher role, " +
				"or asks for a certificate for another user or the admin",
			Crosses:    []string{"control-api", "enrolment"},
			Capability: MaliciousInsider,
			Mitigation: "A role lives only in the user's etcd record, written by an admin (AddUser, admin only; a " +
				"reissued token keeps the role, changing it takes rm and add); it is never in a certificate or a " +
				"request the user controls. Login names the certificate from the token's record, and RenewUser only " +
				"for the caller's own verified ID, with a CSR for that ID and a new key; the CA refuses any other name.",
			Status: Mitigated,
			Tests:  []string{"control.TestUserRoles", "control.TestLoginAndRenew", "control.TestUserLoginMisuse"},
		},
		{
			ID:       "T-024",
			Title:    "Expired user certificate on a long-lived connection",
			STRIDE:   "S",
			Asset:    "a person's authority after their certificate's lifetime",
			Boundary: "control-plane API",
			Attacker: "a client that opened a connection while its user certificate was valid and keeps using it " +
				"after the certificate expired (TLS checks validity only in the handshake)",
			Crosses:    []string{"control-api"},
			Capability: MaliciousInsider,
			Mitigation: "The API interceptor refuses every call from a user whose certificate has expired " +
				"(Unauthenticated), whatever the age of the connection; new connections fail the handshake; an " +
				"expired certificate cannot renew. (Node and workload connections are not checked this way: they " +
				"rotate SVIDs under long-lived connections; revocation cuts them off.)",
			Status: Mitigated,
			Tests:  []string{"control.TestUserCertificateExpiry"},
		},
		{
			ID:       "T-030",
			Title:    "A restored backup replays revoked identities",
			STRIDE:   "S",
			Asset:    "the revocation set: identities refused because they were compromised or removed",
			Boundary: "control-plane quorum",
			Attacker: "the holder of a revoked certificate (a stolen laptop, a removed node) waiting for the control plane " +
				"to be rebuilt from a backup",
			Crosses:    []string{"control-quorum", "offline"},
			Capability: MaliciousInsider,
			Mitigation: "Revocations live in etcd, so every backup carries the set as of its time and a restore enforces " +
				"it from the first call. Revocations made after the backup are not in it: restore says so, the operator " +
				"makes them again (README), and certificate lifetimes bound the exposure (node SVIDs 1h, user " +
				"certificates at most 7 days). Unused join and user tokens are voided by the restore. A chain with a " +
				"revoked certificate anywhere is refused even when its leaf is dated into the restore window (which " +
				"otherwise admits renewal calls), so a revoked intermediate's key cannot forge a renewable leaf.",
			Status: Mitigated,
			Tests:  []string{"node.TestBackupRestoreAfterLosingMajority", "identity/revocation.TestCheckChainRevocationBeatsRestoreWindow"},
		},
		{
			ID:       "T-031",
			Title:    "Certificates issued after a backup used against the restored state",
			STRIDE:   "E",
			Asset:    "membership and authority that the restored state no longer grants",
			Boundary: "control-plane API",
			Attacker: "a principal whose standing changed after the backup (a node that joined, an identity revoked, a " +
				"user created or promoted) presenting a certificate issued after the backup",
			Crosses:    []string{"control-api"},
			Capability: CompromisedNode,
			Mitigation: "A restore writes the window (backup time less 1s and the clock-skew allowance, restore time); " +
				"every certificate issued inside it is refused on every method but renewal, and renewal re-checks the " +
				"holder against the restored state. Nodes renew at once when told to (a status detail, not a message) " +
				"and reconnect with the new certificate.",
			Status: Mitigated,
			Tests: []string{"node.TestBackupRestoreAfterLosingMajority", "node.TestRestoreWindow",
				"internal/rpc.TestMustRenewDetail"},
		},
		{
			ID:         "T-032",
			Title:      "Theft of a backup file",
			STRIDE:     "I",
			Asset:      "the CA keys; the cluster's etcd contents",
			Boundary:   "backup storage, outside the cluster",
			Attacker:   "anyone who copies a backup file (backup bucket, operator laptop)",
			Crosses:    []string{"offline"},
			Capability: StolenDisk,
			Mitigation: "CA keys stay sealed under the KEK (Tink AES-256-GCM) exactly as on disk; no plain key is in a " +
				"backup (not the node key, not the etcd member key, not the etcd CA: a restore makes a new one). The " +
				"thief reads etcd's contents in clear (nodes, entries, users and roles, revocations, public JWT keys, " +
				"token hashes): cluster metadata, no signing power. With the KEK too, the thief holds the CA: keep " +
				"KEKs and backups apart. The CLI writes backups 0600 and never overwrites one.",
			Status: Mitigated,
			Tests:  []string{"node.TestBackupRestoreAfterLosingMajority", "internal/backup.TestWriterRefusesUnknownFiles"},
		},
		{
			ID:       "T-033",
			Title:    "A tampered or corrupt backup is restored",
			STRIDE:   "T",
			Asset:    "the restored cluster's state and CA",
			Boundary: "backup storage, outside the cluster",
			Attacker: "someone with write access to stored backups, without the KEK, who edits members and the manifest " +
				"alike (or a damaged copy)",
			Crosses:    []string{"offline"},
			Capability: StolenDisk,
			Mitigation: "The manifest lists every member's SHA-256 and is itself tagged: its SHA-256 sealed under the KEK " +
				"(AEAD, purpose-bound). Restore verifies tag, hashes and structure (known names, regular files, no " +
				"duplicates, nothing after the tag) and the CA material against the manifest before it writes anything; " +
				"etcd checks its own snapshot hash. Limits: a KEK holder can forge (they can sign anything already), " +
				"and an older genuine backup is not detected as old: restore prints its time.",
			Status: Mitigated,
			Tests: []string{"internal/backup.TestCorruptArchivesRefused", "internal/backup.TestRoundTrip",
				"node.TestBackupRestoreAfterLosingMajority"},
		},
		{
			ID:       "T-025",
			Title:    "Stolen intermediate CA key after a rotation",
			STRIDE:   "S",
			Asset:    "every identity: an intermediate signs SVIDs for any ID in the trust domain",
			Boundary: "node data directory",
			Attacker: "someone holding a control node's old intermediate key and certificate (a disk image, a backup) " +
				"after the CA was rotated, minting SVIDs with it",
			Crosses:    []string{"node-disk", "offline"},
			Capability: StolenDisk,
			Mitigation: "A root rotation moves every control node to a new intermediate under a new root and then drops the " +
				"old root from every bundle, so nothing the old intermediates sign verifies any more; old intermediates are " +
				"never used again. An intermediates-only rotation leaves the old ones valid under the same root until they " +
				"expire: rotate with --root when a key may have leaked. Removing a control node revokes its node ID, which " +
				"also refuses its intermediate (same SPIFFE ID) on every call the control plane checks.",
			Status: Mitigated,
			Tests:  []string{"node.TestCARotationUnderWorkloadStream"},
		},
		{
			ID:         "T-026",
			Title:      "Root CA key exposure on a running control node",
			STRIDE:     "I",
			Asset:      "the root CA key",
			Boundary:   "node data directory",
			Attacker:   "someone who compromises the control node holding the sealed root key together with its KEK",
			Crosses:    []string{"node-disk"},
			Capability: CompromisedNode,
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
			Crosses:    []string{"workload-api", "control-api"},
			Capability: MaliciousInsider,
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
			Crosses:    []string{"control-api"},
			Capability: CompromisedWorkload,
			Mitigation: "Rotate, ExportRoot, ConfirmExportRoot and ImportRoot are admin-only and privileged (refused while " +
				"the server's revocation view is stale); SignIntermediate is open to nodes at the authorizer but the " +
				"handler requires a control node's membership record, a rotation waiting for intermediates with the given " +
				"id, and a CSR for the caller's own node ID.",
			Status: Mitigated,
			Tests:  []string{"internal/rpc.TestPolicyAuthorizer", "node.TestSignIntermediateRefusesNonControl"},
		},
		{
			ID:       "T-040",
			Title:    "Policy lockout",
			STRIDE:   "D",
			Asset:    "the ability to administer the cluster and the system's own operation (SVID renewal, heartbeats, feeds)",
			Boundary: "control-plane API (Policy.Apply, Policy.Rollback)",
			Attacker: "an admin who applies, by mistake or under duress, a bundle that denies the admin policy.apply or " +
				"denies nodes what they need to stay members, so nobody can undo it",
			Crosses:    []string{"policy", "control-api"},
			Capability: MaliciousInsider,
			Mitigation: "Before a bundle is stored it is compiled, its Rego tests run, and the lockout guard evaluates it " +
				"on a must-allow list held in code (policy.MustAllow: the admin applying and rolling back policy, nodes " +
				"renewing SVIDs, heartbeating, following revocations and policy, minting for their workloads, control " +
				"nodes renewing intermediates); a bundle failing any is refused unless --force, and the forced findings " +
				"are kept in the revision's history. Rollback goes through the same guard. The built-in user admin is " +
				"granted everything by the shipped policy, and `unum admin recover` can always re-mint it.",
			Status: Mitigated,
			Tests:  []string{"control.TestPolicyBadBundles", "policy.TestBundleCases", "cmd/unum.TestPolicyDevCluster", "cmd/unum.TestAttackSuite/a_bundle_that_locks_out_the_admin_or_lowers_a_privilege_is_refused"},
		},
		{
			ID:       "T-041",
			Title:    "A bundle marks a fixed-privileged action unprivileged",
			STRIDE:   "T",
			Asset:    "fail-closed handling of privileged actions (fresh revocation and policy views; audit durability)",
			Boundary: "control-plane API (Policy.Apply)",
			Attacker: "an admin or a compromised admin credential applying a bundle whose privileged rule leaves out " +
				"policy changes, identity changes, CA or node operations, delegation, exec or audit configuration, " +
				"to make them run on stale views or, later, without a durable audit record",
			Crosses:    []string{"policy", "control-api"},
			Capability: MaliciousInsider,
			Mitigation: "The minimum privileged set is fixed in code (policy.MinimumPrivileged) and or'ed into every " +
				"decision, whatever the bundle says; the apply guard also refuses a bundle that calls any of them " +
				"unprivileged unless --force, and even forced the floor holds.",
			Status: Mitigated,
			Tests:  []string{"policy.TestBundleCases", "control.TestPolicyBadBundles", "control.TestPolicyFloorSurvivesForce", "cmd/unum.TestAttackSuite/a_bundle_that_locks_out_the_admin_or_lowers_a_privilege_is_refused"},
		},
		{
			ID:       "T-042",
			Title:    "A workload or node changes policy",
			STRIDE:   "E",
			Asset:    "the cluster's policy: what every principal may do",
			Boundary: "control-plane API (Policy service)",
			Attacker: "a compromised workload or node holding a valid SVID (including a workload in a namespace named " +
				"admin) calling Apply, Rollback or StartShadow",
			Crosses:    []string{"control-api", "policy"},
			Capability: CompromisedWorkload,
			Mitigation: "Policy methods are themselves decided by the policy; the shipped policy grants policy.apply, " +
				"policy.rollback and policy.shadow to the admin role only, and the decision is privileged.",
			Status: Mitigated,
			Tests:  []string{"control.TestPolicyNotForWorkloadsOrNodes", "internal/rpc.TestPolicyAuthorizer", "cmd/unum.TestAttackSuite/a_workload_cannot_apply_policy_or_register_identities"},
		},
		{
			ID:       "T-043",
			Title:    "A node acts as a workload, a user or another node",
			STRIDE:   "E",
			Asset:    "workload data and identities; other nodes' standing",
			Boundary: "control-plane API",
			Attacker: "a compromised node using its node SVID to call user or workload actions, mint SVIDs for non-" +
				"workload identities, or renew, heartbeat or sync as another node",
			Crosses:    []string{"control-api"},
			Capability: CompromisedNode,
			Mitigation: "The shipped policy grants nodes only node actions on the resource node/-/SELF (the caller's own " +
				"name, taken from its verified SVID by the routes table, never from the request) and svid.mint for " +
				"workload identities (the handler then requires a registration assigned to that node); nothing else.",
			Status: Mitigated,
			Tests:  []string{"internal/rpc.TestPolicyAuthorizer", "policy.TestBuiltinBundleTestsPass", "cmd/unum.TestPolicyDevCluster", "cmd/unum.TestAttackSuite/a_compromised_node_cannot_mint_for_foreign_workloads"},
		},
		{
			ID:       "T-044",
			Title:    "A stale policy revision keeps deciding after apply",
			STRIDE:   "E",
			Asset:    "a tightened policy taking effect everywhere",
			Boundary: "control-plane API on every node; the policy watch",
			Attacker: "someone who keeps a node from hearing about a new revision (partition, slow or dead watch, a " +
				"revision the node cannot compile) to use rights the new revision removed",
			Crosses:    []string{"policy", "control-api", "node-api"},
			Capability: CompromisedWorkload,
			Mitigation: "Each node confirms at least every second that it serves the latest revision (etcd watch progress " +
				"on control nodes; the control plane's stream, carrying its own age, elsewhere); a node that has not " +
				"confirmed within 10 s, or knows of a newer revision it does not serve, refuses every privileged action " +
				"with Unavailable and the reason; served and latest revisions are compared for equality, so a node ahead of a " +
				"store restored from backup is stale too, and a revision pushed by a lagging control node starts unconfirmed. Heartbeats report each node's revision (`unum policy status`).",
			Status: Mitigated,
			Tests:  []string{"internal/rpc.TestStalePolicyRefusesPrivileged", "control.TestPolicyUnloadableRevisionGoesStale", "policy.TestDeciderStaleView", "policy.TestViewFreshness", "policy.TestViewStoreRestored", "node.TestComputeNodeFollowsPolicy", "internal/faultcluster.TestFaults/a_minority_partition_cannot_change_policy_or_mint_and_converges_after_heal"},
		},
		{
			ID:         "T-045",
			Title:      "An RPC ships without mediation",
			STRIDE:     "E",
			Asset:      "complete mediation of the API",
			Boundary:   "control-plane API",
			Attacker:   "none needed: a new method added without an authorization rule would be reachable by anyone",
			Crosses:    []string{"control-api", "node-api"},
			Capability: CompromisedWorkload,
			Mitigation: "The authorizer maps methods to actions through one routes table; a method without a route is " +
				"denied to everyone, the admin included, and a test fails when any method of the API has no route.",
			Status: Mitigated,
			Tests:  []string{"internal/rpc.TestEveryMethodHasARoute", "internal/rpc.TestPolicyAuthorizer"},
		},
		{
			ID:       "T-046",
			Title:    "A policy reads input unum never sends",
			STRIDE:   "E",
			Asset:    "the meaning of the policy: rules that silently never match grant or deny the wrong things",
			Boundary: "control-plane API (Policy.Apply)",
			Attacker: "a typo or a misunderstanding (input.subject.roles for input.subject.attributes.role) in a deny " +
				"rule that then never fires",
			Crosses:    []string{"policy"},
			Capability: MaliciousInsider,
			Mitigation: "Bundles are type-checked against the input JSON schema (policy/input.schema.json, closed " +
				"objects): a reference to a field not in it fails compilation at file:line, and the bundle is refused.",
			Status: Mitigated,
			Tests:  []string{"policy.TestBundleCases", "control.TestPolicyBadBundles"},
		},
		{
			ID:       "T-065",
			Title:    "A node lies to `unum audit verify` about its own log",
			STRIDE:   "TR",
			Asset:    "the audit record of what happened on a node, and an operator's belief that it is intact",
			Boundary: "CLI to a node's API (Audit.Verify)",
			Attacker: "root on a node, holding its audit signing key, who rewrote or truncated entries the witness had " +
				"already countersigned, re-signed checkpoints over the new log, and answers verify with a clean report",
			Crosses:    []string{"node-api"},
			Capability: CompromisedNode,
			Mitigation: "The CLI does not take the node's report as the verdict. It fetches the witness's newest " +
				"countersigned checkpoint of the node and the published keys from the control plane, checks the node's " +
				"signature and its countersignatures by published witness keys (at least one must verify; others count " +
				"for nothing), asks the node for its newest checkpoint with a consistency " +
				"proof from the witnessed size, and checks that signature and that proof itself: a truncated log (newest " +
				"size below the witnessed one) or a rewritten or forked one (the proof does not lead from the witnessed " +
				"root to the node's) fails with FAIL and a non-zero exit, whatever the node's report says. Entries after " +
				"the newest witnessed checkpoint (about a second's worth while the witness is reachable) have only the node's word, and a " +
				"control node that witnessed its own checkpoints is reported as witnessed \"by itself only\": its " +
				"countersignature adds nothing against itself.",
			Status: Mitigated,
			Tests:  []string{"internal/cli.TestVerifyCatchesALyingNode", "internal/cli.TestSelfWitnessSaysSo"},
		},
		{
			ID:       "T-066",
			Title:    "A forged or altered audit proof convinces a third party",
			STRIDE:   "TR",
			Asset:    "what a proof bundle from `unum audit proof` tells someone outside the cluster (an auditor, a court)",
			Boundary: "a proof bundle file, checked offline (`unum audit proof --check FILE --keys FILE`)",
			Attacker: "whoever hands over a bundle: someone who edits the event (its outcome, subject, time), swaps the " +
				"checkpoint, re-signs it with another key, or crafts hashes and JSON to fit",
			Crosses:    []string{"offline"},
			Capability: MaliciousInsider,
			Mitigation: "The verifier is a pure function of the bundle and the published keys (audit.VerifyProofBundle, " +
				"fuzzed): strict parsing (unknown fields, trailing data and other formats refused); the leaf is the " +
				"embedded event compacted, which is the stored bytes exactly; the event must name the checkpoint's node " +
				"and the bundle's index; the checkpoint note must be canonical and signed by the node's published key, " +
				"each countersignature under a published witness key must verify (others are ignored and counted as no " +
				"witness), and the audit path must lead from " +
				"the leaf to the signed root. The CLI runs the same check on a bundle before printing it. A bundle whose " +
				"checkpoint no witness has countersigned yet says so: it carries the node's word alone.",
			Status: Mitigated,
			Tests:  []string{"audit.TestProofBundleTampering", "internal/cli.TestProofCheck"},
		},
		{
			ID:         "T-067",
			Title:      "A node leaves events out of its answers to audit query, tail and export",
			STRIDE:     "R",
			Asset:      "the completeness of what `unum audit query`, `tail` and `export` show",
			Boundary:   "CLI to a node's API (Audit.Query)",
			Attacker:   "root on a node, answering queries with some matching events left out",
			Crosses:    []string{"node-api"},
			Capability: CompromisedNode,
			Mitigation: "Each node answers only for its own log and the CLI refuses events that do not name the node it " +
				"asked (a node cannot put words in another's mouth); an invented event has no inclusion proof (`unum " +
				"audit proof`) and a rewritten log fails `unum audit verify` (T-065). Leaving out an event that is in the " +
				"log is not detected by a query.",
			Status: Accepted,
			Reason: "Proving the completeness of a filtered answer needs every entry in the range, which is what verify " +
				"and export do: an operator who needs completeness exports (every event with its index, so a gap in the " +
				"indexes of one node shows) or verifies. Revisit if queries become evidence on their own.",
		},
		{
			ID:       "T-048",
			Title:    "A cached decision outlives what it was decided on",
			STRIDE:   "E",
			Asset:    "the correctness of every decision",
			Boundary: "policy engine (every node's API)",
			Attacker: "anyone whose rights changed (a new revision, a new role, a time-based rule) hoping a cached allow " +
				"still answers",
			Crosses:    []string{"policy", "control-api", "node-api"},
			Capability: CompromisedWorkload,
			Mitigation: "The cache belongs to one engine, which is one immutable revision: a new revision starts empty. The " +
				"key is the whole input except its context, role attributes and delegation included. A bundle is cached " +
				"only when the compiler shows its decision depends on nothing else: no module reads input.context, the " +
				"whole input or input under a computed key, and none calls or names a nondeterministic builtin " +
				"(time.now_ns, rand, http.send); test files are not part of the engine at all. Errors are never cached; the " +
				"minimum privileged set is applied before a result is cached; resource names are bounded (512 bytes) and " +
				"keys over 1 KiB are not cached, so callers cannot fill memory through it.",
			Status: Mitigated,
			Tests:  []string{"policy.TestCacheableAnalysis", "policy.TestCachedEqualsEvaluated", "policy.TestCacheKeyUnambiguous", "policy.TestTestFilesOutOfTheEngine", "internal/rpc.TestOversizedResourceRefused"},
		},
		{
			ID:       "T-049",
			Title:    "A join-token request decided as one kind of node, issued as another",
			STRIDE:   "E",
			Asset:    "control-node membership (etcd, the CA)",
			Boundary: "control-plane API (Cluster.CreateJoinToken)",
			Attacker: "a principal a bundle allows to mint compute-node tokens, sending roles the policy and the handler " +
				"read differently (\"compute,control\" in one element, \" control\")",
			Crosses:    []string{"control-api"},
			Capability: MaliciousInsider,
			Mitigation: "A token with the control role is the resource control-node/-/NAME, not node/-/NAME; the route and " +
				"the handler read roles by the same strict rule (one known role per element), and the route counts any " +
				"list the handler would refuse as a control token.",
			Status: Mitigated,
			Tests:  []string{"internal/rpc.TestJoinTokenRolesInResource", "control.TestJoinTokenRolesStrict"},
		},
		{
			ID:       "T-050",
			Title:    "A node answers for another node's decisions",
			STRIDE:   "S",
			Asset:    "what `unum policy explain` and shadow reports tell an operator",
			Boundary: "CLI to a node's API (rpc.DialNode)",
			Attacker: "a compromised node, or whoever holds an address a client is sent to, answering explain or shadow " +
				"report requests meant for another node",
			Crosses:    []string{"node-api"},
			Capability: CompromisedNode,
			Mitigation: "Decisions are explained only by the node that made them (the id names it), and the client " +
				"reaches that node authorizing exactly its SPIFFE ID in the mutual-TLS handshake; only node identities " +
				"may be asked. A node can therefore speak only for its own record, which it holds anyway.",
			Status: Mitigated,
			Tests:  []string{"internal/rpc.TestDialNodeAuthorizesExactID", "node.TestComputeNodeFollowsPolicy"},
		},
		{
			ID:         "T-047",
			Title:      "A stored bundle writes outside the folder it is fetched to",
			STRIDE:     "T",
			Asset:      "the operator's machine",
			Boundary:   "CLI (`unum policy get --out DIR`)",
			Attacker:   "whoever can store a bundle with file names like ../../.bashrc (a malicious or compromised server)",
			Crosses:    []string{"policy", "control-api"},
			Capability: MaliciousInsider,
			Mitigation: "Bundles are validated (clean relative names, UTF-8, size and count limits) when applied and " +
				"again before they are written to disk.",
			Status: Mitigated,
			Tests:  []string{"policy.TestWriteDirStaysInside", "policy.TestBundleCases"},
		},
		{
			ID:         "T-051",
			Title:      "Audit entries are altered, deleted or reordered at rest",
			STRIDE:     "T",
			Asset:      "the audit log: the record of who did what",
			Boundary:   "a node's disk (DIR/audit)",
			Attacker:   "root on a node, or whoever holds its disk, editing the log's files or its Pebble keys directly",
			Crosses:    []string{"node-disk"},
			Capability: CompromisedNode,
			Mitigation: "Every entry is hash-chained to the one before and names its own index in its id, so a flipped " +
				"byte, a deleted or a moved entry is named by index; an attacker who recomputes the chain is caught by " +
				"the Merkle root of the next checkpoint the node signed with its registered key (`unum audit verify`, " +
				"online and --offline).",
			Status: Mitigated,
			Tests:  []string{"audit.TestVerifyDetectsTampering", "audit.TestProofsRoundTrip", "node.TestAuditTamperDetectedOnline", "cmd/unum.TestAttackSuite/audit_tampering_and_truncation_are_detected"},
		},
		{
			ID:       "T-052",
			Title:    "The audit log is truncated to hide recent events",
			STRIDE:   "R",
			Asset:    "the newest audit events",
			Boundary: "a node's disk (DIR/audit)",
			Attacker: "root on a node cutting the log's tail (with or without its checkpoints), or damaging the store so " +
				"that it ends early (Pebble treats a damaged last WAL record as a torn write)",
			Crosses:    []string{"node-disk"},
			Capability: CompromisedNode,
			Mitigation: "Verify fails when the log ends before a checkpoint it signed, before its stored witnessed " +
				"checkpoint, or before the witnessed checkpoint exported with the keys (`unum audit keys` carries each " +
				"node's newest countersigned checkpoint; online verify fetches it from the witness).",
			Status: Mitigated,
			Tests:  []string{"audit.TestVerifyDetectsTampering", "audit.TestByteFlipInStoreFilesIsDetected", "audit.TestVerifyAgainstWitness", "node.TestAuditTamperDetectedOnline", "cmd/unum.TestAttackSuite/audit_tampering_and_truncation_are_detected"},
		},
		{
			ID:         "T-053",
			Title:      "A node's whole audit log is replaced by a forgery signed with another key",
			STRIDE:     "S",
			Asset:      "the audit log's authenticity",
			Boundary:   "a node's disk (DIR/audit)",
			Attacker:   "root on a node who rebuilds a self-consistent log (chain, tree, checkpoints) with a key of their own",
			Crosses:    []string{"node-disk"},
			Capability: CompromisedNode,
			Mitigation: "Checkpoints verify only under the key registered for the node when it joined (published by the " +
				"control plane, `unum audit keys`); verify without published keys says the keys are unauthenticated " +
				"instead of calling the log authentic.",
			Status: Mitigated,
			Tests:  []string{"audit.TestForgeryByAnotherKeyIsDetected"},
		},
		{
			ID:         "T-054",
			Title:      "Acknowledged or retained audit events vanish (crash, silent pruning)",
			STRIDE:     "R",
			Asset:      "every audit event a caller was told is recorded",
			Boundary:   "the node's audit log",
			Attacker:   "a crash or SIGKILL at any point, or an operator or attacker dropping old entries as if by retention",
			Crosses:    []string{"node-disk"},
			Capability: CompromisedNode,
			Mitigation: "Record returns only after the event's batch is synced; after a kill every acknowledged event is " +
				"present and the log verifies. Retention prunes only entries a witness countersigned, signs a checkpoint " +
				"stating how many are pruned, and verify fails on missing entries no signed checkpoint prunes.",
			Status: Mitigated,
			Tests:  []string{"audit.TestCrashKeepsAcknowledgedEvents", "audit.TestPruneIsSignedAndAccountedFor", "audit.TestVerifyDetectsTampering", "internal/faultcluster.TestFaults/no_acknowledged_audit_event_is_lost_across_SIGKILL_of_any_node"},
		},
		{
			ID:       "T-055",
			Title:    "Split view: a node's log forked after it was witnessed",
			STRIDE:   "TR",
			Asset:    "the audit record of what happened on a node",
			Boundary: "node to control plane (Audit.SubmitCheckpoint)",
			Attacker: "root on a node (or its stolen audit key) rewriting entries the witness already countersigned and " +
				"presenting the rewritten history, signed with the node's own key, with an honest-looking proof of its own " +
				"tree, the real tree's proof, or none",
			Crosses:    []string{"control-api"},
			Capability: CompromisedNode,
			Mitigation: "The witness accepts a checkpoint only if the tree it already countersigned for that node is a prefix " +
				"of the new one: at the same size the same root, at a larger size an RFC 9162 consistency proof from exactly " +
				"the witnessed size (audit.CheckSubmission, a pure function). Anything else is refused with " +
				"FailedPrecondition, an audit.alert event naming node, sizes and roots, and the fork metric; the refusal is " +
				"decided on a fresh etcd read, never on a cache. The pruned count never goes down.",
			Status: Mitigated,
			Tests:  []string{"audit.TestCheckSubmission", "control.TestWitnessRefusesForks"},
		},
		{
			ID:       "T-056",
			Title:    "Truncation of a witnessed log",
			STRIDE:   "TR",
			Asset:    "the audit record of what happened on a node",
			Boundary: "node to control plane (Audit.SubmitCheckpoint)",
			Attacker: "root on a node cutting the tail of its log (or replacing it with an older copy) after the witness " +
				"countersigned it, to erase what it did, and carrying on from the shorter log",
			Crosses:    []string{"control-api", "node-disk"},
			Capability: CompromisedNode,
			Mitigation: "A checkpoint smaller than the witnessed one and signed after it is refused as a truncation " +
				"(FailedPrecondition, an audit.alert event, the truncation metric); one signed no later (an older note arriving " +
				"late, or two witnesses racing) is refused as stale, without an alarm, and never stored either, so backdating a " +
				"truncated log's checkpoint gains nothing. One claiming fewer pruned entries than witnessed is refused as a " +
				"fork. The witnessed checkpoint stays in etcd, where verify compares every log against it.",
			Status: Mitigated,
			Tests:  []string{"audit.TestCheckSubmission", "control.TestWitnessRefusesTruncation", "cmd/unum.TestAttackSuite/audit_tampering_and_truncation_are_detected"},
		},
		{
			ID:       "T-057",
			Title:    "Forged audit key registration",
			STRIDE:   "ST",
			Asset:    "which key the witness accepts a node's checkpoints under",
			Boundary: "enrolment listener (Join); node to control plane (Audit.SubmitCheckpoint)",
			Attacker: "a node, or whoever holds a node's SVID or disk, registering another key for itself or for another " +
				"node, or re-signing a rewritten log with a fresh key, so that forged checkpoints pass",
			Crosses:    []string{"enrolment", "control-api"},
			Capability: CompromisedNode,
			Mitigation: "A node's key is registered once: with its membership at join or init (same etcd transaction), or, " +
				"for a node of a cluster made before audit, on its first submission (trust on first use, only for a member, " +
				"recorded as audit.register-key). It is never overwritten: a different key, offered or used to sign, is " +
				"refused with an alert; the caller's verified node identity must be the checkpoint's node; a private " +
				"keyset is not accepted as a key. Only a join under a removed node's name (an admin's token) registers a " +
				"new key, moving the old key and witnessed checkpoint aside.",
			Status: Mitigated,
			Tests: []string{"control.TestWitnessKeyRegistration", "control.TestJoinRegistersAuditKey",
				"audit.TestPublicKeysetOf", "control.TestWitnessKeyPublished"},
		},
		{
			ID:       "T-058",
			Title:    "Two witnesses overwrite each other's countersigned checkpoints",
			STRIDE:   "T",
			Asset:    "the newest witnessed checkpoint of each node in etcd",
			Boundary: "control-plane quorum (concurrent control nodes)",
			Attacker: "no attacker needed: two control nodes countersigning different checkpoints of one node at once, the " +
				"later write replacing a newer checkpoint with an older one (a truncation the witness itself made), or a " +
				"node racing its submissions to two witnesses to get a fork stored",
			Crosses:    []string{"control-quorum", "control-api"},
			Capability: CompromisedNode,
			Mitigation: "Each round's transaction stores every checkpoint only if the node's witnessed key still has the " +
				"mod revision the witness verified against (and, for a first checkpoint, its key record too); a failed " +
				"compare re-reads and answers the affected submissions Aborted (retry) while the others go out again. Of " +
				"two racing checkpoints from one base exactly one is stored, and stored sizes only grow.",
			Status: Mitigated,
			Tests:  []string{"control.TestTwoWitnessesRace", "control.TestWitnessOneTransactionPerRound"},
		},
		{
			ID:       "T-060",
			Title:    "Denial of audit: actions run while the audit disk cannot record them",
			STRIDE:   "RD",
			Asset:    "the completeness of the audit record",
			Boundary: "a node's audit log (its disk)",
			Attacker: "whoever can fill or break a node's audit disk (a noisy neighbour, a failing disk, a user writing " +
				"large files) hoping that what they do next goes unrecorded",
			Crosses:    []string{"node-disk"},
			Capability: CompromisedWorkload,
			Mitigation: "Every decision is recorded durably (fsync) in the node's audit log before the call's handler runs; " +
				"a decision that cannot be recorded refuses the call (gRPC Unavailable, naming the audit log), so nothing " +
				"half-applies. Privileged actions are always refused; unprivileged ones follow audit.on_failure: deny by " +
				"default, or allow-and-alert, which lets them through, counts them (unum_audit_unrecorded_decisions_total), " +
				"logs, and records one audit.unavailable event with the count once the log records again (kept across a " +
				"restart). A write failure marks the log failed until the node restarts: it never silently resumes with a gap. " +
				"Enrolment (join, login), which no decision records, checks the log before it consumes a token, and " +
				"`unum status` is unhealthy while any node's log cannot record.",
			Status: Mitigated,
			Tests:  []string{"node.TestAuditFailClosed", "policy.TestDeciderLogFailure", "audit.TestWriteFailureFailsClosed", "control.TestErrors"},
		},
		{
			ID:       "T-061",
			Title:    "Secrets in the audit log",
			STRIDE:   "I",
			Asset:    "join and enrolment tokens, JWT-SVIDs, private keys",
			Boundary: "audit readers (audit.read), exports to a SIEM, a seized disk",
			Attacker: "anyone who may read the audit log, or gets a copy of it, harvesting credentials recorded in events " +
				"that outlive the credentials' own storage",
			Crosses:    []string{"node-api", "node-disk", "offline"},
			Capability: MaliciousInsider,
			Mitigation: "Events name tokens by id, certificates by serial and keys by fingerprint; a JWT-SVID is never " +
				"recorded; a request is recorded as its digest (sha256 of its protobuf), not its content; refusal reasons are " +
				"the handlers' fixed wording and TLS errors, bounded in length. A dev cluster's logs are scanned after joins, " +
				"logins, refused and forged tokens and a break-glass recovery for every token, token secret and private key " +
				"PEM line; the root key is checked against the log after a root export and import on a test cluster.",
			Status: Mitigated,
			Tests: []string{"cmd/unum.TestAuditHoldsNoSecrets", "control.TestRefusedTokensRecordedWithoutSecrets",
				"control.TestControlEventsRecorded", "node.TestCARootOffline"},
		},
		{
			ID:       "T-062",
			Title:    "An unauthenticated flood fills the audit log",
			STRIDE:   "D",
			Asset:    "the audit disk, and with it every node's ability to act (T-060)",
			Boundary: "API and enrolment listeners (anyone who can reach them)",
			Attacker: "a network peer opening TLS connections without a valid certificate, or hammering the enrolment " +
				"listener with tokens, so that each refusal costs a durable log entry",
			Crosses:    []string{"enrolment", "control-api", "node-api"},
			Capability: NetworkPeer,
			Mitigation: "Authentication is recorded per connection at the handshake, not per call. Refusals anyone can cause " +
				"(refused handshakes, rate-limited enrolment calls, refused tokens) go through a token bucket per action (2 per " +
				"second, burst 50, so a flood of one kind cannot silence the others); beyond it they are counted (unum_audit_authn_suppressed_total) and recorded as one summary per " +
				"action every 10 s with how many were suppressed and when, so none is lost from the count. Accepted " +
				"handshakes need a valid SVID and are accountable.",
			Status: Mitigated,
			Tests: []string{"internal/rpc.TestRefusedHandshakeFloodSummarized", "audit.TestLimiterSummarizesAFlood",
				"audit.TestLimiterKeepsUnrecordedSummary", "internal/rpc.TestEnrollmentRefusalsRecorded",
				"audit.TestLimiterFloodOfOneActionSparesTheOthers"},
		},
		{
			ID:       "T-063",
			Title:    "A break-glass recovery leaves no trace",
			STRIDE:   "R",
			Asset:    "accountability for admin credentials minted outside the cluster",
			Boundary: "a control node's data folder and KEK (`unum admin recover`)",
			Attacker: "someone with local access to a control node's keys and KEK minting an admin credential, hoping the " +
				"cluster never learns of it",
			Crosses:    []string{"node-disk"},
			Capability: CompromisedNode,
			Mitigation: "admin recover records recovery.admin (who ran it, on which host, the serial and expiry of what it " +
				"minted) in the node's audit log before it returns the credential: it opens the log itself when the node is " +
				"stopped, or hands the event to the running node through its audit inbox (0700) and waits until the node has " +
				"recorded it. When neither works it refuses and writes no config. (Whoever holds the KEK and keys can sign " +
				"without unum; the record covers the documented path.)",
			Status: Mitigated,
			Tests:  []string{"node.TestRecoverAdmin", "node.TestAuditFailClosed", "cmd/unum.TestAuditHoldsNoSecrets"},
		},
		{
			ID:       "T-064",
			Title:    "Use of a foreign or revoked certificate goes unrecorded",
			STRIDE:   "SR",
			Asset:    "the record of who tried to authenticate",
			Boundary: "API listener (mutual TLS)",
			Attacker: "a holder of a stolen, revoked, or foreign-CA certificate probing the API, relying on refusals " +
				"leaving no audit trace",
			Crosses:    []string{"control-api", "node-api"},
			Capability: NetworkPeer,
			Mitigation: "Every handshake is recorded (authn.mtls): accepted ones with the verified SPIFFE ID, serial and " +
				"peer; refused ones with why; a chain already revoked when it connects is recorded as refused with its " +
				"subject, never as accepted (its calls are refused with the reason). Events after an action carry the " +
				"decision id that allowed it, and the log's decision index points only at the decision itself.",
			Status: Mitigated,
			Tests:  []string{"internal/rpc.TestHandshakesRecorded", "audit.TestFindDecisionIgnoresLinkedEvents"},
		},
		{
			ID:       "T-070",
			Title:    "Replay of a stolen delegated credential",
			STRIDE:   "S",
			Asset:    "a delegated credential and the rights of everyone in its chain",
			Boundary: "a delegated credential presented over mutual TLS (the delegation verifier every service links)",
			Attacker: "a workload, operator or log reader who obtains someone else's credential (a log line, a core dump, a " +
				"compromised next hop) and presents it over its own mTLS connection, or over another certificate of the " +
				"holder's identity",
			Crosses:    []string{"delegation"},
			Capability: CompromisedWorkload,
			Mitigation: "Every credential is bound to its holder: cnf.spiffe_id always, and cnf.x5t#S256 (RFC 8705) when the " +
				"holder obtained it over its own connection, with the expiry capped at that certificate's. The verifier " +
				"accepts it only when the mTLS peer certificate carries the holder's SPIFFE ID, and is the bound " +
				"certificate when one is named (compared in constant time); no peer, or a peer without a SPIFFE ID, is " +
				"refused. A token exchange (Plan) refuses a parent the caller does not hold. Only an operator's inspect " +
				"skips the binding, and every other rule still holds there.",
			Status: Mitigated,
			Tests: []string{"identity/delegation.TestAttacks", "identity/delegation.TestThreeHops",
				"identity/delegation.TestInspectDoesNotEnforceBinding", "identity/delegation.TestPlanCaps", "cmd/unum.TestAttackSuite/a_delegated_credential_is_refused_from_anyone_but_its_holder"},
		},
		{
			ID:       "T-071",
			Title:    "Widening a delegated credential: scope, audience or lifetime",
			STRIDE:   "E",
			Asset:    "the rights a delegation grants: each hop's scopes, audience and expiry",
			Boundary: "the control plane's credential issuer (delegate and token exchange) and every verifier",
			Attacker: "a service holding a delegated credential asking for a child with more actions or resources, more " +
				"audiences or a later expiry than its own, or an issuer bug or compromise signing one",
			Crosses:    []string{"delegation", "control-api"},
			Capability: MaliciousInsider,
			Mitigation: "Every prior actor's act level (not the holder's; the first may be a grant-less impersonating issuer) " +
				"carries the grant its actor held (jti, scope, aud, iat, exp); the issuer " +
				"(Plan) and every verifier (CheckChain) require each hop to narrow the one before: every scope within a " +
				"scope of the parent (Scope.Within, decided on the patterns and checked against a brute-force reference " +
				"over a universe of requests), audiences a subset, expiry not later, lifetime at most MaxTTL whatever " +
				"the policy says. Plan caps a child's TTL at its parent's expiry instead of refusing; a verifier refuses a " +
				"signed child that breaks any rule (FuzzCheckChain signs arbitrary claims and holds every accepted one " +
				"to a naive reference check).",
			Status: Mitigated,
			Tests: []string{"identity/delegation.TestAttacks", "identity/delegation.TestWithinAgainstBruteForce",
				"identity/delegation.TestScopesWithinAgainstBruteForce", "identity/delegation.TestScopesData",
				"identity/delegation.TestReferenceCheckRefuses", "identity/delegation.TestPlanRefusesWhatVerifiersRefuse", "cmd/unum.TestAttackSuite/an_exchange_cannot_widen_a_delegated_credential"},
		},
		{
			ID:       "T-072",
			Title:    "A forged, reordered or spliced actor chain",
			STRIDE:   "TE",
			Asset:    "the record of who acted on whose behalf (the act chain) and the policy decisions made on it",
			Boundary: "a delegated credential presented over mutual TLS (the delegation verifier every service links)",
			Attacker: "anyone editing a credential's act chain to drop, rename or reorder actors, or an issuer bug " +
				"producing a chain that hides a hop: an actor without a grant in the middle, two grants with one jti, " +
				"cnf naming someone other than the holder, or more actors than the policy allows",
			Crosses:    []string{"delegation"},
			Capability: MaliciousInsider,
			Mitigation: "The chain is inside the signed claims: any edit after signing fails the ES256 signature over the " +
				"exact bytes. A signed chain must still hold: only the first actor may be grant-less (an impersonating " +
				"issuer), the holder's level carries no grant, jtis are distinct, each grant narrows the one before (so " +
				"a reordered chain of narrowing grants breaks), cnf names the top act.sub, and the chain is at most the " +
				"policy's depth (default 4) and never more than MaxDepth (16), refused while parsing.",
			Status: Mitigated,
			Tests:  []string{"identity/delegation.TestAttacks", "identity/delegation.TestThreeHops"},
		},
		{
			ID:       "T-073",
			Title:    "Credential forgery through JOSE algorithm or header confusion",
			STRIDE:   "S",
			Asset:    "the credential signing keys' authority",
			Boundary: "a delegated credential presented over mutual TLS (the delegation verifier every service links)",
			Attacker: "anyone crafting a token whose header picks the verification: alg none, HS256 keyed with the " +
				"public key in any form (JWK set, JWK, x||y, the uncompressed point, PKIX DER), a DER signature, or " +
				"crit, jku, jwk, x5u, x5c, cty or b64 headers pointing the verifier elsewhere",
			Crosses:    []string{"delegation"},
			Capability: CompromisedWorkload,
			Mitigation: "The verifier never lets the token choose: alg must be ES256, typ unum-cred+jwt and kid present; " +
				"any other header member is refused, not ignored (the header is exactly {alg, kid, typ}, each once, spelt " +
				"exactly); the signature must be 64 bytes r||s verified with the P-256 keys published for that kid.",
			Status: Mitigated,
			Tests:  []string{"identity/delegation.TestAttacks/alg_none", "identity/delegation.TestAttacks"},
		},
		{
			ID:       "T-074",
			Title:    "A credential from another trust domain, key or token type",
			STRIDE:   "S",
			Asset:    "the credential signing keys' authority and the trust domain's boundary",
			Boundary: "control-plane key distribution (JWK sets) and the delegation verifier",
			Attacker: "another cluster (or a key our verifiers were never given) signing a credential, with its own iss or " +
				"claiming ours; a key claiming one of our kids; our own key's JWT-SVIDs or other JWTs passed off as " +
				"credentials",
			Crosses:    []string{"delegation"},
			Capability: CompromisedWorkload,
			Mitigation: "Only keys published by this cluster's control nodes verify (unknown kid: ErrUnknownKey; a " +
				"foreign key under our kid: ErrSignature); iss, sub, every act.sub, aud and cnf must be in this trust " +
				"domain; typ must be unum-cred+jwt, so a JWT-SVID or any other JWT signed with a known key is refused.",
			Status: Mitigated,
			Tests:  []string{"identity/delegation.TestAttacks/unknown_kid", "identity/delegation.TestAttacks"},
		},
		{
			ID:       "T-075",
			Title:    "Use of a credential outside its lifetime, or across skewed clocks",
			STRIDE:   "SE",
			Asset:    "the time bound of a delegation",
			Boundary: "a delegated credential presented over mutual TLS (the delegation verifier every service links)",
			Attacker: "a holder presenting an expired or not-yet-valid credential, an issuer bug signing one issued in " +
				"the future or with times out of order, or a verifier whose clock drifted from the issuer's",
			Crosses:    []string{"delegation", "offline"},
			Capability: MaliciousInsider,
			Mitigation: "exp, nbf and iat are checked on every use (not cached) against an injected clock with a fixed " +
				"Leeway of 30 s either way; nbf before iat, exp not after nbf or a lifetime over MaxTTL is refused as a " +
				"chain error; a child never outlives its parent nor a bound certificate (Plan caps both).",
			Status: Mitigated,
			Tests: []string{"identity/delegation.TestAttacks/expired", "identity/delegation.TestLeeway",
				"identity/delegation.TestPlanCaps", "identity/delegation.TestAttacks", "cmd/unum.TestAttackSuite/a_credential_from_a_skewed_clock_is_refused_beyond_the_leeway"},
		},
		{
			ID:       "T-076",
			Title:    "A revoked credential, or one minted from a revoked one, still accepted",
			STRIDE:   "SE",
			Asset:    "the operator's ability to take a delegation back",
			Boundary: "the revocation set in etcd and each verifier's revocation view",
			Attacker: "a holder (or a thief) using a credential after it, an ancestor, its subject, an actor or the " +
				"identity of anyone in its chain was revoked; a holder whose next hop got a child minted from a revoked " +
				"parent by an issuer whose view lagged; a verifier cut off from revocations",
			Crosses:    []string{"delegation"},
			Capability: MaliciousInsider,
			Mitigation: "Every use checks the view: the credential's jti and every ancestor's (a jti entry refuses the " +
				"credential and all it begot, whenever they were minted), its subject and its identity (against the " +
				"root credential's iat: everything in the chain derives from it), every actor as a holder and as a " +
				"SPIFFE identity (against the iat of the grant that actor held: each act level carries its grant's iat), " +
				"and the restore window. So a child minted after such a revocation from authority issued before it is " +
				"refused like its parent, while authority issued after it works. A verifier with no view refuses " +
				"everything; one whose view is older than its bound refuses privileged uses.",
			Status: Mitigated,
			Tests: []string{"identity/delegation.TestAttacks/revoked_by_jti", "identity/delegation.TestAttacks",
				"identity/delegation.TestStaleRevocationViewRefusesPrivilegedUse",
				"identity/delegation.TestRevocationJudgedOnTheRevokedAuthority"},
		},
		{
			ID:       "T-077",
			Title:    "Parser differentials and malformed credentials",
			STRIDE:   "TD",
			Asset:    "agreement between issuer, verifiers and audit on what a signed credential says; verifier availability",
			Boundary: "a delegated credential presented over mutual TLS (the delegation verifier every service links)",
			Attacker: "anyone presenting tokens crafted to be read two ways (a claim twice, a member spelt in another " +
				"case or through Unicode folding, trailing data, unknown claims in any object, non-canonical base64 " +
				"including CR/LF that Go's decoder skips), oversized tokens, or arbitrary bytes to make a verifier panic " +
				"or burn CPU",
			Crosses:    []string{"delegation"},
			Capability: CompromisedWorkload,
			Mitigation: "The parser is strict and bounded: at most 16 KiB read, only base64url bytes and two dots, strict " +
				"base64 (no padding, no unused bits), every JSON member spelt exactly and given once in header and " +
				"claims, no unknown member at any level, no trailing data, every value well-formed; each refusal wraps " +
				"a sentinel. FuzzParse (canonical, round-tripping, never a panic), FuzzCheckChain and FuzzExactMembers " +
				"run against it.",
			Status: Mitigated,
			Tests:  []string{"identity/delegation.TestAttacks", "identity/delegation.TestRawSignerControl"},
		},
		{
			ID:       "T-078",
			Title:    "Theft or tampering of a control node's credential signing keys",
			STRIDE:   "STI",
			Asset:    "the credential signing keyring (Tink ES256 keyset) of each control node",
			Boundary: "node data directory",
			Attacker: "a local reader of the control node's disk or backups, or someone editing the sealed keyring to " +
				"extend a retired key's life or drop a key",
			Crosses:    []string{"node-disk", "offline"},
			Capability: StolenDisk,
			Mitigation: "The keyring is sealed with the node's key-encryption key (a Tink AEAD) with the key list as " +
				"associated data: another KEK, an edited list or an altered keyset does not open, a keyset of another " +
				"key type is refused, and no private key appears in the clear. Keys rotate; a retired key is pruned " +
				"MaxTTL+Leeway after retirement (never earlier, so every token it signed expires first), after which " +
				"its tokens fail with ErrUnknownKey; a verifier given new keys forgets every token it verified before.",
			Status: Mitigated,
			Tests: []string{"identity/delegation.TestKeyringSeal", "identity/delegation.TestKeyringRotate",
				"identity/delegation.TestKeyringPrune", "identity/delegation.TestSetKeysForgetsVerifiedTokens"},
		},
		{
			ID:       "T-079",
			Title:    "A poisoned or broken public key set",
			STRIDE:   "SD",
			Asset:    "which keys verifiers accept credentials from",
			Boundary: "control-plane key distribution (JWK sets)",
			Attacker: "a faulty or compromised publisher of one control node's JWK set: a private key, an RSA, " +
				"symmetric or P-384 key, no kid, a kid twice, alg or use other than ES256/sig, a point off the curve, " +
				"hoping a verifier takes a weak key or drops every key",
			Crosses:    []string{"delegation", "control-api"},
			Capability: CompromisedNode,
			Mitigation: "ParsePublicKeys takes only EC P-256 verification keys with a kid and 32-byte strict base64url " +
				"coordinates on the curve; a set with any bad key is refused whole and named, and the other nodes' " +
				"sets are still used, so one bad publisher cannot stop verification. Keys sharing a kid across nodes " +
				"are all kept and tried.",
			Status: Mitigated,
			Tests:  []string{"identity/delegation.TestParsePublicKeys"},
		},
		{
			ID:       "T-080",
			Title:    "Confused deputy through a delegated credential",
			STRIDE:   "E",
			Asset:    "the rights of a credential's subject, and of every service that acts for a caller",
			Boundary: "API listener (mutual TLS): delegated calls",
			Attacker: "a service holding a caller's credential that uses it for something the caller may not do but the " +
				"service may (its own rights standing in for the caller's), or a caller that hands a narrow credential to a " +
				"more powerful service to have it act beyond the credential",
			Crosses:    []string{"delegation", "control-api"},
			Capability: MaliciousInsider,
			Mitigation: "A call presenting a credential is decided as the credential's subject, never as the caller alone: " +
				"refused before the policy is asked when the credential's scopes do not allow the action on the resource; " +
				"otherwise evaluated once per principal (the subject, every actor, the presenting holder last, each as " +
				"input.subject with the same input.delegation) and allowed only when every one is allowed (the intersection), " +
				"the decision recording each principal's answer and the credential's jtis. A credential that does not verify " +
				"refuses the call instead of falling back to the caller's own rights; so do two credentials in one call, a " +
				"server without a verifier, a chain longer than the policy's max_depth, and the methods a caller makes only " +
				"as itself (renewals, intermediate signing, sync and watch streams, heartbeats, checkpoint submission). An " +
				"exchange is decided on " +
				"the credential that will be signed: what the request leaves out (scopes, audience) is the presented " +
				"credential's, in input.credential, so a rule on them cannot be passed by leaving them out. What a service " +
				"does on someone's behalf is recorded as theirs, through it (subject, chain and jtis on the action's events).",
			Status: Mitigated,
			Tests: []string{"internal/rpc.TestConfusedDeputyHolderRightsNotUsed", "internal/rpc.TestDelegatedCallDecidedForEveryPrincipal",
				"internal/rpc.TestChainLongerThanPolicyMaxDepthRefused", "internal/rpc.TestTwoCredentialsInOneCallRefused",
				"internal/rpc.TestServerWithoutVerifierRefusesCredential", "internal/rpc.TestExchangeDecidedOnWhatWillBeSigned",
				"internal/rpc.TestSelfMethodsRefuseDelegation", "cmd/unum.TestCredentialsThreeHops", "cmd/unum.TestAttackSuite/a_deputy_acting_for_a_principal_has_only_the_rights_of_that_principal"},
		},
		{
			ID:       "T-081",
			Title:    "Replay of a delegated credential to a unum API by a non-holder",
			STRIDE:   "S",
			Asset:    "the authority a delegated credential carries",
			Boundary: "API listener (mutual TLS): delegated calls",
			Attacker: "anyone who obtains a token (a log, a proxy, a compromised next hop, the service it was exchanged " +
				"from) and presents it over their own mutual-TLS connection, or over another certificate issued for the " +
				"holder's SPIFFE ID",
			Crosses:    []string{"delegation", "control-api"},
			Capability: CompromisedWorkload,
			Mitigation: "Every credential names its holder (cnf.spiffe_id), and the certificate it was obtained over " +
				"(cnf.x5t#S256) when the holder asked for it itself; the API interceptor verifies it against the " +
				"connection's verified peer certificate and refuses anyone else (Unauthenticated), recording the refusal " +
				"with the credential's jtis. A stolen token is worthless without the holder's key.",
			Status: Mitigated,
			Tests: []string{"internal/rpc.TestReplayByNonHolderRefused", "internal/rpc.TestBoundCredentialFromAnotherCertificateRefused",
				"internal/rpc.TestRefusedPresentationsRecorded", "cmd/unum.TestCredentialsThreeHops", "cmd/unum.TestAttackSuite/a_delegated_credential_is_refused_from_anyone_but_its_holder"},
		},
		{
			ID:       "T-082",
			Title:    "A credential issued without a record",
			STRIDE:   "R",
			Asset:    "accountability for every credential in circulation (`unum cred list`, `unum audit query --cred`)",
			Boundary: "a control node's Credentials service and its audit log",
			Attacker: "a principal minting while the control node's audit log cannot record (a full or failing disk), so " +
				"that a credential exists that no record names; or one whose refused requests leave no trace",
			Crosses:    []string{"delegation", "control-api", "node-disk"},
			Capability: MaliciousInsider,
			Mitigation: "Delegate is a privileged decision (recorded durably before it runs); the credential is then " +
				"planned under the deciding revision's limits and the delegation rules, signed, and returned only once its " +
				"cred.mint event (chain, deciding decision and revision, details) is durable. When the log cannot record, the " +
				"call fails Unavailable and the token is dropped: not recorded, not issued. A plan the rules refuse is " +
				"recorded as a refused cred.mint with the reason and the presented credential's jtis. `unum cred list` reads " +
				"these records back.",
			Status: Mitigated,
			Tests: []string{"control.TestDelegateNotRecordedNotIssued", "control.TestDelegateRefusedPlanRecorded",
				"control.TestListCredentials", "cmd/unum.TestCredentialsThreeHops"},
		},
		{
			ID:       "T-083",
			Title:    "Refused credential presentations unrecorded, or flooding the audit log",
			STRIDE:   "RD",
			Asset:    "the record of who tried to use which credential; the audit disk (T-060)",
			Boundary: "API listener (mutual TLS): delegated calls",
			Attacker: "a caller presenting stolen, forged, expired or revoked credentials, relying on refusals leaving no " +
				"trace; or presenting garbage in a loop so that each refusal costs a durable log entry",
			Crosses:    []string{"delegation", "control-api"},
			Capability: CompromisedWorkload,
			Mitigation: "Every refused presentation is recorded (cred.verify, deny) with the presenting caller, the method, " +
				"the reason and, once the signature verified, the credential's jtis (so `audit query --cred` finds a replay). " +
				"These events go through the node's refusal limiter (T-062): beyond its burst they are counted and " +
				"summarized, not written one by one.",
			Status: Mitigated,
			Tests: []string{"internal/rpc.TestRefusedPresentationsRecorded", "internal/rpc.TestRefusedPresentationFloodSummarized",
				"cmd/unum.TestCredentialsThreeHops", "cmd/unum.TestAttackSuite/a_delegated_credential_is_refused_from_anyone_but_its_holder", "cmd/unum.TestAttackSuite/a_credential_from_a_skewed_clock_is_refused_beyond_the_leeway"},
		},
		{
			ID:       "T-084",
			Title:    "A revoked delegated credential still used",
			STRIDE:   "SE",
			Asset:    "the authority of a credential its subject or an operator revoked",
			Boundary: "the revocation set in etcd and every node's revocation view",
			Attacker: "the holder of a revoked credential (a stolen laptop, a compromised service) using it, or anything " +
				"minted from it, before verifiers learn of the revocation, on a node whose view is stale or partitioned, or on " +
				"a stream opened before the revocation",
			Crosses:    []string{"delegation", "control-quorum"},
			Capability: MaliciousInsider,
			Mitigation: "`unum cred revoke` writes one entry (a jti and everything minted from it, a subject, or a holder) " +
				"to the revocation set certificates use, kept until every credential it can refuse has expired and never " +
				"shortened by revoking again; every verifier checks the credential's and its ancestors' jtis, its subject, " +
				"every actor as a holder and as an identity. A privileged delegated call on a stale revocation view is " +
				"refused (Unavailable). A stream opened with a credential ends when the credential is revoked or expires " +
				"(in internal/rpc, tested for both; in the package's stream interceptor, tested for revocation).",
			Status: Mitigated,
			Tests: []string{"control.TestRevokeCredentials", "internal/rpc.TestRevokedCredentialRefused",
				"internal/rpc.TestDelegatedPrivilegedCallOnStaleViewRefused", "internal/rpc.TestRevokedCredentialCutsStream",
				"identity/delegation.TestStreamInterceptorCutsRevokedCredential", "control.TestListCredentials",
				"cmd/unum.TestCredentialsThreeHops"},
		},
		{
			ID:       "T-085",
			Title:    "Credentials signed by a removed control node, or with its keyring",
			STRIDE:   "S",
			Asset:    "the credential signing keys of control nodes",
			Boundary: "node data directory; etcd client and peer ports (/unum/cred/keys)",
			Attacker: "someone who compromised a control node (since removed) or a copy of its disk, minting credentials " +
				"with its keyring",
			Crosses:    []string{"node-disk", "control-quorum", "delegation"},
			Capability: CompromisedNode,
			Mitigation: "`unum node rm` deletes the node's published key set in the same transaction that removes its " +
				"record and revokes its identity, and a publish only succeeds for a member (so one racing the removal cannot " +
				"bring the keys back); every verifier then drops its keys (control nodes from their state cache, other nodes " +
				"from the sync stream) and what it signed fails as signed by an unknown key. A control node signs only with " +
				"keys its own state cache shows published. The keyring is sealed under the node's KEK (0600), refused when " +
				"readable by others or when it does not open with the KEK, and never silently replaced by a new one.",
			Status: Mitigated,
			Tests: []string{"control.TestRemovedControlNodeCredentialKeysDeleted", "control.TestCredentialKeysPublished",
				"node.TestCredKeyringSurvivesRestart", "node.TestCredKeysReachEveryNode", "node.TestCredKeyringRotationPublishesBeforeUse",
				"identity/delegation.TestKeyringPrune"},
		},
		{
			ID:       "T-086",
			Title:    "Impersonation passed off as delegation",
			STRIDE:   "SE",
			Asset:    "the authority of principals other than the issuer",
			Boundary: "a control node's Credentials service (Delegate)",
			Attacker: "a principal allowed to delegate its own authority who asks for a credential on someone else's behalf " +
				"(--on-behalf-of), hoping a cred.delegate grant covers it, or that the credential hides who minted it",
			Crosses:    []string{"delegation", "control-api"},
			Capability: MaliciousInsider,
			Mitigation: "Minting on someone else's behalf is its own privileged action, cred.impersonate (an admin's in the " +
				"shipped policy), which no cred.delegate grant covers; the issuer stays in the chain as its first actor, so " +
				"every use is also intersected with the issuer's rights and the audit log names it; an exchanged credential " +
				"keeps its subject.",
			Status: Mitigated,
			Tests:  []string{"control.TestImpersonationIsItsOwnAction", "cmd/unum.TestCredentialsThreeHops"},
		},
		{
			ID:       "T-095",
			Title:    "PID reuse to obtain a task's identity",
			STRIDE:   "S",
			Asset:    "job SVIDs served to scheduled tasks (unum:task selectors)",
			Boundary: "Workload API socket",
			Attacker: "a local process that connects to the Workload API, exits, and has its pid recycled by a process " +
				"in a task's cgroup (or a task's process whose pid is recycled by a process in another task's cgroup), " +
				"so that reading /proc/PID/cgroup by pid would attest the other process's task",
			Crosses:    []string{"workload-api"},
			Capability: CompromisedWorkload,
			Mitigation: "The task is read from /proc/PID/cgroup like every other /proc fact: by pid, then confirmed " +
				"through the pidfd pinned at connect (SO_PEERPIDFD, or pidfd_open plus a re-check) that the process " +
				"read is still the connecting one; a zombie, reaped or recycled peer yields ErrProcessGone and the call " +
				"is refused. The test forces the recycled pid into another task's group (ns_last_pid) and checks it.",
			Status: Mitigated,
			Tests:  []string{"identity/attest.TestTaskPidReuse"},
		},
		{
			ID:       "T-096",
			Title:    "A task's process obtains another task's identity",
			STRIDE:   "SE",
			Asset:    "job SVIDs served to scheduled tasks (unum:task selectors)",
			Boundary: "Workload API socket",
			Attacker: "a process of one task on a node (or any other local process) asking the node agent for the SVID " +
				"of another task on the same node, or keeping a task's identity after it was moved out of the task's group",
			Crosses:    []string{"workload-api"},
			Capability: CompromisedWorkload,
			Mitigation: "A unum:task:TASKID selector matches only a process whose cgroup v2 path is exactly ROOT/TASKID " +
				"or below it, ROOT being the node's task root; the root itself, groups whose name is not a task id, " +
				"removed groups and paths outside the agent's cgroup namespace match no task. The cgroup is read on " +
				"every Workload API call and before every streamed update, never remembered from connect, so a " +
				"process moved out of the group gets nothing more. An SVID already handed out stays valid until it " +
				"expires (a bearer credential): that window is the SVID lifetime.",
			Status: Mitigated,
			Tests: []string{"identity/agent.TestTaskSVID", "identity/agent.TestTaskMovedOutLosesIdentity",
				"identity/attest.TestAttestTask", "identity/attest.TestTaskReadOnEveryAttest",
				"identity/attest.TestTaskFromCgroupFile", "identity/selector.TestMatch"},
		},
		{
			ID:       "T-097",
			Title:    "An unprivileged process joins a task's cgroup",
			STRIDE:   "E",
			Asset:    "job SVIDs served to scheduled tasks (unum:task selectors)",
			Boundary: "Workload API socket; the node's task cgroups",
			Attacker: "a task's process or another unprivileged local process that writes its pid into a task's " +
				"cgroup.procs to be attested as that task",
			Crosses:    []string{"workload-api", "task-sandbox"},
			Capability: CompromisedWorkload,
			Mitigation: "Moving a process into a cgroup needs write access to the destination's cgroup.procs and to that " +
				"of the common ancestor; the executor creates task groups owned by root and never delegates them, and " +
				"tasks never run as root, so the write fails with EACCES and the process keeps its own attestation. " +
				"This is why a unum:task selector may stand alone in a selector set. Not covered: a root process on " +
				"the node can move any process anywhere; root on the node is trusted with the node's identities.",
			Status: Mitigated,
			Tests:  []string{"identity/agent.TestTaskCannotJoinAnotherTask", "identity/selector.TestValidateSet"},
		},
		{
			ID:       "T-090",
			Title:    "A task regains root through a setuid binary or a capability",
			STRIDE:   "E",
			Asset:    "root on a compute node: every task, key and the node identity on it",
			Boundary: "the task shim (exec of a task on a compute node)",
			Attacker: "the code of a task (a compromised or malicious job) running a setuid-root binary (su, a setuid " +
				"shell it finds or was given) or a file with capabilities, to become root on the node",
			Crosses:    []string{"task-sandbox"},
			Capability: CompromisedWorkload,
			Mitigation: "The shim sets PR_SET_NO_NEW_PRIVS and empties the capability bounding and ambient sets on the " +
				"thread that execs, drops supplementary groups and sets gid and uid to the task's dynamic uid, then " +
				"verifies that setuid(0) and setgid(0) fail, no capability is left and no_new_privs holds, failing closed " +
				"(exit 127, nothing exec'd) otherwise. A setuid binary then runs with the task's uid. The test first shows " +
				"the setuid copies do make an unprivileged uid root without no_new_privs. Nothing is refused, so nothing is " +
				"audited: the attempt gains nothing (shown on a dev cluster too).",
			Status: Mitigated,
			Tests:  []string{"scheduler/executor.TestAttackSetuidCannotRegainRoot", "scheduler/executor.TestTaskConfinedAndIdentified", "cmd/unum.TestTaskAttacks/a_setuid_root_binary_runs_with_the_task_uid"},
		},
		{
			ID:       "T-091",
			Title:    "A task escapes its cgroup",
			STRIDE:   "TE",
			Asset:    "resource limits, the kill switch (cgroup.kill) and the BPF attach point of a task; identity attestation by cgroup",
			Boundary: "cgroup file systems on a compute node",
			Attacker: "the code of a task writing its pid into another group's cgroup.procs (the root, the node's own group, " +
				"another task's) or making a child group, to shed its limits, survive a kill or be attested as another task",
			Crosses:    []string{"task-sandbox"},
			Capability: CompromisedWorkload,
			Mitigation: "The task is born in its v2 group (CLONE_INTO_CGROUP) and joins its v1 groups as root in the shim " +
				"before dropping privileges; every cgroup directory and control file is root's, so after the drop any " +
				"move or mkdir is refused (EACCES), and a migration in v2 also needs write access to the common ancestor.",
			Status: Mitigated,
			Tests:  []string{"scheduler/executor.TestAttackCgroupEscape", "scheduler/cgroup.TestKillForkBomb"},
		},
		{
			ID:       "T-092",
			Title:    "A task signals, traces or reads another task's process",
			STRIDE:   "TIE",
			Asset:    "other tasks on the same node: their memory, environment (secrets) and liveness",
			Boundary: "process boundaries between tasks on a compute node",
			Attacker: "the code of a task sending signals to, ptrace-attaching to or reading /proc/PID/environ and mem of " +
				"another task's processes on the same node",
			Crosses:    []string{"task-sandbox"},
			Capability: CompromisedWorkload,
			Mitigation: "Every live task runs under its own uid (T-093) with no capabilities, so the kernel's permission " +
				"checks for kill(2), ptrace(2) and /proc access (same uid or CAP_SYS_PTRACE/CAP_KILL) refuse it. The test " +
				"checks the attempts are real: the same ptrace helper attaches when run as root. The seccomp filter " +
				"now refuses ptrace outright and Landlock scopes signals to the task (T-107).",
			Status: Mitigated,
			Tests:  []string{"scheduler/executor.TestAttackOtherTaskProcess"},
		},
		{
			ID:       "T-093",
			Title:    "A task runs as root, or two live tasks share a uid",
			STRIDE:   "E",
			Asset:    "the isolation between tasks that rests on distinct unprivileged uids",
			Boundary: "the executor's uid allocation (machine-wide, across the nodes `unum dev` runs on one machine)",
			Attacker: "a task that would inherit another task's uid (and with it its files and processes), or a " +
				"misconfiguration handing out uid 0",
			Crosses:    []string{"task-sandbox"},
			Capability: CompromisedWorkload,
			Mitigation: "A uid range that includes 0 or -1 is refused at start; uids are handed out lowest free first, " +
				"each held with flock on a lock file in a root-owned folder shared by every executor on the machine (the " +
				"kernel frees it if the node dies), and a uid is skipped while any process on the machine runs under it. " +
				"A task keeps its uid across restarts; its work folder is removed before the uid is released. The shim " +
				"refuses uid or gid 0 whatever its spec says. What a finished task leaves outside its work folder is " +
				"T-102.",
			Status: Mitigated,
			Tests: []string{"scheduler/executor.TestAttackUIDNeverZeroNeverShared", "scheduler/executor.TestNewChecks",
				"scheduler/executor.TestRestartAfterKillWithBackoff"},
		},
		{
			ID:       "T-094",
			Title:    "A task's spec (environment, secrets) read by other local users",
			STRIDE:   "I",
			Asset:    "a task's environment and arguments as handed to the shim (secrets passed in env)",
			Boundary: "/proc of a compute node: argv and environ of the shim and of the task",
			Attacker: "any local user or other task reading /proc/PID/cmdline or environ of the shim while it starts a " +
				"task, or of the task afterwards",
			Crosses:    []string{"task-sandbox"},
			Capability: CompromisedWorkload,
			Mitigation: "The shim's argv is only the binary and shim.Arg and its environment is empty; the spec travels " +
				"through a pipe on fd 3 that the shim closes before it drops privileges. Once exec'd, the task's environ " +
				"is readable only by its own uid and root (ptrace access rules), which the test shows from another task. " +
				"The task's own argv is world-readable as for every process: secrets belong in env, not args.",
			Status: Mitigated,
			Tests:  []string{"scheduler/executor.TestAttackSpecNotInArgvOrEnv", "scheduler/executor.TestAttackOtherTaskProcess"},
		},
		{
			ID:       "T-087",
			Title:    "A node obtains an SVID for a workload not placed on it",
			STRIDE:   "SE",
			Asset:    "job identities (spiffe://TD/ns/NS/job/NAME)",
			Boundary: "a control node's Identity service (MintX509SVID, MintJWTSVID) called by a node agent",
			Attacker: "a compromised compute node that asks the CA for the SVID of a task placed on another node, of a " +
				"finished or removed allocation, or of another job through one of its own allocations",
			Crosses:    []string{"control-api", "node-agent"},
			Capability: CompromisedNode,
			Mitigation: "A task's SVID is minted only for entry alloc:ID, and only after a linearizable etcd read finds the " +
				"allocation under the calling node's own prefix (/unum/allocs/NODE/ID, written only by the scheduler " +
				"leader), not finished, naming exactly the requested SPIFFE ID, with the node still a member; a control " +
				"node without quorum refuses. The node's name comes from its verified certificate, never from the " +
				"request. Registration entries may not use task selectors, so no entry can stand in for an allocation. " +
				"Every refusal is an audited svid.issue deny.",
			Status: Mitigated,
			Tests: []string{"control.TestSchedulerEndToEnd", "control.TestCreateEntryValidation",
				"cmd/unum.TestJobsOnADevCluster", "cmd/unum.TestAttackSuite/a_compromised_node_cannot_mint_for_foreign_workloads"},
		},
		{
			ID:       "T-088",
			Title:    "A job submitted into a namespace the submitter has no right to",
			STRIDE:   "E",
			Asset:    "namespaces and the identities of their jobs",
			Boundary: "a control node's Scheduler service (SubmitJob, StopJob)",
			Attacker: "a user, workload or node that submits (or stops) a job in another team's namespace, or sends a " +
				"request naming a namespace it may use with a spec naming another",
			Crosses:    []string{"control-api"},
			Capability: CompromisedWorkload,
			Mitigation: "job.run is decided by the policy on job/NS/NAME from the request, and the handler refuses a spec " +
				"whose namespace or name differs from the request's, so the job stored is the one decided on. The shipped " +
				"policy lets operators and admins run jobs and data.namespace_bindings give others specific namespaces; " +
				"workloads and nodes get none. job.run and job.stop are privileged: recorded durably before they run.",
			Status: Mitigated,
			Tests: []string{"control.TestSchedulerRefusals", "control.TestSubmitIntoForeignNamespace",
				"policy.TestBuiltinBundleTestsPass"},
		},
		{
			ID:       "T-089",
			Title:    "A partitioned node's tasks run twice",
			STRIDE:   "T",
			Asset:    "the at-most-once placement of a task (and its identity)",
			Boundary: "node heartbeats; the scheduler leader; the node process's life",
			Attacker: "a network partition, a paused or crashed node process, or a job change while a node is down, " +
				"that keeps a task running on one node while the leader places it on another",
			Crosses:    []string{"node-agent", "control-api"},
			Capability: NetworkPeer,
			Mitigation: "The leader re-places a node's tasks only when its last heartbeat is older than the lease plus the " +
				"grace period, and a new leader (or one back from an etcd outage) counts no heartbeat as older than the " +
				"moment it began to observe. Allocations removed because of their job (stopped, replaced, reduced) wait " +
				"while their node is down. The node measures on its monotonic clock, from when it sent its last answered " +
				"heartbeat (earlier than the control plane's stamp), the deadline the control plane sends (lease + " +
				"grace/2), kills every task (cgroup.kill) when it passes and starts none until a heartbeat is answered " +
				"and a sync at least as recent as that heartbeat names the task again. If the node process dies, its " +
				"task reaper (a separate process holding a pipe only the node writes) kills the task root at once; if " +
				"it is stopped or hung, the reaper gets no keepalive for the fencing deadline and kills the tasks too. A " +
				"stale leader cannot commit: every plan is fenced by its election key and compares what it read. " +
				"Assumed: control nodes' clocks agree within the remaining grace/2 (10 s by default).",
			Status: Mitigated,
			Tests: []string{"control.TestLeaseAndFence", "control.TestNewLeaderGivesNodesALease", "control.TestPlanRound",
				"control.TestStaleLeaderCannotCommit", "control.TestSchedulerEndToEnd", "node.TestFencing",
				"scheduler/executor/reaper.TestReaperKillsTasksWhenTheNodeDies",
				"scheduler/executor/reaper.TestReaperKillsTasksOfAStalledNode", "cmd/unum.TestJobsOnADevCluster", "internal/faultcluster.TestFaults/the_scheduler_leader_fails_over_and_no_task_runs_twice"},
		},
		{
			ID:       "T-098",
			Title:    "A job declares egress the policy forbids",
			STRIDE:   "E",
			Asset:    "network reachability between workloads",
			Boundary: "a control node's Scheduler service (SubmitJob); the node's kernel (the compiled egress rules)",
			Attacker: "a submitter who lists, in a job's egress, identities the job's own identity may not reach, hoping the " +
				"declaration grants access",
			Crosses:    []string{"control-api", "task-network"},
			Capability: MaliciousInsider,
			Mitigation: "Each declared target is decided by the policy as net.connect with the job's identity as subject; " +
				"the job record keeps every answer, the effective egress is only the allowed ones, and `job run` and " +
				"`job status` show the denied ones with the policy's reasons. A declaration never widens access: the kernel's " +
				"rules are compiled from the policy's network grants, which net.connect reads too (T-117).",
			Status: Mitigated,
			Tests:  []string{"control.TestSchedulerRefusals", "policy.TestNetConnectIsTheGrants", "enforcement.TestCompileDataDriven"},
		},
		{
			ID:       "T-099",
			Title:    "A node reports state for tasks that are not its own",
			STRIDE:   "T",
			Asset:    "task states (job status, the leader's completion decisions)",
			Boundary: "a control node's Cluster service (Heartbeat)",
			Attacker: "a compromised compute node that reports another node's allocation as failed or complete, so the " +
				"leader marks it done and the CA stops minting for it",
			Crosses:    []string{"control-api"},
			Capability: CompromisedNode,
			Mitigation: "A heartbeat's task states are written only under the calling node's own prefix and only while the " +
				"allocation exists there (one etcd transaction compares it); ids must be allocation ids and the number " +
				"of tasks per heartbeat is bounded.",
			Status: Mitigated,
			Tests:  []string{"control.TestSchedulerEndToEnd"},
		},
		{
			ID:       "T-100",
			Title:    "unum exec abused: a relay, a replay or a credential for another node",
			STRIDE:   "E",
			Asset:    "running commands on nodes (exec.node)",
			Boundary: "a node's Tasks service (Exec), reached from control nodes",
			Attacker: "a compute node or a user that relays an exec itself; a relay that replays an exec credential to " +
				"run more commands; a credential minted for one node (or held by another service) presented to another",
			Crosses:    []string{"node-api", "delegation"},
			Capability: CompromisedNode,
			Mitigation: "Scheduler.Exec is exec.run, privileged (an admin's in the shipped policy) and refused on a " +
				"delegated call. The node runs a command only when the relay's verified SVID chain is a control node's " +
				"(its own intermediate), the credential verifies (signature, time, revocation), is held by " +
				"spiffe://TD/system/exec, names this node in its audience and exec.node on it in its scopes, and was not " +
				"used on this node before (one command per credential per node, remembered until it expires). The " +
				"command runs as a confined batch task under a dynamic uid. Every refusal is an exec.run deny on the " +
				"node; every run is recorded with the caller as subject, the exec service in the chain and the jti.",
			Status: Mitigated,
			Tests:  []string{"cmd/unum.TestExecAttacks", "cmd/unum.TestJobsOnADevCluster", "policy.TestBuiltinBundleTestsPass", "cmd/unum.TestAttackSuite/a_workload_cannot_run_commands_through_the_api_of_another_node"},
		},
		{
			ID:       "T-101",
			Title:    "A task makes the executor write through a link it planted",
			STRIDE:   "TE",
			Asset:    "files anywhere on the node (the executor writes task logs as root)",
			Boundary: "a task's folder DIR/tasks/ID/ on its node",
			Attacker: "a task that replaces its logs/ folder, or plants a symbolic link where the executor will create or " +
				"rotate a log file, so that root writes (or truncates) a file of the attacker's choosing",
			Crosses:    []string{"task-sandbox"},
			Capability: CompromisedWorkload,
			Mitigation: "DIR/tasks/ID/ and its logs/ are root's (0711, 0700); only work/ belongs to the task's uid. The task " +
				"can neither remove, rename nor add entries beside or inside logs/, and log files are opened with " +
				"O_NOFOLLOW.",
			Status: Mitigated,
			Tests:  []string{"scheduler/executor.TestAttackLogFolder"},
		},
		{
			ID:       "T-102",
			Title:    "A task reads what an earlier task under the same uid left behind",
			STRIDE:   "I",
			Asset:    "files and IPC objects of finished tasks",
			Boundary: "shared places on a compute node: /tmp, /var/tmp, /dev/shm, POSIX message queues, System V IPC",
			Attacker: "a task given a uid an earlier task used, reading the files it left in shared temporary folders or " +
				"its message queues, semaphores and shared memory",
			Crosses:    []string{"task-sandbox"},
			Capability: CompromisedWorkload,
			Mitigation: "A task's work folder (HOME) and tmp folder (TMPDIR, its own, not /tmp) are deleted before its uid " +
				"is released. Under Landlock a task can create nothing in /tmp, /var/tmp, /dev/shm or any folder outside " +
				"its own (EACCES, even where the mode bits allow it). System V IPC, which neither Landlock nor seccomp " +
				"mediates, and POSIX message queues outlive their creator: before the uid is released the executor removes " +
				"every System V shared memory segment, message queue and semaphore set the uid owns or created " +
				"(/proc/sysvipc, IPC_RMID) and every message queue it owns (through /dev/mqueue, or a mount of its own), " +
				"as systemd's RemoveIPC does, and again before the uid is handed out (a crashed node released it unswept). The tests leave one object of each kind and a queue from a task and find " +
				"none of them once it finished.",
			Status: Mitigated,
			Tests: []string{"scheduler/executor.TestAttackIPCResidue", "scheduler/executor.TestAttackIPCResidueAfterCrash",
				"scheduler/executor.TestAttackFilesOutsideTask", "scheduler/executor.TestParseSysvipc", "scheduler/executor.TestAssignRemovalKillsWholeTree", "scheduler/executor.TestRunOnce"},
			Kernel: &KernelDependency{
				Feature: "landlock",
				Tests:   []string{"scheduler/executor.TestAttackFilesOutsideTask"},
				Fallback: []string{"scheduler/executor.TestAttackIPCResidue", "scheduler/executor.TestAttackIPCResidueAfterCrash",
					"scheduler/executor.TestAssignRemovalKillsWholeTree", "scheduler/executor.TestRunOnce"},
			},
		},
		{
			ID:       "T-103",
			Title:    "Lateral movement from a compromised task",
			STRIDE:   "E",
			Asset:    "every service a node can reach on the network, other jobs' listeners first",
			Boundary: "a task's network egress (connect and unconnected sendmsg) from the task cgroup subtree",
			Attacker: "a task whose process is fully compromised, connecting or sending to destinations its job's policy " +
				"does not grant",
			Crosses:    []string{"task-network"},
			Capability: CompromisedWorkload,
			Mitigation: "cgroup/connect4, connect6, sendmsg4 and sendmsg6 programs on the node's task root allow only the " +
				"(prefix, port, protocol) tuples in the allow map of the identity the task's cgroup is bound to, and return " +
				"EPERM otherwise, with an event naming the cgroup, identity, hook and destination. Rules change for running " +
				"processes without a restart. The programs and maps are pinned, so they keep enforcing while the agent is " +
				"down or being upgraded.",
			Status: Mitigated,
			Tests: []string{"enforcement/kernel.TestConnectAllowList", "enforcement/kernel.TestUDPSendmsg",
				"enforcement/kernel.TestRulesChangeForRunningProcess", "enforcement/kernel.TestSurvivesAgentKill",
				"enforcement/kernel.TestUpgradeUpdatesLinksInPlace", "enforcement/kernel.TestLookupMatchesReference",
				"cmd/unum.TestKernelEnforcementOnADevCluster", "control.TestNetworkOf", "cmd/unum.TestTaskAttacks/egress_outside_its_policy_is_refused_and_audited"},
		},
		{
			ID:       "T-104",
			Title:    "IPv4-mapped IPv6 bypass of IPv4 rules",
			STRIDE:   "E",
			Asset:    "IPv4 destinations the task's identity may not reach",
			Boundary: "the connect6 and sendmsg6 hooks on the task root",
			Attacker: "a task that opens an IPv6 socket and connects or sends to ::ffff:a.b.c.d, hoping the IPv6 hooks " +
				"miss the IPv4 rules, or that a broad IPv6 grant (::/0) covers IPv4",
			Crosses:    []string{"task-network"},
			Capability: CompromisedWorkload,
			Mitigation: "IPv4 rules are stored inside ::ffff:0:0/96 with family AF_INET in the LPM key, and the IPv6 " +
				"programs look a v4-mapped destination up with family AF_INET: it is judged exactly as the IPv4 address, " +
				"and no IPv6 rule can match it. Events report it as the IPv4 address.",
			Status: Mitigated,
			Tests: []string{"enforcement/kernel.TestIPv4MappedIPv6", "enforcement/kernel.TestRuleKeyEncoding",
				"enforcement/kernel.TestLookupMatchesReference"},
		},
		{
			ID:       "T-105",
			Title:    "Sockets the connect and sendmsg hooks do not govern",
			STRIDE:   "TI",
			Asset:    "the node's network allow lists, the node's traffic and other tasks' traffic (exfiltration, sniffing, spoofing)",
			Boundary: "socket creation in the task cgroup subtree",
			Attacker: "a task (even one running as root with CAP_NET_RAW) that opens a socket whose traffic the connect and " +
				"sendmsg hooks never judge: a raw IPv4/IPv6 or AF_PACKET socket to forge or read packets, an ICMP ping " +
				"socket (SOCK_DGRAM + IPPROTO_ICMP/ICMPV6, open to every gid where net.ipv4.ping_group_range is wide, as " +
				"systemd sets it) whose unconnected sendto reaches no sendmsg hook and sends ICMP echo anywhere, SCTP, " +
				"UDP-Lite, or MPTCP, whose further subflows the kernel creates and connects itself",
			Crosses:    []string{"task-network", "task-sandbox"},
			Capability: CompromisedWorkload,
			Mitigation: "cgroup/sock_create on the task root is an allow list: in AF_INET and AF_INET6 a process in the " +
				"subtree, bound or not, root too, may create only SOCK_STREAM/IPPROTO_TCP and SOCK_DGRAM/IPPROTO_UDP " +
				"sockets (protocol 0 is resolved by the kernel before the hook, so it counts as TCP or UDP); every other " +
				"type and protocol, MPTCP included, is refused with EPERM and an event naming family, type and protocol " +
				"(audit-only allows and reports). The kernel does not run that hook for AF_PACKET: packet sockets are " +
				"refused by the BPF LSM layer's socket_create where the kernel loads it, and otherwise rest on the task " +
				"lacking CAP_NET_RAW.",
			Status: Mitigated,
			Tests: []string{"enforcement/kernel.TestSockCreateAllowList", "enforcement/kernel.TestRawSocketsRefused",
				"enforcement/kernel.TestLSMEscapeSet", "scheduler/executor.TestAttackEscapeSyscalls",
				"scheduler/executor/shim.TestSeccompFilterVerdicts", "scheduler/executor.TestAttackSetuidCannotRegainRoot"},
			Kernel: &KernelDependency{
				Feature: "bpf-lsm",
				Tests:   []string{"enforcement/kernel.TestLSMEscapeSet"},
				Fallback: []string{"scheduler/executor.TestAttackEscapeSyscalls", "scheduler/executor/shim.TestSeccompFilterVerdicts",
					"scheduler/executor.TestAttackSetuidCannotRegainRoot"},
			},
		},
		{
			ID:       "T-106",
			Title:    "A process that bypasses the task shim",
			STRIDE:   "E",
			Asset:    "the node's network allow lists and the escape set (ptrace, bpf, mount, modules)",
			Boundary: "the task cgroup subtree",
			Attacker: "a process in the task subtree that did not go through the shim (no seccomp, no Landlock), or sits " +
				"in a cgroup the agent never bound: moved there, created there, or left after its task was unbound",
			Crosses:    []string{"task-sandbox", "task-network"},
			Capability: CompromisedWorkload,
			Mitigation: "The BPF programs key on the cgroup, not on the shim: a cgroup in the subtree without a binding is " +
				"denied every connect and sendmsg (default deny) and every raw socket. Where the kernel loads BPF LSM, " +
				"ptrace, bpf(), mount, module loading and packet sockets are refused for every process under the task " +
				"root; where it does not, the network layer still loads and Stats names the missing layer, and the " +
				"escape set rests on the shim's seccomp filter (T-107 to T-111): every process the executor puts in the " +
				"subtree comes through the shim, and a task cannot create or move itself into another group (T-091).",
			Status: Mitigated,
			Tests: []string{"enforcement/kernel.TestUnboundCgroupDenied", "enforcement/kernel.TestRawSocketsRefused",
				"enforcement/kernel.TestLSMEscapeSet", "enforcement/kernel.TestLSMRefusedKeepsNetwork",
				"scheduler/executor.TestAttackEscapeSyscalls", "scheduler/executor.TestAttackCgroupEscape"},
			Kernel: &KernelDependency{
				Feature: "bpf-lsm",
				Tests:   []string{"enforcement/kernel.TestLSMEscapeSet"},
				Fallback: []string{"enforcement/kernel.TestLSMRefusedKeepsNetwork", "scheduler/executor.TestAttackEscapeSyscalls",
					"scheduler/executor.TestAttackCgroupEscape"},
			},
		},
		{
			ID:       "T-116",
			Title:    "A network policy that is malformed or fails to evaluate opens the network",
			STRIDE:   "E",
			Asset:    "what a workload may reach on the network (the kernel's allow rules, net.connect decisions)",
			Boundary: "the policy bundle (data.unum.network.egress) into the node's network compiler",
			Attacker: "an operator's mistake or a hostile bundle author whose network grants are of the wrong type, name a " +
				"bad CIDR or port, mix kinds, are too many, or whose evaluation fails, hoping the node reads it as " +
				"\"no restriction\" or keeps the well-formed part",
			Crosses:    []string{"policy", "task-network"},
			Capability: MaliciousInsider,
			Mitigation: "policy.Engine.NetworkGrants validates every grant (one of id, namespace, cidr; a job's SPIFFE ID, " +
				"a DNS label, a prefix; ports 1-65535, at most 64; tcp, udp or any; a set of at most 1024) and any error " +
				"returns no grants: the identity gets no rules, never \"allow all\". The shipped authz.rego mirrors the " +
				"check, so net.connect is denied exactly then too (a test holds the two to one verdict). A malformed " +
				"data.network_egress refuses the bundle at apply. The compiler drops what it cannot compile (a grant of " +
				"two kinds, port 0, an unknown protocol, a listener on port 0) instead of widening it.",
			Status: Mitigated,
			Tests: []string{"policy.TestNetworkGrantsFailClosed", "policy.TestNetworkDataRefusedAtApply",
				"policy.TestNetworkValidationAgrees", "policy.TestBundleCases", "policy.TestBuiltinBundleTestsPass",
				"enforcement.TestCompileDataDriven"},
		},
		{
			ID:       "T-117",
			Title:    "A job widens its own network access from its spec",
			STRIDE:   "E",
			Asset:    "what a workload may reach on the network (lateral movement to other jobs, external addresses)",
			Boundary: "a job spec (job.run) into the policy and the network compiler",
			Attacker: "anyone who may run a job in a namespace (or a compromised deploy pipeline) who declares egress to " +
				"another namespace's jobs, or writes an address or CIDR in the spec, hoping the declaration itself grants it",
			Crosses:    []string{"control-api", "task-network"},
			Capability: MaliciousInsider,
			Mitigation: "A job's egress holds SPIFFE IDs only (an address, a CIDR or an unknown field is refused at parse). " +
				"A job reaches another job's listeners only when it declared it AND a policy grant (the target's ID or " +
				"namespace) covers it; addresses come from policy grants alone. The net.connect decision recorded at " +
				"submission is the same rule over the same grants (evaluated on the source), and no role opens the network.",
			Status: Mitigated,
			Tests: []string{"scheduler/jobspec.TestEgressNamesIdentitiesOnly", "enforcement.TestCompileDataDriven",
				"enforcement.TestCompileMatchesReference", "policy.TestNetConnectIsTheGrants", "policy.TestBundleCases",
				"policy.TestBuiltinBundleTestsPass"},
		},
		{
			ID:       "T-107",
			Title:    "A task injects code into another process with ptrace",
			STRIDE:   "TIE",
			Asset:    "the memory and control flow of other processes: another process of the task, a process of the same uid outside it, another task's",
			Boundary: "the task shim's seccomp filter and Landlock domain on a compute node",
			Attacker: "the code of a task calling ptrace(PTRACE_ATTACH), process_vm_readv/writev, pidfd_getfd or kcmp on " +
				"a process it may reach by uid (its own children, a process of the same uid left behind or started " +
				"outside the task), or signalling such a process",
			Crosses:    []string{"task-sandbox"},
			Capability: CompromisedWorkload,
			Mitigation: "The shim installs a seccomp filter on the thread that execs: ptrace, process_vm_readv, " +
				"process_vm_writev, kcmp, pidfd_getfd and process_madvise return EPERM whatever the target, so not even " +
				"a task's own child can be traced. The filter kills the process when a call comes through another " +
				"architecture's entry (int 0x80 on amd64) or the x32 ABI, whose numbers a native deny list would not " +
				"see. Landlock's signal scope (ABI 6) refuses a signal to any process outside the task's domain, even " +
				"of the same uid. Another uid's processes were already out of reach (T-092). The tests attach from a " +
				"task to its own child and to a process of its uid outside it (EPERM, and the latter survives a " +
				"SIGKILL from the task), while the unconfined control attaches and signals.",
			Status: Mitigated,
			Tests: []string{"scheduler/executor.TestAttackEscapeSyscalls", "scheduler/executor.TestAttackSameUIDOutsideTask",
				"scheduler/executor.TestAttackOtherTaskProcess", "scheduler/executor/shim.TestSeccompFilterVerdicts",
				"scheduler/executor/shim.TestConfineOnThread", "scheduler/executor.TestAttackUIDNeverZeroNeverShared"},
			Kernel: &KernelDependency{
				Feature: "landlock",
				Tests:   []string{"scheduler/executor.TestAttackSameUIDOutsideTask", "scheduler/executor/shim.TestConfineOnThread"},
				Fallback: []string{"scheduler/executor.TestAttackEscapeSyscalls", "scheduler/executor/shim.TestSeccompFilterVerdicts",
					"scheduler/executor.TestAttackOtherTaskProcess", "scheduler/executor.TestAttackUIDNeverZeroNeverShared"},
			},
		},
		{
			ID:       "T-108",
			Title:    "A task loads BPF programs or opens perf events",
			STRIDE:   "TIE",
			Asset:    "the kernel and the node's enforcement (BPF programs and maps, including unum's own)",
			Boundary: "the task shim's seccomp filter on a compute node",
			Attacker: "the code of a task calling bpf(2) (to load a program, reach a pinned map, or exploit the verifier) " +
				"or perf_event_open, userfaultfd or io_uring as kernel attack surface",
			Crosses:    []string{"task-sandbox"},
			Capability: CompromisedWorkload,
			Mitigation: "bpf, perf_event_open, userfaultfd, io_uring_setup/enter/register and fanotify_init return EPERM " +
				"from the seccomp filter before any of their kernel code runs, whatever the kernel's sysctls " +
				"(unprivileged_bpf_disabled, perf_event_paranoid) say: the test refuses them in the task and compares each " +
				"with an unconfined uid (where the machine's sysctls allow the call at all).",
			Status: Mitigated,
			Tests:  []string{"scheduler/executor.TestAttackEscapeSyscalls", "scheduler/executor/shim.TestSeccompFilterVerdicts"},
		},
		{
			ID:       "T-109",
			Title:    "A task escapes its file-system view with a mount",
			STRIDE:   "TE",
			Asset:    "the node's file system and the task's Landlock view of it",
			Boundary: "the task shim's seccomp filter on a compute node",
			Attacker: "the code of a task mounting, unmounting, bind-mounting (including through the new mount API), " +
				"pivot_root or chroot, or opening files by handle (open_by_handle_at, \"shocker\") to reach what its " +
				"paths do not",
			Crosses:    []string{"task-sandbox"},
			Capability: CompromisedWorkload,
			Mitigation: "mount, umount2, pivot_root, chroot, open_tree, open_tree_attr, move_mount, fsopen, fsconfig, " +
				"fsmount, fspick, mount_setattr and open_by_handle_at return EPERM from the filter; user namespaces, which " +
				"would grant the capability to mount inside them, are refused too (T-111). The thread test shows mount " +
				"refused even to root under the filter.",
			Status: Mitigated,
			Tests: []string{"scheduler/executor.TestAttackEscapeSyscalls", "scheduler/executor/shim.TestSeccompFilterVerdicts",
				"scheduler/executor/shim.TestConfineOnThread"},
			Kernel: &KernelDependency{
				Feature:  "landlock",
				Tests:    []string{"scheduler/executor/shim.TestConfineOnThread"},
				Fallback: []string{"scheduler/executor.TestAttackEscapeSyscalls", "scheduler/executor/shim.TestSeccompFilterVerdicts"},
			},
		},
		{
			ID:         "T-110",
			Title:      "A task loads a kernel module or boots another kernel",
			STRIDE:     "E",
			Asset:      "the kernel of a compute node",
			Boundary:   "the task shim's seccomp filter on a compute node",
			Attacker:   "the code of a task calling init_module, finit_module, delete_module, kexec_load or kexec_file_load",
			Crosses:    []string{"task-sandbox"},
			Capability: CompromisedWorkload,
			Mitigation: "Each returns EPERM from the filter (as do amd64's create_module, query_module and get_kernel_syms); " +
				"the task also holds no capability (T-090). On this test machine's kernel, built without modules and " +
				"kexec, the unconfined control gets ENOSYS where the task gets EPERM: the filter answers first.",
			Status: Mitigated,
			Tests:  []string{"scheduler/executor.TestAttackEscapeSyscalls", "scheduler/executor/shim.TestSeccompFilterVerdicts"},
		},
		{
			ID:       "T-111",
			Title:    "A task creates or joins namespaces to gain capabilities",
			STRIDE:   "E",
			Asset:    "kernel code reachable only with capabilities, and other processes' namespaces",
			Boundary: "the task shim's seccomp filter on a compute node",
			Attacker: "the code of a task calling unshare or clone with CLONE_NEWUSER (every capability inside the new " +
				"namespace) or another namespace flag, clone3 (whose flags seccomp cannot read), setns, or the syscalls " +
				"of another architecture's entry",
			Crosses:    []string{"task-sandbox"},
			Capability: CompromisedWorkload,
			Mitigation: "unshare and setns return EPERM whatever their flags; clone returns EPERM when its flags (the first " +
				"argument on amd64 and arm64, low 32 bits as the kernel reads them) carry CLONE_NEWNS, NEWCGROUP, NEWUTS, " +
				"NEWIPC, NEWUSER, NEWPID or NEWNET (CLONE_NEWTIME cannot be passed to clone); clone3 returns ENOSYS, so " +
				"the C library falls back to clone; a call from another architecture's entry or the x32 ABI kills the " +
				"process. The control shows the uid creating a user namespace with clone and reaching clone3 (EINVAL) " +
				"without the filter; in the task a Go program still forks (clone without namespace flags).",
			Status: Mitigated,
			Tests:  []string{"scheduler/executor.TestAttackEscapeSyscalls", "scheduler/executor/shim.TestSeccompFilterVerdicts"},
		},
		{
			ID:       "T-112",
			Title:    "A task reads or writes another task's or the host's files",
			STRIDE:   "TI",
			Asset:    "other tasks' folders, the node's data folder and the host's files that mode bits leave open",
			Boundary: "the task shim's Landlock ruleset on a compute node",
			Attacker: "the code of a task opening, listing, writing or executing files outside its own folders, where the " +
				"mode bits would let any uid in (a task that opened its own folder to everyone, world-writable host " +
				"folders), or connecting to an abstract unix socket of the host",
			Crosses:    []string{"task-sandbox"},
			Capability: CompromisedWorkload,
			Mitigation: "The shim enforces a Landlock ruleset on the thread that execs, for every right of the kernel's ABI: " +
				"read-write only the task's work and tmp folders; read and execute the system folders (/usr, /bin, /lib…) " +
				"and Config.ReadOnlyPaths; read /etc, /proc and /sys; a few devices; and read and execute the command " +
				"with its #! interpreter and ELF loader. Everything else is EACCES whatever the modes; the abstract unix " +
				"socket scope (ABI 6) refuses connections to sockets bound outside the task. The executor probes the ABI " +
				"at start and puts it in the spec; the shim fails the start on a lower one. On a kernel without " +
				"Landlock tasks run without this layer (unless the executor's RequireLandlock refuses to start), the " +
				"node reports the layers it applies, and what stands is each task's own uid and 0700 folders (T-093). " +
				"The test opens the victim's " +
				"files and a host folder to everyone, shows an unconfined uid reading, writing and executing there, and " +
				"the task refused each, while it still reads /etc, writes its HOME and TMPDIR, execs /bin/true and " +
				"connects to a pathname socket (the Workload API's kind).",
			Status: Mitigated,
			Tests: []string{"scheduler/executor.TestAttackFilesOutsideTask", "scheduler/executor/shim.TestConfineOnThread",
				"scheduler/executor.TestTaskConfinedAndIdentified", "scheduler/executor.TestAttackUIDNeverZeroNeverShared"},
			Kernel: &KernelDependency{
				Feature: "landlock",
				Tests:   []string{"scheduler/executor.TestAttackFilesOutsideTask", "scheduler/executor/shim.TestConfineOnThread"},
				Fallback: []string{"scheduler/executor.TestTaskConfinedAndIdentified",
					"scheduler/executor.TestAttackUIDNeverZeroNeverShared"},
			},
		},
		{
			ID:       "T-113",
			Title:    "Enforcement lost with the node agent",
			STRIDE:   "E",
			Asset:    "the network confinement of running tasks",
			Boundary: "the node agent process, between a crash (or SIGKILL, or an upgrade) and its restart",
			Attacker: "a compromised task that waits for, or causes, the agent's death and then connects where its " +
				"policy does not allow, expecting enforcement to live in the agent",
			Crosses:    []string{"node-agent", "task-network"},
			Capability: CompromisedWorkload,
			Mitigation: "Enforcement lives in the kernel: the programs are attached through bpf_links and, with their maps, " +
				"pinned under /sys/fs/bpf/unum/NODE, so they keep deciding with the last rules while no agent runs. A dead " +
				"agent's tasks run on only until the fencing deadline of its last keepalive (the reaper then kills them), " +
				"and a restarted agent stops the old reaper, re-adopts the pinned maps and links (updating programs in " +
				"place on an upgrade), drops the earlier run's bindings, and applies the next sync as a difference.",
			Status: Mitigated,
			Tests: []string{"cmd/unum.TestKernelEnforcementOnADevCluster", "enforcement/kernel.TestSurvivesAgentKill",
				"enforcement/kernel.TestUpgradeUpdatesLinksInPlace", "scheduler/executor/reaper.TestReaperKillsTasksWhenTheNodeDies"},
		},
		{
			ID:       "T-114",
			Title:    "Silent enforcement downgrade",
			STRIDE:   "RE",
			Asset:    "the cluster's assurance that tasks run confined",
			Boundary: "a compute node's kernel and its agent's start-up",
			Attacker: "an operator mistake or an attacker who makes a node come up without BPF (not root, a kernel " +
				"without cgroup BPF, a failed load) or switches a namespace to audit-only, hoping nobody notices",
			Crosses:    []string{"node-agent", "task-network", "control-api"},
			Capability: MaliciousInsider,
			Mitigation: "A node reports its mode (enforce, audit-only, degraded) and active layers in every heartbeat; " +
				"`unum status`, `unum node ls` and `unum enforcement status` show them with the reason. Every mode or " +
				"layer change, at start too, is an enforcement.mode audit event on the node; every settings change is an " +
				"enforcement.configure event, privileged in the fixed set. Enforcement is required by default outside " +
				"unum dev: a degraded node receives no tasks. Unreadable settings fail closed.",
			Status: Mitigated,
			Tests: []string{"node.TestDegradedEnforcementIsReported", "control.TestEnforcementRequired",
				"control.TestPlanRound", "cmd/unum.TestKernelEnforcementOnADevCluster", "control.TestEnforcementSettingsFailClosed"},
		},
		{
			ID:       "T-115",
			Title:    "Ingress to a task from anything that can reach its port",
			STRIDE:   "SE",
			Asset:    "the listeners of tasks",
			Boundary: "a task's ports on its node's address",
			Attacker: "a process on another host, or a task whose own egress is not confined (a degraded node), " +
				"connecting to a task's port",
			Crosses:    []string{"task-network"},
			Capability: NetworkPeer,
			Mitigation: "Not filtered in the kernel: the programs confine egress only. The control is mutual TLS with " +
				"SVIDs: a workload authenticates its peers with the Workload API's bundle and authorises them by SPIFFE ID.",
			Status: Accepted,
			Reason: "Ingress filtering (cgroup/skb ingress or the sock_ops/sk_lookup hooks keyed by the peer's identity) " +
				"needs the peer's identity on the wire; egress rules on every enforcing node already stop tasks reaching " +
				"what their policy does not grant.",
		},
		{
			ID:       "T-140",
			Title:    "A mitigation claimed but not proven: its test skipped, failed or never ran",
			STRIDE:   "R",
			Asset:    "the threat register's word: that every mitigated threat is proven by a passing test",
			Boundary: "the test run behind a release (make test, CI)",
			Crosses:  []string{"offline"},
			Attacker: "a contributor (or a change in the environment) that makes a security test skip (a new t.Skip, a missing " +
				"kernel feature, not running as root), fail in a package nobody reads, or disappear, while the register still says mitigated",
			Capability: MaliciousInsider,
			Mitigation: "make test runs the suite with go test -json and then `unum threatmodel check` over the results: every test of " +
				"a mitigated threat must have passed in at least one run and failed in none; a skip, a failure, a test that never finished " +
				"or never ran fails the build, naming the threat and the test. A test that needs a kernel feature may skip only with the " +
				"probe's KernelLacks message and only when the fallback's tests passed in the same run. Run without results, the check says " +
				"so instead of passing silently.",
			Status: Mitigated,
			Tests: []string{"threatmodel.TestCheckResults", "threatmodel.TestCheckResultsEveryRunCounts", "threatmodel.TestCheckResultsSubtests", "threatmodel.TestReadResultsKeepsTheEndOfLongOutput", "threatmodel.TestReadResultsUnfinished",
				"threatmodel.TestReadResultsRefusesNonResults", "internal/cli.TestThreatModelCheckCommand"},
		},
		{
			ID:         "T-141",
			Title:      "The published threat model drifts from the code",
			STRIDE:     "R",
			Asset:      "operators' and auditors' picture of what unum defends against, and of who is privileged",
			Boundary:   "docs/THREATMODEL.md, read outside the cluster",
			Crosses:    []string{"offline"},
			Attacker:   "a change that adds, weakens or re-states a threat or a privileged action without the published document following",
			Capability: MaliciousInsider,
			Mitigation: "docs/THREATMODEL.md is generated by `unum threatmodel -o md` from the register and the shipped policy (the privileged " +
				"actions are evaluated, not written by hand) and a test fails when the file differs from what the code renders; `--live` renders " +
				"a running cluster's own policy.",
			Status: Mitigated,
			Tests:  []string{"internal/cli.TestThreatModelDocIsCurrent", "internal/cli.TestThreatModelCommand", "cmd/unum.TestPolicyDevCluster"},
		},
		{
			ID:       "T-118",
			Title:    "Impersonation attempts at the Workload API leave no trace",
			STRIDE:   "R",
			Asset:    "the record of who tried to obtain which workload identity on a node",
			Boundary: "Workload API socket",
			Crosses:  []string{"workload-api", "node-disk"},
			Attacker: "a local process that probes the agent's socket for identities it has no entry for, keeps a " +
				"connection whose process exited so that its pid is recycled by a victim, or execs another binary " +
				"after connecting, and repeats until something works, counting on refusals being only log lines",
			Capability: CompromisedWorkload,
			Mitigation: "The agent reports every refused call (attestation failed: process gone, exec after connect, a " +
				"selector it could not evaluate; or no entry matched) to the node, which records a workload.attest deny " +
				"event in its own hash-chained audit log with the method, the pid and uid as at connect, the executable " +
				"and why, through the node's refusal limiter so that a flood costs one summary, not the log; the limiter " +
				"keeps a bucket per action, so that a flood of refused handshakes from the network cannot turn these " +
				"refusals into an anonymous count. The attack " +
				"suite recycles a real pid (ns_last_pid) on a dev node and finds the refusal with `unum audit query`.",
			Status: Mitigated,
			Tests: []string{"cmd/unum.TestAttackSuite/a_recycled_pid_does_not_inherit_a_workload_api_connection",
				"cmd/unum.TestAttackSuite/a_process_that_execs_after_connecting_is_not_served_as_the_new_binary",
				"identity/agent.TestExecAfterConnect", "identity/agent.TestNoMatchReported",
				"node.TestWorkloadRefusalsRecordedDuringAFlood", "audit.TestLimiterFloodOfOneActionSparesTheOthers"},
		},
		{
			ID:       "T-119",
			Title:    "Attempts to reach etcd directly leave no trace",
			STRIDE:   "R",
			Asset:    "the record of who tried to bypass the unum API to the consistent store",
			Boundary: "etcd client and peer ports on control nodes",
			Crosses:  []string{"control-quorum"},
			Attacker: "a compromised workload or node that connects to etcd's client or peer port with its SVID, " +
				"without a certificate, or with a certificate of another CA, looking for a way around the policy",
			Capability: CompromisedWorkload,
			Mitigation: "etcd refuses the handshake (T-006); the control node takes etcd's refused-handshake report " +
				"(meta.Config.Refused) and records an authn.etcd deny event with the listener, the caller's address and " +
				"etcd's reason, through the node's refusal limiter. Only handshakes that refused the caller's credential " +
				"are recorded: a probe that hangs up, times out or speaks no TLS 1.3 refused nobody and would be a false refusal.",
			Status: Mitigated,
			Tests: []string{"cmd/unum.TestAttackSuite/a_workload_cannot_reach_etcd_directly", "storage/meta.TestForeignCertificatesRefused",
				"storage/meta.TestProbesAreNotRefusals", "storage/meta.TestZapBridgeReportsOnlyRefusals", "node.TestEtcdRefusalRecorded"},
		},
		{
			ID:       "T-120",
			Title:    "A refused attempt to lock the cluster out of its policy leaves no trace",
			STRIDE:   "R",
			Asset:    "the record of attempts to change policy, refused ones included",
			Boundary: "control-plane API (Policy.Apply, Policy.Rollback) and the apply guard",
			Crosses:  []string{"control-api", "policy"},
			Attacker: "an admin, or whoever holds the admin's credential, who tries bundles that deny the break-glass " +
				"admin or mark privileged actions unprivileged until one passes; the authz decision for each try is " +
				"allow (the admin may apply), so the guard's refusal was the only trace, and it was not recorded",
			Capability: MaliciousInsider,
			Mitigation: "A bundle refused after the decision allowed the call (malformed, an overlong message, or refused " +
				"by the vetting: compile, tests, lockout guard) is recorded as a policy.apply or " +
				"policy.rollback deny event with its sha256, message and the guard's findings, beside the allow decision " +
				"that let the call run.",
			Status: Mitigated,
			Tests: []string{"cmd/unum.TestAttackSuite/a_bundle_that_locks_out_the_admin_or_lowers_a_privilege_is_refused",
				"control.TestRefusedBundlesRecorded"},
		},
		{
			ID:       "T-135",
			Title:    "A control-plane outage takes every workload's identity down with it",
			STRIDE:   "D",
			Asset:    "workloads' ability to authenticate (mutual TLS with SVIDs) while the control plane is unreachable",
			Boundary: "control-plane quorum; the node agent, between a node and an unreachable control plane",
			Crosses:  []string{"control-quorum", "node-agent"},
			Attacker: "anyone who can cut the control plane off or take it down (a partition, dead or stopped control " +
				"nodes, a flood), hoping every workload on every node loses its identity at once",
			Capability: NetworkPeer,
			Mitigation: "The node agent caches each workload's SVID and keeps serving it from its own Workload API while " +
				"minting fails, until the SVID expires (never past it); minting is retried with jittered exponential " +
				"backoff (at most 30 s), so once the control plane is back workloads get a renewed SVID within seconds. " +
				"The outage a workload rides out is the rest of its SVID's lifetime: at least half the TTL (1h by default), " +
				"since SVIDs are rotated at half-life.",
			Status: Mitigated,
			Tests: []string{"identity/agent.TestUpstreamFailureServesCachedUntilExpiry",
				"internal/faultcluster.TestFaults/workloads_keep_their_SVIDs_through_a_control-plane_outage_and_renew_after_it"},
		},
		{
			ID:       "T-130",
			Title:    "A task's escape attempts go unrecorded",
			STRIDE:   "R",
			Asset:    "the record of what a task tried: the operator's sign that a workload is compromised",
			Boundary: "the task shim's seccomp filter, between a task and its node's kernel",
			Crosses:  []string{"task-sandbox"},
			Attacker: "the code of a compromised task probing ptrace, bpf(), mount, namespaces, modules, keyrings or raw sockets: the " +
				"filter refuses each in the kernel and, without more, tells no one, so the probing leaves no trace",
			Capability: CompromisedWorkload,
			Mitigation: "The node's syscall audit layer, a raw_tracepoint/sys_exit program (seccomp skips sys_enter for a call it " +
				"refuses, not the exit work), reports every call that failed with EPERM under the task root whose number is in the " +
				"set the shim's filter refuses (shim.FilterModel.Audited, from the filter's own table): cgroup, identity, number, " +
				"first two arguments, pid and command. The node runs the shim's filter program in user space on them and records an " +
				"enforcement.deny event (hook syscall, resource syscall/-/NAME, subject the task's SPIFFE ID) only when the filter " +
				"refuses exactly that call with that errno, so an EPERM of another origin is not attributed to seccomp. A kernel " +
				"that refuses the program keeps every other layer, and the node reports the missing layer with the reason; the " +
				"refusal itself is seccomp's either way. Not recorded: clone3's ENOSYS (the C library's fallback path for every " +
				"thread; clone with namespace flags is recorded) and calls through another architecture's entry (the filter kills " +
				"the process). Every system call on the machine pays for the program (docs/BENCHMARKS.md), so no node leaves it " +
				"behind: a clean stop removes it, a dead node's reaper removes its pins once its tasks are gone, a failed start " +
				"or a failed Open lets go of it; an operator may turn " +
				"the layer off per node (unum node --syscall-audit=false), and the node then says so in its enforcement reason.",
			Status: Mitigated,
			Tests: []string{"enforcement/kernel.TestSyscallAuditRecordsSeccompRefusals", "enforcement/kernel.TestSyscallAuditWithTheShimsList",
				"enforcement/kernel.TestRegsOffsetsMatchKernelBTF", "enforcement/kernel.TestSyscallLayoutMatchesBTF",
				"enforcement/kernel.TestDecodeSyscallEvent", "scheduler/executor/shim.TestFilterModel", "node.TestSyscallDenials",
				"cmd/unum.TestTaskAttacks/ptrace_of_PID_1_and_of_its_own_child_is_refused_and_audited",
				"cmd/unum.TestTaskAttacks/bpf_is_refused_and_audited", "cmd/unum.TestTaskAttacks/mount_is_refused_and_audited",
				"cmd/unum.TestTaskAttacks/a_user_namespace_is_refused_and_audited", "scheduler/executor.TestAttackEscapeSyscalls",
				"node.TestSyscallAuditCanBeTurnedOff", "scheduler/executor/reaper.TestReaperRemovesTheDeadNodesPins", "enforcement/kernel.TestFailedOpenLetsGoOfTheSyscallLink"},
			Kernel: &KernelDependency{
				Feature: "bpf-syscall-audit",
				Tests: []string{"enforcement/kernel.TestSyscallAuditRecordsSeccompRefusals", "enforcement/kernel.TestSyscallAuditWithTheShimsList",
					"enforcement/kernel.TestRegsOffsetsMatchKernelBTF",
					"cmd/unum.TestTaskAttacks/ptrace_of_PID_1_and_of_its_own_child_is_refused_and_audited",
					"cmd/unum.TestTaskAttacks/bpf_is_refused_and_audited", "cmd/unum.TestTaskAttacks/mount_is_refused_and_audited",
					"cmd/unum.TestTaskAttacks/a_user_namespace_is_refused_and_audited", "node.TestSyscallAuditCanBeTurnedOff",
					"scheduler/executor/reaper.TestReaperRemovesTheDeadNodesPins", "enforcement/kernel.TestFailedOpenLetsGoOfTheSyscallLink"},
				Fallback: []string{"scheduler/executor.TestAttackEscapeSyscalls"},
			},
		},
		{
			ID:       "T-132",
			Title:    "A task floods the audit log with refused calls",
			STRIDE:   "RD",
			Asset:    "the node's audit log and its kernel event buffers: other tasks' refusals, and the record of the attempt that mattered",
			Boundary: "the BPF programs' ring buffers into the node's audit log",
			Crosses:  []string{"task-sandbox", "task-network"},
			Attacker: "the code of a task looping on refused calls or connects, or scanning destinations, so that the log fills, " +
				"other events are dropped, or its real attempt drowns among repeats",
			Capability: CompromisedWorkload,
			Mitigation: "The node aggregates denials: the first of a kind (task, hook, destination or system call) is recorded at once, " +
				"repeats within 10 s become one event with their count; past 4096 kinds at once a task's denials are counted under " +
				"its task and hook. Seccomp refusals have their own ring buffer, so a syscall loop cannot crowd out network " +
				"denials; what the kernel or the node could not queue is counted as dropped and shown in the node's enforcement " +
				"status. Not covered: a task looping on refused calls can fill the syscall ring (64 KiB) for a moment and so crowd out " +
				"other tasks' syscall refusals, which are then only counted as dropped (in the counter network losses share). " +
				"(The separate ring buffer and the dropped counters are by construction; the tests prove the aggregation and its bound.)",
			Status: Mitigated,
			Tests:  []string{"node.TestDenialsAggregate", "node.TestDenialsBounded", "node.TestSyscallDenials"},
		},
	}
	sortByID(threats)
	return threats
}
