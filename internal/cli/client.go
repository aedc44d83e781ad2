package cli

import (
	"context"
	"flag"
	"time"

	"google.golang.org/grpc"

	"github.com/unumos/unum/internal/clientconfig"
	"github.com/unumos/unum/internal/output"
	"github.com/unumos/unum/internal/rpc"
)

// clientFlags are the flags every client command takes.
type clientFlags struct {
	configPath string
	output     string
	timeout    time.Duration
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.configPath, "config", "", "client config file (default $UNUM_CONFIG, else ~/.config/unum/config.yaml from unum login)")
	fs.StringVar(&c.output, "o", "table", "output format: table|json|yaml")
	fs.DurationVar(&c.timeout, "timeout", 15*time.Second, "how long to wait for the server")
}

func (c *clientFlags) format() (output.Format, error) {
	f, err := output.ParseFormat(c.output)
	if err != nil {
		return "", usagef("-o: %v", err)
	}
	return f, nil
}

// config loads the client config (--config, else UNUM_CONFIG, else the
// default path) and says where it came from.
func (c *clientFlags) config() (*clientconfig.Config, string, error) {
	path, err := clientconfig.Resolve(c.configPath)
	if err != nil {
		return nil, "", err
	}
	cfg, err := clientconfig.Load(path)
	return cfg, path, err
}

// credentials are the client config's certificate and trust bundle.
func (c *clientFlags) credentials() (*rpc.Credentials, error) {
	cfg, _, err := c.config()
	if err != nil {
		return nil, err
	}
	return cfg.Credentials()
}

// dial connects to the API with the client config.
func (c *clientFlags) dial(e *env) (*grpc.ClientConn, context.Context, context.CancelFunc, error) {
	cfg, _, err := c.config()
	if err != nil {
		return nil, nil, nil, err
	}
	creds, err := cfg.Credentials()
	if err != nil {
		return nil, nil, nil, err
	}
	cc, err := rpc.Dial(creds, cfg.Addresses)
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(e.ctx, c.timeout)
	return cc, ctx, func() { cancel(); cc.Close() }, nil
}

// clientCall is a client command after its flags were parsed and checked
// and its connection dialed.
type clientCall struct {
	args   []string
	format output.Format
	conn   *grpc.ClientConn
	ctx    context.Context
	close  func()
}

// connect parses args with fs (on which cf is registered), requires nargs
// positional arguments (-1: any; usage names them), runs validate (may be
// nil) and dials. Every usage problem is reported before a connection is
// made.
func (cf *clientFlags) connect(e *env, fs *flag.FlagSet, args []string, nargs int, usage string, validate func(pos []string) error) (*clientCall, error) {
	pos, err := parseFlags(fs, args)
	if err != nil {
		return nil, err
	}
	switch {
	case nargs == 0:
		if err := noArgs(pos); err != nil {
			return nil, err
		}
	case nargs > 0 && len(pos) != nargs:
		return nil, usagef("usage: %s", usage)
	}
	f, err := cf.format()
	if err != nil {
		return nil, err
	}
	if validate != nil {
		if err := validate(pos); err != nil {
			return nil, err
		}
	}
	cc, ctx, done, err := cf.dial(e)
	if err != nil {
		return nil, err
	}
	return &clientCall{args: pos, format: f, conn: cc, ctx: ctx, close: done}, nil
}
