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
	case wire.OpHello:
		if err := ss.hello(req.Hello); err != nil {
			rep.Error = toWire(err)
		} else {
			rep.OK = true
		}
		return rep, nil
	case wire.OpBind:
		res, f, rule, err := ss.bind(req.Bind)
		ss.auditBind(req, rule, res, err)
		if err != nil {
			rep.Error = toWire(err)
			return rep, nil
		}
		rep.Bind = res
		return rep, f
	case wire.OpPickup:
		res, f, err := ss.pickup(req.Token)
		ss.auditToken(req, res, err)
		if err != nil {
			rep.Error = toWire(err)
			return rep, nil
		}
		rep.Bind = res
		return rep, f
	case wire.OpRelease:
		k, err := ss.release(req.Token)
		ss.auditToken(req, &wire.BindResult{Network: k.Proto, Local: k.Addr.String()}, err)
		if err != nil {
			rep.Error = toWire(err)
		} else {
			rep.OK = true
		}
		return rep, nil
	case wire.OpStatus:
		rep.Status = ss.status()
		return rep, nil
	case wire.OpReload:
		if err := ss.reload(); err != nil {
			rep.Error = toWire(err)
		} else {
			rep.OK = true
		}
		return rep, nil
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
	if r.TimeoutMS > 0 && r.TimeoutMS < timeout.Milliseconds() { // compared in ms: no overflow
		timeout = time.Duration(r.TimeoutMS) * time.Millisecond
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
	ss.auditErr(args, out.Rule, err)
}

// auditBind writes the one log line every bind request gets.
func (ss *session) auditBind(req *wire.Request, rule string, res *wire.BindResult, err error) {
	r := req.Bind
	args := []any{"op", req.Op, "id", req.ID, "network", r.Network, "address", r.Address, "share", r.Share, "name", r.Name}
	if err == nil {
		ss.log.Info("grant", append(args, "rule", rule, "local", res.Local, "shared", res.Shared, "token_only", r.TokenOnly)...)
		return
	}
	ss.auditErr(args, rule, err)
}

// auditToken logs a pickup or release. Tokens are not logged: the log is
// readable by more people than the tokens' holders.
func (ss *session) auditToken(req *wire.Request, res *wire.BindResult, err error) {
	args := []any{"op", req.Op, "id", req.ID}
	if err == nil {
		ss.log.Info("grant", append(args, "network", res.Network, "local", res.Local)...)
		return
	}
	ss.auditErr(args, "", err)
}

func (ss *session) auditErr(args []any, rule string, err error) {
	we := toWire(err)
	args = append(args, "code", we.Code, "err", we.Message)
	if we.Errno != 0 {
		args = append(args, "errno", syscall.Errno(we.Errno).Error())
	}
	if rule != "" {
		args = append(args, "rule", rule)
	}
	if we.Code == wire.CodeDenied {
		ss.log.Warn("deny", args...)
		return
	}
	ss.log.Info("fail", args...)
}
