package rpc

import (
	"slices"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/identity/delegation"
	"github.com/unumos/unum/identity/jointoken"
	"github.com/unumos/unum/policy"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// route is what a method means to the policy: the action (the CLI command
// that maps to it) and the resource, computed from the caller and request.
type route struct {
	action   string
	resource func(caller identity.Principal, msg any) policy.Resource
}

// requestFacts add what a request asks for to the input, beyond its action
// and resource: input.credential for a Delegate call. The route has
// already set the action and resource; presented is the verified
// credential the call presented (nil for a direct call).
var requestFacts = map[string]func(caller identity.Principal, msg any, presented *delegation.Credential, in *policy.Input){
	"/unum.v1.Credentials/Delegate": func(caller identity.Principal, m any, presented *delegation.Credential, in *policy.Input) {
		req, _ := m.(*unumv1.DelegateRequest)
		in.Action = delegateAction(caller, m)
		c := &policy.CredentialRequest{
			Subject:    nameOr(req.GetOnBehalfOf(), caller.ID.String()),
			Holder:     nameOr(req.GetTo(), caller.ID.String()),
			Scopes:     nonNil(req.GetScopes()),
			Audience:   nonNil(req.GetAudience()),
			TTLSeconds: req.GetTtlSeconds(),
		}
		if presented != nil {
			// An exchange keeps the presented credential's subject, and
			// what the request leaves out is the presented credential's:
			// the policy decides on what will be signed.
			c.Subject = presented.Subject.String()
			if len(c.Scopes) == 0 {
				for _, s := range presented.Scopes {
					c.Scopes = append(c.Scopes, s.String())
				}
			}
			if len(c.Audience) == 0 {
				for _, a := range presented.Audience {
					c.Audience = append(c.Audience, a.String())
				}
			}
		}
		in.Credential = c
	},
}

// withoutDelegation are the methods a caller can only make as itself:
// a node or user acting on its own certificate, stream or log. A presented
// credential is refused on them rather than decided (they have no meaning
// on someone's behalf).
var withoutDelegation = map[string]bool{
	"/unum.v1.Identity/RenewNodeSVID":    true,
	"/unum.v1.Identity/SyncAgent":        true,
	"/unum.v1.Identity/WatchRevocations": true,
	"/unum.v1.Cluster/Heartbeat":         true,
	"/unum.v1.Users/RenewUser":           true,
	"/unum.v1.CA/SignIntermediate":       true,
	"/unum.v1.Audit/SubmitCheckpoint":    true,
	"/unum.v1.Policy/Watch":              true,
}

func nonNil(ss []string) []string {
	if ss == nil {
		return []string{}
	}
	return ss
}

// storedResources refine a route's resource from stored state, for
// requests that name a thing by id: they are decided on what that thing is.
var storedResources = map[string]func(entries EntrySource, msg any, r policy.Resource) policy.Resource{
	// Decided on the entry's own workload ID, as CreateEntry is; an
	// unknown entry stays entry/-/ID (the handler then says not found).
	"/unum.v1.Identity/DeleteEntry": func(entries EntrySource, m any, r policy.Resource) policy.Resource {
		req, _ := m.(*unumv1.DeleteEntryRequest)
		if id, found := entries.EntrySPIFFEID(req.GetId()); found {
			return WorkloadResource("id", id)
		}
		return r
	},
}

func cluster(kind, name string) func(identity.Principal, any) policy.Resource {
	r := policy.Resource{Kind: kind, Namespace: policy.ClusterScope, Name: name}
	return func(identity.Principal, any) policy.Resource { return r }
}

// selfNode is the calling node itself: nodes act on themselves.
func selfNode(c identity.Principal, _ any) policy.Resource {
	return policy.Resource{Kind: "node", Namespace: policy.ClusterScope, Name: nameOr(c.Name, c.ID.String())}
}

func selfUser(c identity.Principal, _ any) policy.Resource {
	return policy.Resource{Kind: "user", Namespace: policy.ClusterScope, Name: nameOr(c.Name, c.ID.String())}
}

func nameOr(name, fallback string) string {
	if name != "" {
		return name
	}
	return fallback
}

// WorkloadResource names the workload a SPIFFE ID in a request designates:
// KIND/NAMESPACE/job/NAME for a workload ID, KIND/-/ID otherwise (which
// no namespace rule matches).
func WorkloadResource(kind, id string) policy.Resource {
	r := policy.Resource{Kind: kind, Namespace: policy.ClusterScope, Name: nameOr(id, "-")}
	if parsed, err := spiffeid.FromString(id); err == nil {
		if p := identity.Classify(parsed); p.Kind == identity.KindWorkload {
			r.Namespace, r.Name = p.Namespace, p.Name
		}
	}
	if r.Validate() != nil {
		r.Namespace, r.Name = policy.ClusterScope, nameOr(id, "-")
	}
	return r
}

func named(kind string, name func(any) string) func(identity.Principal, any) policy.Resource {
	return func(_ identity.Principal, msg any) policy.Resource {
		return policy.Resource{Kind: kind, Namespace: policy.ClusterScope, Name: nameOr(name(msg), "-")}
	}
}

// routes maps every method of the API to its action and resource. A method
// missing here is denied to everyone (TestEveryMethodHasARoute keeps it
// complete). Actions are `<noun>.<verb>` of the CLI command.
var routes = map[string]route{
	"/unum.v1.Identity/WhoAmI": {"id.show", cluster("id", "self")},
	"/unum.v1.Identity/MintX509SVID": {"svid.mint", func(_ identity.Principal, m any) policy.Resource {
		req, _ := m.(*unumv1.MintX509SVIDRequest)
		return WorkloadResource("svid", req.GetSpiffeId())
	}},
	"/unum.v1.Identity/MintJWTSVID": {"svid.mint", func(_ identity.Principal, m any) policy.Resource {
		req, _ := m.(*unumv1.MintJWTSVIDRequest)
		return WorkloadResource("svid", req.GetSpiffeId())
	}},
	"/unum.v1.Identity/RenewNodeSVID":    {"node.renew", selfNode},
	"/unum.v1.Identity/SyncAgent":        {"node.sync", selfNode},
	"/unum.v1.Identity/WatchRevocations": {"revocation.watch", selfNode},
	"/unum.v1.Identity/CreateEntry": {"id.register", func(_ identity.Principal, m any) policy.Resource {
		req, _ := m.(*unumv1.CreateEntryRequest)
		return WorkloadResource("id", req.GetSpiffeId())
	}},
	"/unum.v1.Identity/ListEntries": {"id.list", cluster("id", "*")},
	"/unum.v1.Identity/DeleteEntry": {"id.delete", named("entry", func(m any) string {
		req, _ := m.(*unumv1.DeleteEntryRequest)
		return req.GetId()
	})},

	"/unum.v1.Cluster/Heartbeat": {"node.heartbeat", selfNode},
	"/unum.v1.Cluster/ListNodes": {"node.ls", cluster("node", "*")},
	"/unum.v1.Cluster/Status":    {"cluster.status", cluster("cluster", "status")},
	// A token for a control node (etcd member, CA) is a different resource
	// kind, so a grant of node.join-token on node/... never covers it.
	"/unum.v1.Cluster/CreateJoinToken": {"node.join-token", func(_ identity.Principal, m any) policy.Resource {
		req, _ := m.(*unumv1.CreateJoinTokenRequest)
		// Read with the handler's own rule; a list it would refuse counts
		// as a control token (the handler then refuses it anyway).
		kind := "node"
		if roles, err := jointoken.NormalizeRoles(req.GetRoles()); err != nil || slices.Contains(roles, jointoken.RoleControl) {
			kind = "control-node"
		}
		return policy.Resource{Kind: kind, Namespace: policy.ClusterScope, Name: nameOr(req.GetName(), "-")}
	}},
	"/unum.v1.Cluster/RemoveNode": {"node.rm", named("node", func(m any) string {
		req, _ := m.(*unumv1.RemoveNodeRequest)
		return req.GetName()
	})},

	"/unum.v1.Users/AddUser": {"user.add", named("user", func(m any) string {
		req, _ := m.(*unumv1.AddUserRequest)
		return req.GetName()
	})},
	"/unum.v1.Users/RemoveUser": {"user.rm", named("user", func(m any) string {
		req, _ := m.(*unumv1.RemoveUserRequest)
		return req.GetName()
	})},
	"/unum.v1.Users/RevokeUser": {"user.revoke", named("user", func(m any) string {
		req, _ := m.(*unumv1.RevokeUserRequest)
		return req.GetName()
	})},
	"/unum.v1.Users/ListUsers": {"user.ls", cluster("user", "*")},
	"/unum.v1.Users/RenewUser": {"user.renew", selfUser},

	"/unum.v1.CA/Status":            {"ca.status", cluster("ca", "status")},
	"/unum.v1.CA/Rotate":            {"ca.rotate", cluster("ca", "intermediates")},
	"/unum.v1.CA/ExportRoot":        {"ca.export-root", cluster("ca", "root")},
	"/unum.v1.CA/ConfirmExportRoot": {"ca.export-root", cluster("ca", "root")},
	"/unum.v1.CA/ImportRoot":        {"ca.import-root", cluster("ca", "root")},
	"/unum.v1.CA/SignIntermediate":  {"ca.sign-intermediate", selfNode},

	"/unum.v1.Backup/Create": {"backup.create", cluster("backup", "cluster")},

	"/unum.v1.Policy/Apply":    {"policy.apply", cluster("policy", "bundle")},
	"/unum.v1.Policy/Rollback": {"policy.rollback", cluster("policy", "bundle")},
	"/unum.v1.Policy/Get":      {"policy.get", cluster("policy", "bundle")},
	"/unum.v1.Policy/History":  {"policy.history", cluster("policy", "bundle")},
	"/unum.v1.Policy/Status":   {"policy.status", cluster("policy", "bundle")},
	"/unum.v1.Policy/Check":    {"policy.check", cluster("policy", "bundle")},
	"/unum.v1.Policy/Explain": {"policy.explain", named("decision", func(m any) string {
		req, _ := m.(*unumv1.ExplainPolicyRequest)
		return req.GetDecisionId()
	})},
	"/unum.v1.Policy/Watch":        {"policy.watch", selfNode},
	"/unum.v1.Policy/StartShadow":  {"policy.shadow", cluster("policy", "shadow")},
	"/unum.v1.Policy/StopShadow":   {"policy.shadow", cluster("policy", "shadow")},
	"/unum.v1.Policy/ShadowReport": {"policy.explain", cluster("policy", "shadow")},

	"/unum.v1.Audit/Query":            {"audit.read", cluster("audit", "events")},
	"/unum.v1.Audit/Proof":            {"audit.read", cluster("audit", "events")},
	"/unum.v1.Audit/Verify":           {"audit.verify", cluster("audit", "log")},
	"/unum.v1.Audit/Witnessed":        {"audit.verify", cluster("audit", "witnessed")},
	"/unum.v1.Audit/Keys":             {"audit.keys", cluster("audit", "keys")},
	"/unum.v1.Audit/SubmitCheckpoint": {"audit.submit", selfNode},
	"/unum.v1.Audit/Configure":        {"audit.configure", cluster("audit", "config")},
	"/unum.v1.Audit/GetConfig":        {"audit.config", cluster("audit", "config")},

	// Minting is decided on the holder's resource (cred/NS/job/NAME for a
	// workload), with the credential asked for in input.credential; minting
	// on someone else's behalf is its own action, so no delegate grant
	// covers it.
	"/unum.v1.Credentials/Delegate": {"cred.delegate", credentialHolder},
	"/unum.v1.Credentials/Inspect":  {"cred.inspect", cluster("cred", "inspect")},
	"/unum.v1.Credentials/List":     {"cred.list", cluster("cred", "*")},
	"/unum.v1.Credentials/Revoke": {"cred.revoke", named("cred", func(m any) string {
		req, _ := m.(*unumv1.RevokeCredentialsRequest)
		return req.GetJti() + req.GetSubject() + req.GetHolder()
	})},
	"/unum.v1.Credentials/Keys": {"cred.keys", cluster("cred", "keys")},

	// Jobs are decided on job/NAMESPACE/NAME: submitting into a namespace
	// is the policy's decision, and the handler refuses a spec that names
	// another job than the request.
	"/unum.v1.Scheduler/SubmitJob": {"job.run", func(_ identity.Principal, m any) policy.Resource {
		req, _ := m.(*unumv1.SubmitJobRequest)
		return jobResource(req.GetNamespace(), req.GetName())
	}},
	"/unum.v1.Scheduler/ListJobs": {"job.ls", func(_ identity.Principal, m any) policy.Resource {
		req, _ := m.(*unumv1.ListJobsRequest)
		return jobResource(nameOr(req.GetNamespace(), policy.ClusterScope), "*")
	}},
	"/unum.v1.Scheduler/JobStatus": {"job.status", func(_ identity.Principal, m any) policy.Resource {
		req, _ := m.(*unumv1.JobStatusRequest)
		return jobResource(req.GetNamespace(), req.GetName())
	}},
	"/unum.v1.Scheduler/StopJob": {"job.stop", func(_ identity.Principal, m any) policy.Resource {
		req, _ := m.(*unumv1.StopJobRequest)
		return jobResource(req.GetNamespace(), req.GetName())
	}},
	"/unum.v1.Scheduler/ListAllocations": {"task.ls", cluster("task", "*")},
	"/unum.v1.Scheduler/DrainNode": {"node.drain", named("node", func(m any) string {
		req, _ := m.(*unumv1.DrainNodeRequest)
		return req.GetName()
	})},
	"/unum.v1.Scheduler/LabelNode": {"node.label", named("node", func(m any) string {
		req, _ := m.(*unumv1.LabelNodeRequest)
		return req.GetName()
	})},
	"/unum.v1.Scheduler/Exec": {"exec.run", named("node", func(m any) string {
		req, _ := m.(*unumv1.ExecRequest)
		return nameOr(req.GetSelector(), "*")
	})},
	"/unum.v1.Enforcement/Status":    {"enforcement.status", cluster("cluster", "enforcement")},
	"/unum.v1.Enforcement/Configure": {"enforcement.configure", cluster("cluster", "enforcement")},
	"/unum.v1.Tasks/List":            {"task.ls", cluster("task", "*")},
	"/unum.v1.Tasks/Logs": {"job.logs", func(_ identity.Principal, m any) policy.Resource {
		req, _ := m.(*unumv1.TaskLogsRequest)
		return jobResource(req.GetNamespace(), req.GetJob())
	}},
	// A control node relays an exec; the handler also requires the
	// caller's chain to be a control node's and checks the caller's
	// delegated credential the request carries.
	"/unum.v1.Tasks/Exec": {"exec.node", cluster("node", "exec")},
}

// jobResource is job/NS/NAME; an invalid name or namespace yields a
// resource no rule matches (the handler refuses the request anyway).
func jobResource(ns, name string) policy.Resource {
	r := policy.Resource{Kind: "job", Namespace: nameOr(ns, "-"), Name: nameOr(name, "-")}
	if r.Validate() != nil {
		return policy.Resource{Kind: "job", Namespace: "invalid", Name: "invalid"}
	}
	return r
}

// credentialHolder is the resource of a Delegate call: the holder's.
func credentialHolder(c identity.Principal, m any) policy.Resource {
	req, _ := m.(*unumv1.DelegateRequest)
	return WorkloadResource("cred", nameOr(req.GetTo(), c.ID.String()))
}

// delegateAction is cred.impersonate for a Delegate call on someone
// else's behalf.
func delegateAction(c identity.Principal, m any) string {
	req, _ := m.(*unumv1.DelegateRequest)
	if o := req.GetOnBehalfOf(); o != "" && o != c.ID.String() {
		return "cred.impersonate"
	}
	return "cred.delegate"
}
