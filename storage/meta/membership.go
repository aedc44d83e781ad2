package meta

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Backoff between membership change attempts that etcd refused for now: it
// promotes a learner only once its log is close to the leader's, and adds a
// member only once the cluster has been healthy for a while.
const (
	reconfigBackoffMin = 50 * time.Millisecond
	reconfigBackoffMax = time.Second
)

// Learner is what AddLearner tells the new member.
type Learner struct {
	ID uint64
	// InitialCluster is the string the new member must start with
	// (ClusterStateExisting).
	InitialCluster string
	// VoterClientURLs are the client URLs of the voting members: a learner
	// serves no client requests, so until it is promoted the new member
	// reaches the cluster through these.
	VoterClientURLs []string
}

// AddLearner adds a member that will start as name and listen for peers at
// peerURL, as a non-voting learner: it cannot cost the cluster quorum while it
// catches up. Right after a membership
// change etcd refuses another for a few seconds; AddLearner waits that out
// within ctx.
//
// Members that were added but have not started yet have no name, and a start
// string cannot name them; AddLearner refuses to add another member while one
// is pending, rather than hand out a start string that etcd would reject.
func AddLearner(ctx context.Context, c *clientv3.Client, name, peerURL string) (Learner, error) {
	if err := validMemberName(name); err != nil {
		return Learner{}, fmt.Errorf("add etcd learner: %w", err)
	}
	if _, err := parseHTTPSURL("peer url", peerURL); err != nil {
		return Learner{}, fmt.Errorf("add etcd learner: %w", err)
	}
	list, err := c.MemberList(ctx)
	if err != nil {
		return Learner{}, fmt.Errorf("add etcd learner %q: list members: %w", name, err)
	}
	for _, m := range list.Members {
		if m.Name == "" {
			return Learner{}, fmt.Errorf("add etcd learner %q: member %x (%s) was added but has not started: start or remove it first", name, m.ID, strings.Join(m.PeerURLs, ","))
		}
		if m.Name == name {
			return Learner{}, fmt.Errorf("add etcd learner %q: a member with that name exists (id %x)", name, m.ID)
		}
	}
	resp, err := addLearnerWhenHealthy(ctx, c, peerURL)
	if err != nil {
		return Learner{}, fmt.Errorf("add etcd learner %q at %s: %w", name, peerURL, err)
	}
	id := resp.Member.ID
	initial, err := initialCluster(resp.Members, id, name)
	if err != nil {
		// Another member was added concurrently. Do not leave a learner
		// behind that nobody will start.
		if _, rerr := c.MemberRemove(ctx, id); rerr != nil {
			err = errors.Join(err, fmt.Errorf("remove learner %x again: %w", id, rerr))
		}
		return Learner{}, fmt.Errorf("add etcd learner %q: %w", name, err)
	}
	l := Learner{ID: id, InitialCluster: initial}
	for _, m := range resp.Members {
		if !m.IsLearner {
			l.VoterClientURLs = append(l.VoterClientURLs, m.ClientURLs...)
		}
	}
	return l, nil
}

// addLearnerWhenHealthy adds the learner, waiting while etcd refuses because
// the leader has not been connected to a quorum for long enough (five
// seconds, etcd's HealthInterval): right after a member joined, etcd wants
// the cluster to settle before the next change.
func addLearnerWhenHealthy(ctx context.Context, c *clientv3.Client, peerURL string) (*clientv3.MemberAddResponse, error) {
	backoff := reconfigBackoffMin
	for {
		resp, err := c.MemberAddAsLearner(ctx, []string{peerURL})
		if err == nil || !errors.Is(err, rpctypes.ErrUnhealthy) {
			return resp, err
		}
		if err := sleep(ctx, backoff); err != nil {
			return nil, fmt.Errorf("%w (last refusal: %v)", err, rpctypes.ErrUnhealthy)
		}
		backoff = min(2*backoff, reconfigBackoffMax)
	}
}

// initialCluster renders members as "name=peerURL,..." sorted by name, using
// newName for the member newID (which has no name until it starts).
func initialCluster(members []*etcdserverpb.Member, newID uint64, newName string) (string, error) {
	var parts []string
	for _, m := range members {
		n := m.Name
		if m.ID == newID {
			n = newName
		}
		if n == "" {
			return "", fmt.Errorf("member %x has not started and has no name", m.ID)
		}
		if err := validMemberName(n); err != nil {
			return "", err
		}
		for _, u := range m.PeerURLs {
			parts = append(parts, n+"="+u)
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ","), nil
}

// PromoteWhenReady promotes the learner memberID to a voting member, retrying
// while etcd says the learner is not yet in sync (or the cluster is briefly
// unavailable) until ctx ends. A member that is already a voter counts as
// promoted, so a retry after a lost reply succeeds.
func PromoteWhenReady(ctx context.Context, c *clientv3.Client, memberID uint64) error {
	backoff := reconfigBackoffMin
	for {
		_, err := c.MemberPromote(ctx, memberID)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, rpctypes.ErrMemberNotFound):
			return fmt.Errorf("promote etcd member %x: %w", memberID, err)
		case errors.Is(err, rpctypes.ErrMemberNotLearner):
			voter, lerr := isVoter(ctx, c, memberID)
			if lerr != nil {
				return fmt.Errorf("promote etcd member %x: %w", memberID, errors.Join(err, lerr))
			}
			if voter {
				return nil
			}
			return fmt.Errorf("promote etcd member %x: %w", memberID, err)
		}
		if serr := sleep(ctx, backoff); serr != nil {
			return fmt.Errorf("promote etcd member %x: %w (last refusal: %v)", memberID, serr, err)
		}
		backoff = min(2*backoff, reconfigBackoffMax)
	}
}

func isVoter(ctx context.Context, c *clientv3.Client, id uint64) (bool, error) {
	list, err := c.MemberList(ctx)
	if err != nil {
		return false, fmt.Errorf("list members: %w", err)
	}
	for _, m := range list.Members {
		if m.ID == id {
			return !m.IsLearner, nil
		}
	}
	return false, fmt.Errorf("member %x not found", id)
}

// RemoveMember removes memberID from the cluster. With strict reconfiguration
// checks on, etcd refuses a removal that would leave too few started members
// for quorum.
func RemoveMember(ctx context.Context, c *clientv3.Client, memberID uint64) error {
	if _, err := c.MemberRemove(ctx, memberID); err != nil {
		return fmt.Errorf("remove etcd member %x: %w", memberID, err)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
