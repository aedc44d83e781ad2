package cli

import (
	"context"
	"flag"
	"fmt"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/identity/jointoken"
	"github.com/unumos/unum/internal/output"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/node"
)

func validUserName(name string) error {
	if err := jointoken.ValidateUserName(name); err != nil {
		return usagef("%v", err)
	}
	return nil
}

func runUserAdd(e *env, args []string) error {
	fs := flag.NewFlagSet("unum user add", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	role := fs.String("role", "", "admin | operator | viewer (required for a new user)")
	certTTL := fs.Duration("cert-ttl", 0, fmt.Sprintf("longest lifetime of the user's certificates (default %s, %s to %s)", node.DefaultUserCertTTL, node.MinUserCertTTL, node.MaxUserCertTTL))
	tokenTTL := fs.Duration("token-ttl", 15*time.Minute, "how long the enrolment token is valid (1s to 24h)")
	reissue := fs.Bool("reissue-token", false, "mint a new enrolment token for an existing user (after a revoke or a lost token)")
	c, err := cf.connect(e, fs, args, 1, "unum user add NAME --role admin|operator|viewer", func(pos []string) error {
		if err := validUserName(pos[0]); err != nil {
			return err
		}
		if pos[0] == identity.AdminUser {
			return usagef("admin is the built-in user: it cannot be added (`unum admin recover` mints its credential)")
		}
		switch {
		case *role == "" && !*reissue:
			return usagef("--role is required: admin, operator or viewer")
		case *role != "" && !rpc.ValidRole(*role):
			return usagef("--role %q: want admin, operator or viewer", *role)
		case *certTTL != 0 && (*certTTL < node.MinUserCertTTL || *certTTL > node.MaxUserCertTTL):
			return usagef("--cert-ttl must be between %s and %s", node.MinUserCertTTL, node.MaxUserCertTTL)
		case *tokenTTL < time.Second || *tokenTTL > 24*time.Hour:
			return usagef("--token-ttl must be between 1s and 24h")
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer c.close()
	name := c.args[0]
	resp, err := unumv1.NewUsersClient(c.conn).AddUser(c.ctx, &unumv1.AddUserRequest{
		Name: name, Role: *role, CertTtlSeconds: int64(certTTL.Seconds()),
		TokenTtlSeconds: int64(tokenTTL.Seconds()), ReissueToken: *reissue,
	})
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, resp.GetToken())
	addr := "HOST:PORT"
	if addrs := enrollmentAddresses(c.ctx, c.conn); len(addrs) > 0 {
		addr = addrs[0]
	}
	fmt.Fprintf(e.stderr, "enrolment token for %s (role %s, certificates up to %s), valid until %s, single use.\n"+
		"Hand it over privately; on the user's machine:\n"+
		"  UNUM_LOGIN_TOKEN=<token> unum login --addr %s      (or --token-file FILE)\n",
		name, resp.GetUser().GetRole(), time.Duration(resp.GetUser().GetCertTtlSeconds())*time.Second,
		time.Unix(resp.GetTokenExpiresAtUnix(), 0).UTC().Format(time.RFC3339), addr)
	return nil
}

// enrollmentAddresses lists the control nodes' enrolment addresses, for the
// hint printed with a token; nil when they cannot be listed.
func enrollmentAddresses(ctx context.Context, cc *grpc.ClientConn) []string {
	resp, err := unumv1.NewClusterClient(cc).ListNodes(ctx, &unumv1.ListNodesRequest{})
	if err != nil {
		return nil
	}
	var out []string
	for _, n := range resp.GetNodes() {
		if n.GetEnrollmentAddress() != "" {
			out = append(out, n.GetEnrollmentAddress())
		}
	}
	return out
}

// userView is the JSON shape of a user in `unum user ls`.
type userView struct {
	Name      string        `json:"name"`
	SPIFFEID  string        `json:"spiffe_id"`
	Role      string        `json:"role"`
	CertTTL   time.Duration `json:"cert_ttl_ns"`
	CreatedAt time.Time     `json:"created_at"`
	CreatedBy string        `json:"created_by"`
}

func runUserLs(e *env, args []string) error {
	fs := flag.NewFlagSet("unum user ls", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	c, err := cf.connect(e, fs, args, 0, "", nil)
	if err != nil {
		return err
	}
	defer c.close()
	resp, err := unumv1.NewUsersClient(c.conn).ListUsers(c.ctx, &unumv1.ListUsersRequest{})
	if err != nil {
		return err
	}
	views := make([]userView, 0, len(resp.GetUsers()))
	for _, u := range resp.GetUsers() {
		views = append(views, userView{
			Name: u.GetName(), SPIFFEID: u.GetSpiffeId(), Role: u.GetRole(),
			CertTTL:   time.Duration(u.GetCertTtlSeconds()) * time.Second,
			CreatedAt: unixTime(u.GetCreatedAtUnix()), CreatedBy: u.GetCreatedBy(),
		})
	}
	return output.Write(e.stdout, c.format, struct {
		Users []userView `json:"users"`
	}{views}, func(tw *tabwriter.Writer) error {
		fmt.Fprintln(tw, "NAME\tROLE\tSPIFFE ID\tCERT TTL\tCREATED\tCREATED BY")
		for _, v := range views {
			ttl := "-"
			if v.CertTTL > 0 {
				ttl = v.CertTTL.String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", v.Name, v.Role, v.SPIFFEID, ttl, fmtTime(v.CreatedAt), v.CreatedBy)
		}
		return nil
	})
}

func runUserRm(e *env, args []string) error {
	fs := flag.NewFlagSet("unum user rm", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	c, err := cf.connect(e, fs, args, 1, "unum user rm NAME", func(pos []string) error {
		if err := validUserName(pos[0]); err != nil {
			return err
		}
		if pos[0] == identity.AdminUser {
			return usagef("admin is the built-in user: it cannot be removed; `unum user revoke admin` refuses its certificates")
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer c.close()
	if _, err := unumv1.NewUsersClient(c.conn).RemoveUser(c.ctx, &unumv1.RemoveUserRequest{Name: c.args[0]}); err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "user %s removed; their certificates are refused from now on\n", c.args[0])
	return nil
}

func runUserRevoke(e *env, args []string) error {
	fs := flag.NewFlagSet("unum user revoke", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	c, err := cf.connect(e, fs, args, 1, "unum user revoke NAME", func(pos []string) error { return validUserName(pos[0]) })
	if err != nil {
		return err
	}
	defer c.close()
	resp, err := unumv1.NewUsersClient(c.conn).RevokeUser(c.ctx, &unumv1.RevokeUserRequest{Name: c.args[0]})
	if err != nil {
		return err
	}
	before := time.Unix(0, resp.GetBeforeUnixNano()).UTC().Format(time.RFC3339)
	fmt.Fprintf(e.stderr, "every certificate of %s issued before %s is refused\n", c.args[0], before)
	if c.args[0] == identity.AdminUser {
		fmt.Fprintln(e.stderr, "this includes the config you used, if it is an admin config: mint a new one on a control node with `unum admin recover` (after "+before+")")
	} else {
		fmt.Fprintf(e.stderr, "to let them back in: unum user add %s --reissue-token\n", c.args[0])
	}
	return nil
}
