package server

import (
	"context"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/sockfactory/sockfactory/internal/broker"
	"github.com/sockfactory/sockfactory/internal/connector"
	"github.com/sockfactory/sockfactory/internal/wire"
)

// handle serves one decoded request and returns its reply and, on success,
// the descriptor that goes with it (the caller sends it, then closes or
// returns it). wait, if set, is called before a connect waits (see
// connector.Options.Wait).
func (ss *session) handle(req *wire.Request, wait func()) (*wire.Reply, handout) {
	rep := &wire.Reply{V: wire.Version, ID: req.ID}
	switch req.Op {
	case wire.OpConnect:
		start := time.Now()
		f, out, err := ss.connect(req.Connect, wait)
		ss.audit(req, out, err, time.Since(start))
		if err != nil {
			rep.Error = toWire(err)
			return rep, handout{}
		}
		rep.Connect = &wire.ConnectResult{Local: out.Local.String(), Remote: out.Remote.String()}
		return rep, handout{file: f}
	case wire.OpHello:
		if err := ss.hello(req.Hello); err != nil {
			rep.Error = toWire(err)
		} else {
			rep.OK = true
		}
		return rep, handout{}
	case wire.OpBind:
		res, f, rule, err := ss.bind(req.Bind)
		ss.auditBind(req, rule, res, err)
		if err != nil {
			rep.Error = toWire(err)
			return rep, handout{}
		}
		rep.Bind = res
		return rep, f
	case wire.OpPickup:
		res, f, err := ss.pickup(req.Token)
		ss.auditToken(req, res, err)
		if err != nil {
			rep.Error = toWire(err)
			return rep, handout{}
		}
		rep.Bind = res
		return rep, f
	case wire.OpReclaim:
		res, err := ss.reclaim(req.Reclaim)
		ss.auditToken(req, res, err)
		if err != nil {
			rep.Error = toWire(err)
			return rep, handout{}
		}
		rep.Bind = res
		return rep, handout{}
	case wire.OpRelease:
		k, err := ss.release(req.Token)
		ss.auditToken(req, &wire.BindResult{Network: k.Proto, Local: k.Addr.String()}, err)
		if err != nil {
			rep.Error = toWire(err)
		} else {
			rep.OK = true
		}
		return rep, handout{}
	case wire.OpStatus:
		rep.Status = ss.status()
		return rep, handout{}
	case wire.OpReload:
		if err := ss.reload(); err != nil {
			rep.Error = toWire(err)
		} else {
			rep.OK = true
		}
		return rep, handout{}
	}
	rep.Error = wire.Errorf(wire.CodeInvalidRequest, "unknown op %q", req.Op)
	return rep, handout{}
}

// connect parses a connect request and hands it to the broker.
func (ss *session) connect(r *wire.ConnectRequest, wait func()) (*os.File, broker.Outcome, error) {
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
	return broker.Connect(ctx, ss.s.policy.Load(), &ss.caller, ss.s.connector, n, t, connector.Options{Wait: wait})
}

// The audit functions below write the one log line every request gets: at
// info level for a grant or a failure, at warning level for a denial. They
// build typed attributes, and nothing at all when the line's level is off:
// this runs for every request.

// audit logs a connect request.
func (ss *session) audit(req *wire.Request, out broker.Outcome, err error, took time.Duration) {
	if err == nil && !ss.log.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	var buf [16]slog.Attr
	a := append(buf[:0], slog.String("op", string(req.Op)), slog.Uint64("id", req.ID),
		slog.String("network", req.Connect.Network), slog.String("address", req.Connect.Address),
		slog.Int64("ms", took.Milliseconds()))
	if err == nil {
		a = append(a, slog.String("rule", out.Rule), slog.Any("remote", out.Remote), slog.Any("local", out.Local))
		ss.log.LogAttrs(context.Background(), slog.LevelInfo, "grant", a...)
		return
	}
	ss.auditErr(a, out.Rule, err)
}

// auditBind logs a bind request.
func (ss *session) auditBind(req *wire.Request, rule string, res *wire.BindResult, err error) {
	if err == nil && !ss.log.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	r := req.Bind
	var buf [16]slog.Attr
	a := append(buf[:0], slog.String("op", string(req.Op)), slog.Uint64("id", req.ID),
		slog.String("network", r.Network), slog.String("address", r.Address),
		slog.String("share", r.Share), slog.String("name", r.Name))
	if err == nil {
		a = append(a, slog.String("rule", rule), slog.String("local", res.Local),
			slog.Bool("shared", res.Shared), slog.Bool("token_only", r.TokenOnly))
		ss.log.LogAttrs(context.Background(), slog.LevelInfo, "grant", a...)
		return
	}
	ss.auditErr(a, rule, err)
}

// auditToken logs a pickup or release. Tokens are not logged: the log is
// readable by more people than the tokens' holders.
func (ss *session) auditToken(req *wire.Request, res *wire.BindResult, err error) {
	if err == nil && !ss.log.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	var buf [16]slog.Attr
	a := append(buf[:0], slog.String("op", string(req.Op)), slog.Uint64("id", req.ID))
	if err == nil {
		a = append(a, slog.String("network", res.Network), slog.String("local", res.Local))
		ss.log.LogAttrs(context.Background(), slog.LevelInfo, "grant", a...)
		return
	}
	ss.auditErr(a, "", err)
}

func (ss *session) auditErr(a []slog.Attr, rule string, err error) {
	we := toWire(err)
	a = append(a, slog.String("code", string(we.Code)), slog.String("err", we.Message))
	if we.Errno != 0 {
		a = append(a, slog.String("errno", syscall.Errno(we.Errno).Error()))
	}
	if rule != "" {
		a = append(a, slog.String("rule", rule))
	}
	level, msg := slog.LevelInfo, "fail"
	if we.Code == wire.CodeDenied {
		level, msg = slog.LevelWarn, "deny"
	}
	ss.log.LogAttrs(context.Background(), level, msg, a...)
}
