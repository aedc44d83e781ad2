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
	config  string
	output  string
	timeout time.Duration
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.config, "config", "", "client config file (default $UNUM_CONFIG)")
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

// dial connects to the API with the client config.
func (c *clientFlags) dial(e *env) (*grpc.ClientConn, context.Context, context.CancelFunc, error) {
	path, err := clientconfig.Resolve(c.config)
	if err != nil {
		return nil, nil, nil, err
	}
	cfg, err := clientconfig.Load(path)
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
