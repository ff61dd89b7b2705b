package server

import (
	"context"
	"os"
	"syscall"
	"time"

	"sockfactory/internal/broker"
	"sockfactory/internal/connector"
	"sockfactory/internal/wire"
)

// handle serves one decoded request and returns its reply and, on success,
// the file whose fd goes with it (the caller sends and closes it).
func (ss *session) handle(req *wire.Request) (*wire.Reply, *os.File) {
	rep := &wire.Reply{V: wire.Version, ID: req.ID}
	switch req.Op {
	case wire.OpConnect:
		start := time.Now()
		f, out, err := ss.connect(req.Connect)
		ss.audit(req, out, err, time.Since(start))
		if err != nil {
			rep.Error = toWire(err)
			return rep, nil
		}
		rep.Connect = &wire.ConnectResult{Local: out.Local.String(), Remote: out.Remote.String()}
		return rep, f
	}
	rep.Error = wire.Errorf(wire.CodeInvalidRequest, "unknown op %q", req.Op)
	return rep, nil
}

// connect parses a connect request and hands it to the broker.
func (ss *session) connect(r *wire.ConnectRequest) (*os.File, broker.Outcome, error) {
	n, err := connector.ParseNetwork(r.Network)
	if err != nil {
		return nil, broker.Outcome{}, wire.Errorf(wire.CodeInvalidRequest, "%v", err)
	}
	t, err := broker.ParseTarget(r.Address)
	if err != nil {
		return nil, broker.Outcome{}, err
	}
	timeout := ss.s.timeout
	if d := time.Duration(r.TimeoutMS) * time.Millisecond; d > 0 && d < timeout {
		timeout = d
	}
	ctx, cancel := context.WithTimeout(ss.ctx, timeout)
	defer cancel()
	return broker.Connect(ctx, ss.s.policy.Load(), &ss.caller, ss.s.connector, n, t, connector.Options{})
}

// audit writes the one log line every connect request gets.
func (ss *session) audit(req *wire.Request, out broker.Outcome, err error, took time.Duration) {
	args := []any{"op", req.Op, "id", req.ID, "network", req.Connect.Network, "address", req.Connect.Address, "ms", took.Milliseconds()}
	if err == nil {
		ss.log.Info("grant", append(args, "rule", out.Rule, "remote", out.Remote, "local", out.Local)...)
		return
	}
	we := toWire(err)
	args = append(args, "code", we.Code, "err", we.Message)
	if we.Errno != 0 {
		args = append(args, "errno", syscall.Errno(we.Errno).Error())
	}
	if we.Code == wire.CodeDenied {
		ss.log.Warn("deny", args...)
		return
	}
	if out.Rule != "" {
		args = append(args, "rule", out.Rule)
	}
	ss.log.Info("fail", args...)
}
