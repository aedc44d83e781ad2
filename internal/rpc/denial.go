package rpc

import (
	"strconv"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ReasonPolicyDenied marks a call the policy denied. The ErrorInfo detail
// carries the decision id, revision, action and resource; the reasons
// travel in the message and, one per entry, in the metadata keys
// reason_0, reason_1, ...
const ReasonPolicyDenied = "POLICY_DENIED"

// Denial is a policy denial as a client sees it.
type Denial struct {
	DecisionID string
	Revision   int64
	Action     string
	Resource   string
	Reasons    []string
}

// deniedStatus is the PermissionDenied status of a denied decision.
func deniedStatus(d Decision) error {
	msg := "denied by policy"
	if d.ID != "" {
		msg += " (decision " + d.ID + ")"
	}
	if r := d.Reason(); r != "" {
		msg += ": " + r
	}
	st := status.New(codes.PermissionDenied, msg)
	md := map[string]string{
		"decision_id": d.ID,
		"revision":    strconv.FormatInt(d.Revision, 10),
		"action":      d.Action,
		"resource":    d.Resource,
	}
	for i, r := range d.Reasons {
		md["reason_"+strconv.Itoa(i)] = r
	}
	if withInfo, err := st.WithDetails(&errdetails.ErrorInfo{Reason: ReasonPolicyDenied, Domain: errorDomain, Metadata: md}); err == nil {
		st = withInfo
	}
	return st.Err()
}

// DenialOf extracts the policy denial from a call's error.
func DenialOf(err error) (Denial, bool) {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.PermissionDenied {
		return Denial{}, false
	}
	for _, det := range st.Details() {
		info, ok := det.(*errdetails.ErrorInfo)
		if !ok || info.GetDomain() != errorDomain || info.GetReason() != ReasonPolicyDenied {
			continue
		}
		md := info.GetMetadata()
		d := Denial{DecisionID: md["decision_id"], Action: md["action"], Resource: md["resource"]}
		d.Revision, _ = strconv.ParseInt(md["revision"], 10, 64)
		for i := 0; ; i++ {
			r, ok := md["reason_"+strconv.Itoa(i)]
			if !ok {
				break
			}
			d.Reasons = append(d.Reasons, r)
		}
		return d, true
	}
	return Denial{}, false
}

// String is the denial as the CLI prints it.
func (d Denial) String() string {
	var b strings.Builder
	b.WriteString("denied by policy")
	if d.Action != "" {
		b.WriteString(": " + d.Action + " " + d.Resource)
	}
	if d.Revision > 0 {
		b.WriteString(" (revision " + strconv.FormatInt(d.Revision, 10) + ")")
	}
	for _, r := range d.Reasons {
		b.WriteString("\n  reason: " + r)
	}
	if d.DecisionID != "" {
		b.WriteString("\n  decision: " + d.DecisionID + " (unum policy explain " + d.DecisionID + ")")
	}
	return b.String()
}
