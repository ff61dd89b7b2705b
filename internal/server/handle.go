package server

import (
	"context"
	"log/slog"
	"syscall"
	"time"

	"github.com/sockfactory/sockfactory/internal/broker"
	"github.com/sockfactory/sockfactory/internal/connector"
	"github.com/sockfactory/sockfactory/internal/metrics"
	"github.com/sockfactory/sockfactory/internal/netns"
	"github.com/sockfactory/sockfactory/internal/wire"
)

// handle serves one decoded request and returns its reply and, on success,
// the descriptor that goes with it (the caller sends it, then closes or
// returns it). wait, if set, is called before a connect waits (see
// connector.Options.Wait). With metrics on, it counts the request and
// its duration (to the reply, not its sending).
func (ss *session) handle(req *wire.Request, wait func()) (*wire.Reply, handout) {
	m := ss.s.metrics
	if m == nil {
		return ss.dispatch(req, wait)
	}
	start := time.Now()
	rep, out := ss.dispatch(req, wait)
	var code wire.Code
	if rep.Error != nil {
		code = rep.Error.Code
		if code == wire.CodeDenied && !audited(req.Op) {
			m.Denial("") // the audited ops' denials are counted with their rule, by auditErr
		}
	}
	m.Request(metrics.Native, req.Op, code, time.Since(start))
	return rep, out
}

// audited reports the ops whose failures go through auditErr.
func audited(op wire.Op) bool {
	switch op {
	case wire.OpConnect, wire.OpBind, wire.OpPickup, wire.OpReclaim, wire.OpRelease:
		return true
	}
	return false
}

// dispatch serves one decoded request: handle without the counting.
func (ss *session) dispatch(req *wire.Request, wait func()) (*wire.Reply, handout) {
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
		return rep, handout{sock: f}
	case wire.OpHello:
		if err := ss.hello(req.Hello); err != nil {
			rep.Error = toWire(err)
		} else {
			rep.OK = true
		}
		return rep, handout{}
	case wire.OpBind:
		res, f, out, err := ss.bind(req.Bind)
		ss.auditBind(req, out, res, err)
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
func (ss *session) connect(r *wire.ConnectRequest, wait func()) (connector.Sock, broker.Outcome, error) {
	n, err := connector.ParseNetwork(r.Network)
	if err != nil {
		return connector.Sock{}, broker.Outcome{}, wire.Errorf(wire.CodeInvalidRequest, "%v", err)
	}
	t, err := broker.ParseTarget(r.Address)
	if err != nil {
		return connector.Sock{}, broker.Outcome{}, err
	}
	timeout := ss.s.timeout
	if r.TimeoutMS > 0 && r.TimeoutMS < timeout.Milliseconds() { // compared in ms: no overflow
		timeout = time.Duration(r.TimeoutMS) * time.Millisecond
	}
	pol := ss.s.policy.Load()
	sc, err := ss.s.namespaces.Scope(pol, &ss.caller, r.Netns, ss.raw)
	if err != nil {
		return connector.Sock{}, broker.Outcome{}, err
	}
	ctx, cancel := context.WithTimeout(ss.ctx, timeout)
	defer cancel()
	f, out, err := broker.Connect(ctx, pol, &sc.Caller, ss.s.connector, n, t, ss.s.namespaces.ConnectOptions(&sc, connector.Options{Wait: wait}))
	out.Netns = sc.Target
	return f, out, err
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
	a = appendNetns(a, req.Connect.Netns, out.Netns)
	if err == nil {
		a = append(a, slog.String("rule", out.Rule), slog.Any("remote", out.Remote), slog.Any("local", out.Local))
		ss.log.LogAttrs(context.Background(), slog.LevelInfo, "grant", a...)
		return
	}
	ss.auditErr(a, out.Rule, err)
}

// appendNetns adds the namespace a request named and, once it was found,
// its identity: names can be re-pointed, the identity says which one was
// used.
func appendNetns(a []slog.Attr, name string, t netns.Target) []slog.Attr {
	if name == "" {
		return a
	}
	a = append(a, slog.String("netns", name))
	if !t.ID.IsZero() {
		a = append(a, slog.String("netns_id", t.ID.String()))
	}
	return a
}

// auditBind logs a bind request.
func (ss *session) auditBind(req *wire.Request, out bindOutcome, res *wire.BindResult, err error) {
	rule := out.rule
	if err == nil && !ss.log.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	r := req.Bind
	var buf [16]slog.Attr
	a := append(buf[:0], slog.String("op", string(req.Op)), slog.Uint64("id", req.ID),
		slog.String("network", r.Network), slog.String("address", r.Address),
		slog.String("share", r.Share), slog.String("name", r.Name))
	a = appendNetns(a, r.Netns, out.netns)
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
		if m := ss.s.metrics; m != nil {
			m.Denial(rule)
		}
	}
	ss.log.LogAttrs(context.Background(), level, msg, a...)
}
