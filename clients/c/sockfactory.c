/*
 * sockfactory.c: the C client of sockfactoryd (see sockfactory.h and
 * docs/protocol.md). libc only: a strict, bounded JSON reader for the
 * replies and a writer for the requests are in this file.
 */
#define _GNU_SOURCE /* MSG_CMSG_CLOEXEC */
#include "sockfactory.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* Descriptors one receive can bring: more than a reply may carry
 * (SF_MAX_FDS), so that a daemon sending too many is seen as such rather
 * than as truncated control data. More than this sets MSG_CTRUNC. */
#define RECV_FDS 32

#define DEFAULT_REPLY_TIMEOUT_MS 60000

/* ---------------------------------------------------------------------
 * Outcome
 */

static const struct {
	sf_code code;
	const char *name;
	const char *text;
	int errno_; /* errno for a daemon error without one */
} codes[] = {
	{ SF_OK, "ok", "success", 0 },
	{ SF_INVALID_REQUEST, "invalid_request", "the daemon could not accept the request as written", EINVAL },
	{ SF_UNSUPPORTED_VERSION, "unsupported_version", "the daemon speaks another protocol version", EPROTONOSUPPORT },
	{ SF_DENIED, "denied", "the policy does not grant the request to this caller", EACCES },
	{ SF_RESOLVE_FAILED, "resolve_failed", "the daemon could not resolve the host name", EHOSTUNREACH },
	{ SF_CONNECT_FAILED, "connect_failed", "every connect attempt failed", ECONNREFUSED },
	{ SF_TIMEOUT, "timeout", "the request's time ran out in the daemon", ETIMEDOUT },
	{ SF_LIMIT_EXCEEDED, "limit_exceeded", "a daemon limit refused the request; retry later", EAGAIN },
	{ SF_INTERNAL, "internal", "the daemon failed for a reason of its own", EIO },
	{ SF_SHARE_CONFLICT, "share_conflict", "the socket is held with a share mode or options that forbid this request", EBUSY },
	{ SF_NOT_FOUND, "not_found", "no such token (or network namespace) for this caller", ENOENT },
	{ SF_BIND_FAILED, "bind_failed", "the daemon could not create or bind the socket", EADDRNOTAVAIL },
	{ SF_UNAVAILABLE, "unavailable", "the daemon could not be reached, or the connection broke", ECONNRESET },
	{ SF_PROTOCOL, "protocol", "the daemon's reply broke the protocol", EPROTO },
	{ SF_UNKNOWN_CODE, "unknown", "the daemon reported an error this library does not know", EIO },
	{ SF_LOCAL, "local", "the call failed in this process", EINVAL },
};

#define NCODES (sizeof codes / sizeof codes[0])

const char *sf_code_name(sf_code code)
{
	size_t i;

	for (i = 0; i < NCODES; i++)
		if (codes[i].code == code)
			return codes[i].name;
	return "unknown";
}

const char *sf_strerror(sf_code code)
{
	size_t i;

	for (i = 0; i < NCODES; i++)
		if (codes[i].code == code)
			return codes[i].text;
	return "unknown sockfactory error";
}

static int code_errno(sf_code code)
{
	size_t i;

	for (i = 0; i < NCODES; i++)
		if (codes[i].code == code)
			return codes[i].errno_;
	return EIO;
}

/* code_from_name maps a protocol error code to its sf_code. */
static sf_code code_from_name(const char *name)
{
	size_t i;

	for (i = 1; i < NCODES; i++) {
		if (codes[i].code > SF_BIND_FAILED)
			break;
		if (strcmp(codes[i].name, name) == 0)
			return codes[i].code;
	}
	return SF_UNKNOWN_CODE;
}

sf_code sf_last_code(const sf_client *c) { return c->code; }
int sf_last_errno(const sf_client *c) { return c->daemon_errno; }
const char *sf_last_message(const sf_client *c) { return c->message; }
const char *sf_last_code_name(const sf_client *c) { return c->code_name; }

static void succeed(sf_client *c)
{
	c->code = SF_OK;
	c->daemon_errno = 0;
	c->code_name[0] = '\0';
	c->message[0] = '\0';
}

/* fail records a failure of the library's own (code SF_UNAVAILABLE,
 * SF_PROTOCOL or SF_LOCAL), sets errno to err and returns -1. */
static int fail(sf_client *c, sf_code code, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(sf_client *c, sf_code code, int err, const char *fmt, ...)
{
	va_list ap;

	c->code = code;
	c->daemon_errno = 0;
	snprintf(c->code_name, sizeof c->code_name, "%s", sf_code_name(code));
	va_start(ap, fmt);
	vsnprintf(c->message, sizeof c->message, fmt, ap);
	va_end(ap);
	errno = err;
	return -1;
}

static void close_fds(int *fds, int n)
{
	int i;

	for (i = 0; i < n; i++)
		close(fds[i]);
}

/* ---------------------------------------------------------------------
 * Socket path (internal/paths ClientSocket)
 */

static int exists(const char *p)
{
	struct stat st;

	return stat(p, &st) == 0;
}

/* own_dir reports whether dir is a directory of this user that no one
 * else may write: under /tmp anyone could have made it first. */
static int own_dir(const char *dir)
{
	struct stat st;

	if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
		return 0;
	return (st.st_mode & 022) == 0 && st.st_uid == getuid();
}

static int put(char *buf, size_t size, const char *s)
{
	if (strlen(s) >= size) {
		errno = ERANGE;
		return -1;
	}
	memcpy(buf, s, strlen(s) + 1);
	return 0;
}

int sf_default_path(char *buf, size_t size)
{
	const char *env = getenv(SF_ENV_SOCKET);
	const char *d;
	char user[4096], dir[4096];
	int n;

	if (env != NULL && env[0] != '\0')
		return put(buf, size, env);
	if (exists(SF_SYSTEM_SOCKET) || geteuid() == 0)
		return put(buf, size, SF_SYSTEM_SOCKET);
	d = getenv("XDG_RUNTIME_DIR");
	if (d != NULL && d[0] != '\0') {
		n = snprintf(dir, sizeof dir, "%s/sockfactory", d);
	} else {
		d = getenv("TMPDIR");
		if (d == NULL || d[0] == '\0')
			d = "/tmp";
		n = snprintf(dir, sizeof dir, "%s/sockfactory-%u", d, (unsigned)getuid());
	}
	if (n > 0 && (size_t)n < sizeof dir) {
		n = snprintf(user, sizeof user, "%s/sockfactory.sock", dir);
		if (n > 0 && (size_t)n < sizeof user && exists(user) && own_dir(dir))
			return put(buf, size, user);
	}
	return put(buf, size, SF_SYSTEM_SOCKET);
}

/* ---------------------------------------------------------------------
 * Connection
 */

static void drop_conn(sf_client *c)
{
	if (c->fd >= 0) {
		close(c->fd);
		c->fd = -1;
	}
}

static int do_hello(sf_client *c, const char *app);

/* dial connects to c->path and declares c->app. */
static int dial(sf_client *c)
{
	struct sockaddr_un sa;
	int fd, err;

	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, c->path, strlen(c->path) + 1);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return fail(c, SF_UNAVAILABLE, errno, "socket: %s", strerror(errno));
	while (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		if (errno == EINTR)
			continue;
		if (errno == EISCONN)
			break;
		err = errno;
		close(fd);
		if (err == ENOENT)
			return fail(c, SF_UNAVAILABLE, err, "no daemon socket at %s (%s): start sockfactoryd, or set %s to its socket", c->path, strerror(err), SF_ENV_SOCKET);
		if (err == EACCES || err == EPERM)
			return fail(c, SF_UNAVAILABLE, err, "%s exists but this user (uid %u) may not open it (%s): ask an admin for the socket's group, or set %s to a daemon of your own", c->path, (unsigned)getuid(), strerror(err), SF_ENV_SOCKET);
		if (err == ECONNREFUSED)
			return fail(c, SF_UNAVAILABLE, err, "nothing listens on %s (%s): start sockfactoryd, or set %s to its socket", c->path, strerror(err), SF_ENV_SOCKET);
		return fail(c, SF_UNAVAILABLE, err, "connecting to %s: %s", c->path, strerror(err));
	}
	c->fd = fd;
	if (c->app[0] != '\0' && do_hello(c, c->app) != 0) {
		err = errno;
		drop_conn(c);
		errno = err;
		return -1;
	}
	return 0;
}

int sf_open(sf_client *c, const char *path)
{
	char def[sizeof c->path];

	memset(c, 0, sizeof *c);
	c->fd = -1;
	c->reply_timeout_ms = DEFAULT_REPLY_TIMEOUT_MS;
	c->open = 1;
	succeed(c);
	if (path == NULL || path[0] == '\0') {
		if (sf_default_path(def, sizeof def) != 0)
			return fail(c, SF_LOCAL, ENAMETOOLONG, "the default socket path is longer than %zu bytes", sizeof def - 1);
		path = def;
	}
	if (strlen(path) >= sizeof c->path)
		return fail(c, SF_LOCAL, ENAMETOOLONG, "socket path longer than %zu bytes: %s", sizeof c->path - 1, path);
	memcpy(c->path, path, strlen(path) + 1);
	c->buf = malloc(2 * SF_MAX_MESSAGE); /* the reply, then the request */
	if (c->buf == NULL)
		return fail(c, SF_LOCAL, ENOMEM, "out of memory");
	if (dial(c) != 0)
		return -1;
	succeed(c);
	return 0;
}

int sf_close(sf_client *c)
{
	drop_conn(c);
	free(c->buf);
	c->buf = NULL;
	c->open = 0;
	return 0;
}

void sf_set_reply_timeout(sf_client *c, int ms)
{
	if (ms > 0)
		c->reply_timeout_ms = ms;
}

/* ---------------------------------------------------------------------
 * JSON writer (requests)
 */

struct jw {
	char *p;
	size_t len, cap;
	int over; /* the request did not fit */
};

static void jw_raw(struct jw *w, const char *s, size_t n)
{
	if (w->over || n > w->cap - w->len) {
		w->over = 1;
		return;
	}
	memcpy(w->p + w->len, s, n);
	w->len += n;
}

static void jw_lit(struct jw *w, const char *s) { jw_raw(w, s, strlen(s)); }

/* utf8_len returns the length of the valid UTF-8 sequence at s (n bytes
 * available), or 0 if there is none. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	unsigned c = s[0];
	size_t len, i;
	unsigned long cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		len = 2, cp = c & 0x1f;
	else if (c >= 0xe0 && c <= 0xef)
		len = 3, cp = c & 0x0f;
	else if (c >= 0xf0 && c <= 0xf4)
		len = 4, cp = c & 0x07;
	else
		return 0;
	if (n < len)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	if (cp >= 0xd800 && cp <= 0xdfff)
		return 0;
	return len;
}

/* jw_str writes s as a JSON string: quotes, backslashes and control
 * characters escaped, invalid UTF-8 replaced by U+FFFD (as Go's
 * encoding/json does). */
static void jw_str(struct jw *w, const char *s)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t n = strlen(s), i = 0, k;
	char esc[8];

	jw_raw(w, "\"", 1);
	while (i < n) {
		unsigned ch = u[i];
		if (ch == '"' || ch == '\\') {
			esc[0] = '\\';
			esc[1] = (char)ch;
			jw_raw(w, esc, 2);
			i++;
		} else if (ch < 0x20 || ch == 0x7f) {
			snprintf(esc, sizeof esc, "\\u%04x", ch);
			jw_raw(w, esc, 6);
			i++;
		} else if ((k = utf8_len(u + i, n - i)) == 0) {
			jw_raw(w, "\xef\xbf\xbd", 3);
			i++;
		} else {
			jw_raw(w, s + i, k);
			i += k;
		}
	}
	jw_raw(w, "\"", 1);
}

static void jw_u64(struct jw *w, uint64_t v)
{
	char num[24];

	snprintf(num, sizeof num, "%llu", (unsigned long long)v);
	jw_lit(w, num);
}

/* ---------------------------------------------------------------------
 * JSON reader (replies): strict RFC 8259, bounded in depth, never
 * reading past the packet.
 */

#define MAX_DEPTH 32

struct jr {
	const unsigned char *p, *end;
	int depth;
};

static void jr_ws(struct jr *r)
{
	while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
		r->p++;
}

static int jr_lit(struct jr *r, const char *lit)
{
	size_t n = strlen(lit);

	if ((size_t)(r->end - r->p) < n || memcmp(r->p, lit, n) != 0)
		return -1;
	r->p += n;
	return 0;
}

static int hex4(const unsigned char *p, unsigned *out)
{
	unsigned v = 0;
	int i;

	for (i = 0; i < 4; i++) {
		unsigned char ch = p[i];
		v <<= 4;
		if (ch >= '0' && ch <= '9')
			v |= ch - '0';
		else if (ch >= 'a' && ch <= 'f')
			v |= ch - 'a' + 10;
		else if (ch >= 'A' && ch <= 'F')
			v |= ch - 'A' + 10;
		else
			return -1;
	}
	*out = v;
	return 0;
}

/* Flags of jr_str. */
#define STR_CUT 1   /* cut a string too long for out (at a character) */
#define STR_NONUL 2 /* refuse a string that decodes to a NUL */

/* jr_str reads a string at r->p into out (size bytes, NUL-terminated;
 * out may be NULL to skip it) and sets *len to its decoded length.
 * Unpaired surrogates become U+FFFD, as in Go. Returns 0, or -1 for
 * invalid JSON or a string that does not fit (unless STR_CUT). */
static int jr_str(struct jr *r, char *out, size_t size, size_t *len, int flags)
{
	size_t n = 0, k;
	int full = 0;
	unsigned char enc[4];

	if (r->p >= r->end || *r->p != '"')
		return -1;
	r->p++;
	for (;;) {
		unsigned ch;

		if (r->p >= r->end)
			return -1;
		ch = *r->p;
		if (ch == '"') {
			r->p++;
			break;
		}
		if (ch < 0x20)
			return -1;
		if (ch == '\\') {
			unsigned cp, lo;

			if (r->end - r->p < 2)
				return -1;
			ch = r->p[1];
			r->p += 2;
			switch (ch) {
			case '"': case '\\': case '/':
				cp = ch;
				break;
			case 'b': cp = '\b'; break;
			case 'f': cp = '\f'; break;
			case 'n': cp = '\n'; break;
			case 'r': cp = '\r'; break;
			case 't': cp = '\t'; break;
			case 'u':
				if (r->end - r->p < 4 || hex4(r->p, &cp) != 0)
					return -1;
				r->p += 4;
				if (cp >= 0xd800 && cp <= 0xdbff) {
					if (r->end - r->p >= 6 && r->p[0] == '\\' && r->p[1] == 'u' &&
					    hex4(r->p + 2, &lo) == 0 && lo >= 0xdc00 && lo <= 0xdfff) {
						cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
						r->p += 6;
					} else {
						cp = 0xfffd;
					}
				} else if (cp >= 0xdc00 && cp <= 0xdfff) {
					cp = 0xfffd;
				}
				break;
			default:
				return -1;
			}
			if (cp == 0 && (flags & STR_NONUL))
				return -1;
			if (cp < 0x80) {
				enc[0] = (unsigned char)cp;
				k = 1;
			} else if (cp < 0x800) {
				enc[0] = (unsigned char)(0xc0 | cp >> 6);
				enc[1] = (unsigned char)(0x80 | (cp & 0x3f));
				k = 2;
			} else if (cp < 0x10000) {
				enc[0] = (unsigned char)(0xe0 | cp >> 12);
				enc[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
				enc[2] = (unsigned char)(0x80 | (cp & 0x3f));
				k = 3;
			} else {
				enc[0] = (unsigned char)(0xf0 | cp >> 18);
				enc[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
				enc[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
				enc[3] = (unsigned char)(0x80 | (cp & 0x3f));
				k = 4;
			}
		} else {
			k = utf8_len(r->p, (size_t)(r->end - r->p));
			if (k == 0)
				return -1;
			memcpy(enc, r->p, k);
			r->p += k;
		}
		if (out == NULL || full)
			continue;
		if (n + k >= size) {
			if (!(flags & STR_CUT))
				return -1;
			full = 1;
			continue;
		}
		memcpy(out + n, enc, k);
		n += k;
	}
	if (out != NULL)
		out[n] = '\0';
	if (len != NULL)
		*len = n;
	return 0;
}

/* jr_num reads a number. An integer without fraction or exponent sets
 * *isint, *neg and *mag (*over when it does not fit 64 bits). */
static int jr_num(struct jr *r, int *isint, int *neg, uint64_t *mag, int *over)
{
	uint64_t v = 0;
	int o = 0;

	*isint = 1;
	*neg = 0;
	if (r->p < r->end && *r->p == '-') {
		*neg = 1;
		r->p++;
	}
	if (r->p >= r->end)
		return -1;
	if (*r->p == '0') {
		r->p++;
	} else if (*r->p >= '1' && *r->p <= '9') {
		while (r->p < r->end && *r->p >= '0' && *r->p <= '9') {
			unsigned d = *r->p - '0';
			if (v > (UINT64_MAX - d) / 10)
				o = 1;
			else
				v = v * 10 + d;
			r->p++;
		}
	} else {
		return -1;
	}
	if (r->p < r->end && *r->p == '.') {
		*isint = 0;
		r->p++;
		if (r->p >= r->end || *r->p < '0' || *r->p > '9')
			return -1;
		while (r->p < r->end && *r->p >= '0' && *r->p <= '9')
			r->p++;
	}
	if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
		*isint = 0;
		r->p++;
		if (r->p < r->end && (*r->p == '+' || *r->p == '-'))
			r->p++;
		if (r->p >= r->end || *r->p < '0' || *r->p > '9')
			return -1;
		while (r->p < r->end && *r->p >= '0' && *r->p <= '9')
			r->p++;
	}
	*mag = v;
	*over = o;
	return 0;
}

static int jr_skip(struct jr *r);

/* jr_skip_members reads an object's or array's contents after its
 * opening bracket, calling nothing: for values this library does not
 * look into. *count gets the number of elements. */
static int jr_skip_container(struct jr *r, int object, int *count)
{
	char close = object ? '}' : ']';
	int n = 0;

	if (++r->depth > MAX_DEPTH)
		return -1;
	jr_ws(r);
	if (r->p < r->end && *r->p == close) {
		r->p++;
		r->depth--;
		if (count)
			*count = 0;
		return 0;
	}
	for (;;) {
		jr_ws(r);
		if (object) {
			if (jr_str(r, NULL, 0, NULL, 0) != 0)
				return -1;
			jr_ws(r);
			if (r->p >= r->end || *r->p != ':')
				return -1;
			r->p++;
		}
		if (jr_skip(r) != 0)
			return -1;
		n++;
		jr_ws(r);
		if (r->p >= r->end)
			return -1;
		if (*r->p == ',') {
			r->p++;
			continue;
		}
		if (*r->p != close)
			return -1;
		r->p++;
		break;
	}
	r->depth--;
	if (count)
		*count = n;
	return 0;
}

/* jr_skip reads and checks any one value, with whitespace before it. */
static int jr_skip(struct jr *r)
{
	int isint, neg, over;
	uint64_t mag;

	jr_ws(r);
	if (r->p >= r->end)
		return -1;
	switch (*r->p) {
	case '{':
		r->p++;
		return jr_skip_container(r, 1, NULL);
	case '[':
		r->p++;
		return jr_skip_container(r, 0, NULL);
	case '"':
		return jr_str(r, NULL, 0, NULL, 0);
	case 't':
		return jr_lit(r, "true");
	case 'f':
		return jr_lit(r, "false");
	case 'n':
		return jr_lit(r, "null");
	default:
		return jr_num(r, &isint, &neg, &mag, &over);
	}
}

/* jr_null consumes a null if one is next (whitespace skipped) and
 * reports whether it did: null counts as an absent member. */
static int jr_null(struct jr *r)
{
	jr_ws(r);
	if (r->p < r->end && *r->p == 'n')
		return jr_lit(r, "null") == 0 ? 1 : -1;
	return 0;
}

/* jr_int reads an integer in [min, max] (no fraction, no exponent).
 * uns: no minus sign allowed (an unsigned member). */
static int jr_int(struct jr *r, int64_t min, uint64_t max, int uns, int64_t *out, uint64_t *uout)
{
	int isint, neg, over;
	uint64_t mag;

	jr_ws(r);
	if (jr_num(r, &isint, &neg, &mag, &over) != 0 || !isint || over)
		return -1;
	if (neg) {
		int64_t val;

		if (uns) /* an unsigned member takes no sign, not even -0 */
			return -1;
		if (mag > (uint64_t)INT64_MAX + 1)
			return -1;
		val = mag == 0 ? 0 : -(int64_t)(mag - 1) - 1;
		if (val < min)
			return -1;
		if (out)
			*out = val;
		return 0;
	}
	if (mag > max)
		return -1;
	if (out)
		*out = (int64_t)mag;
	if (uout)
		*uout = mag;
	return 0;
}

static int jr_bool(struct jr *r, int *out)
{
	jr_ws(r);
	if (jr_lit(r, "true") == 0) {
		*out = 1;
		return 0;
	}
	if (jr_lit(r, "false") == 0) {
		*out = 0;
		return 0;
	}
	return -1;
}

/* jr_object iterates an object's members: call jr_object_begin, then
 * jr_object_next until it returns 0 (end) or -1 (invalid); on 1 the
 * member's name is in name (a name too long for it is an error: no member
 * this library knows is long) and r->p is at its value. */
static int jr_object_begin(struct jr *r)
{
	jr_ws(r);
	if (r->p >= r->end || *r->p != '{')
		return -1;
	if (++r->depth > MAX_DEPTH)
		return -1;
	r->p++;
	return 0;
}

static int jr_object_next(struct jr *r, int *first, char *name, size_t size)
{
	jr_ws(r);
	if (r->p >= r->end)
		return -1;
	if (*first) {
		*first = 0;
		if (*r->p == '}') {
			r->p++;
			r->depth--;
			return 0;
		}
	} else {
		if (*r->p == '}') {
			r->p++;
			r->depth--;
			return 0;
		}
		if (*r->p != ',')
			return -1;
		r->p++;
		jr_ws(r);
	}
	if (jr_str(r, name, size, NULL, STR_NONUL) != 0)
		return -1;
	jr_ws(r);
	if (r->p >= r->end || *r->p != ':')
		return -1;
	r->p++;
	return 1;
}

/* ---------------------------------------------------------------------
 * Replies
 */

struct reply {
	uint64_t id;
	int has_v, fds;
	int64_t v;
	int has_error, has_connect, has_bind, has_status, has_upgrade, ok;
	/* error */
	char code[SF_CODE_SIZE];
	char message[SF_MESSAGE_SIZE];
	int has_code, has_message, err_errno, unseen;
	/* connect */
	char local[SF_ADDR_SIZE], remote[SF_ADDR_SIZE];
	/* bind */
	sf_binding bind;
	int has_token;
	/* status */
	const char *status;
	size_t status_len;
	int nsockets;
};

/* member tells whether bit was seen in *seen already (a repeated
 * member, refused) and marks it. */
static int member(unsigned *seen, unsigned bit)
{
	if (*seen & bit)
		return -1;
	*seen |= bit;
	return 0;
}

static int parse_error(struct jr *r, struct reply *rep)
{
	char name[16];
	unsigned seen = 0;
	int first = 1, k, nul;
	int64_t v;

	if (jr_object_begin(r) != 0)
		return -1;
	while ((k = jr_object_next(r, &first, name, sizeof name)) == 1) {
		if ((nul = jr_null(r)) < 0)
			return -1;
		if (strcmp(name, "code") == 0) {
			if (member(&seen, 1) != 0)
				return -1;
			if (!nul && jr_str(r, rep->code, sizeof rep->code, NULL, STR_NONUL) != 0)
				return -1;
			rep->has_code = !nul && rep->code[0] != '\0';
		} else if (strcmp(name, "message") == 0) {
			if (member(&seen, 2) != 0)
				return -1;
			if (!nul && jr_str(r, rep->message, sizeof rep->message, NULL, STR_CUT) != 0)
				return -1;
			rep->has_message = !nul;
		} else if (strcmp(name, "errno") == 0) {
			if (member(&seen, 4) != 0)
				return -1;
			if (!nul && jr_int(r, 0, INT_MAX, 1, &v, NULL) != 0)
				return -1;
			rep->err_errno = nul ? 0 : (int)v;
		} else if (strcmp(name, "unseen") == 0) {
			if (member(&seen, 8) != 0)
				return -1;
			if (!nul && jr_bool(r, &rep->unseen) != 0)
				return -1;
		} else {
			return -1;
		}
	}
	return k;
}

static int parse_connect(struct jr *r, struct reply *rep)
{
	char name[16];
	unsigned seen = 0;
	int first = 1, k, nul;

	if (jr_object_begin(r) != 0)
		return -1;
	while ((k = jr_object_next(r, &first, name, sizeof name)) == 1) {
		if ((nul = jr_null(r)) < 0)
			return -1;
		if (strcmp(name, "local") == 0) {
			if (member(&seen, 1) != 0 || (!nul && jr_str(r, rep->local, sizeof rep->local, NULL, STR_NONUL) != 0))
				return -1;
		} else if (strcmp(name, "remote") == 0) {
			if (member(&seen, 2) != 0 || (!nul && jr_str(r, rep->remote, sizeof rep->remote, NULL, STR_NONUL) != 0))
				return -1;
		} else {
			return -1;
		}
	}
	return k;
}

/* is_secret reports whether s is 32 lowercase hexadecimal digits. */
static int is_secret(const char *s)
{
	int i;

	for (i = 0; i < 32; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return s[32] == '\0';
}

static int parse_bind(struct jr *r, struct reply *rep)
{
	char name[16];
	unsigned seen = 0;
	int first = 1, k, nul;
	sf_binding *b = &rep->bind;

	if (jr_object_begin(r) != 0)
		return -1;
	while ((k = jr_object_next(r, &first, name, sizeof name)) == 1) {
		if ((nul = jr_null(r)) < 0)
			return -1;
		if (strcmp(name, "token") == 0) {
			if (member(&seen, 1) != 0 || (!nul && jr_str(r, b->token, sizeof b->token, NULL, STR_NONUL) != 0))
				return -1;
			if (!nul && !is_secret(b->token))
				return -1;
			rep->has_token = !nul;
		} else if (strcmp(name, "local") == 0) {
			if (member(&seen, 2) != 0 || (!nul && jr_str(r, b->local, sizeof b->local, NULL, STR_NONUL) != 0))
				return -1;
		} else if (strcmp(name, "network") == 0) {
			if (member(&seen, 4) != 0 || (!nul && jr_str(r, b->network, sizeof b->network, NULL, STR_NONUL) != 0))
				return -1;
		} else if (strcmp(name, "expires_ms") == 0) {
			if (member(&seen, 8) != 0 || (!nul && jr_int(r, 0, INT64_MAX, 1, &b->expires_ms, NULL) != 0))
				return -1;
		} else if (strcmp(name, "shared") == 0) {
			if (member(&seen, 16) != 0 || (!nul && jr_bool(r, &b->shared) != 0))
				return -1;
		} else if (strcmp(name, "reclaim") == 0) {
			if (member(&seen, 32) != 0 || (!nul && jr_str(r, b->reclaim, sizeof b->reclaim, NULL, STR_NONUL) != 0))
				return -1;
			if (!nul && b->reclaim[0] != '\0' && !is_secret(b->reclaim))
				return -1;
		} else {
			return -1;
		}
	}
	if (k == 0 && (!rep->has_token || b->local[0] == '\0' ||
	               (strcmp(b->network, "tcp") != 0 && strcmp(b->network, "udp") != 0)))
		return -1;
	return k;
}

/* parse_status checks the status object and counts its sockets: each an
 * object, whose members this library does not look into. */
static int parse_status(struct jr *r, struct reply *rep)
{
	char name[16];
	unsigned seen = 0;
	int first = 1, k, nul, b, n;
	int64_t v;
	const unsigned char *start;

	jr_ws(r);
	start = r->p;
	if (jr_object_begin(r) != 0)
		return -1;
	while ((k = jr_object_next(r, &first, name, sizeof name)) == 1) {
		if ((nul = jr_null(r)) < 0)
			return -1;
		if (strcmp(name, "sockets") == 0) {
			if (member(&seen, 1) != 0)
				return -1;
			if (nul)
				continue;
			jr_ws(r);
			if (r->p >= r->end || *r->p != '[')
				return -1;
			r->p++;
			if (++r->depth > MAX_DEPTH)
				return -1;
			n = 0;
			jr_ws(r);
			if (r->p < r->end && *r->p == ']') {
				r->p++;
			} else {
				for (;;) {
					jr_ws(r);
					if (r->p >= r->end || *r->p != '{')
						return -1;
					r->p++;
					if (jr_skip_container(r, 1, NULL) != 0)
						return -1;
					n++;
					jr_ws(r);
					if (r->p < r->end && *r->p == ',') {
						r->p++;
						continue;
					}
					if (r->p < r->end && *r->p == ']') {
						r->p++;
						break;
					}
					return -1;
				}
			}
			r->depth--;
			rep->nsockets = n;
		} else if (strcmp(name, "truncated") == 0) {
			if (member(&seen, 2) != 0 || (!nul && jr_bool(r, &b) != 0))
				return -1;
		} else if (strcmp(name, "total") == 0) {
			if (member(&seen, 4) != 0 || (!nul && jr_int(r, 0, INT64_MAX, 1, &v, NULL) != 0))
				return -1;
		} else if (strcmp(name, "daemon") == 0) {
			if (member(&seen, 8) != 0)
				return -1;
			if (nul)
				continue;
			jr_ws(r);
			if (r->p >= r->end || *r->p != '{')
				return -1;
			r->p++;
			if (jr_skip_container(r, 1, NULL) != 0)
				return -1;
		} else {
			return -1;
		}
	}
	rep->status = (const char *)start;
	rep->status_len = (size_t)(r->p - start);
	return k;
}

/* parse_reply reads one reply packet strictly: one JSON object of the
 * members of protocol.md section 5, each once and of its type, with v 1
 * and fds 0 to 16. Returns 0, or -1 for a reply that breaks the
 * protocol. */
static int parse_reply(const char *buf, size_t n, struct reply *rep)
{
	struct jr r = { (const unsigned char *)buf, (const unsigned char *)buf + n, 0 };
	char name[16];
	unsigned seen = 0;
	int first = 1, k, nul;
	int64_t v;

	memset(rep, 0, sizeof *rep);
	if (jr_object_begin(&r) != 0)
		return -1;
	while ((k = jr_object_next(&r, &first, name, sizeof name)) == 1) {
		if ((nul = jr_null(&r)) < 0)
			return -1;
		if (strcmp(name, "v") == 0) {
			if (member(&seen, 1) != 0 || (!nul && jr_int(&r, INT64_MIN, INT64_MAX, 0, &rep->v, NULL) != 0))
				return -1;
			rep->has_v = !nul;
		} else if (strcmp(name, "id") == 0) {
			if (member(&seen, 2) != 0 || (!nul && jr_int(&r, 0, UINT64_MAX, 1, NULL, &rep->id) != 0))
				return -1;
		} else if (strcmp(name, "fds") == 0) {
			if (member(&seen, 4) != 0 || (!nul && jr_int(&r, 0, SF_MAX_FDS, 1, &v, NULL) != 0))
				return -1;
			rep->fds = nul ? 0 : (int)v;
		} else if (strcmp(name, "error") == 0) {
			if (member(&seen, 8) != 0 || (!nul && parse_error(&r, rep) != 0))
				return -1;
			rep->has_error = !nul;
		} else if (strcmp(name, "connect") == 0) {
			if (member(&seen, 16) != 0 || (!nul && parse_connect(&r, rep) != 0))
				return -1;
			rep->has_connect = !nul;
		} else if (strcmp(name, "bind") == 0) {
			if (member(&seen, 32) != 0 || (!nul && parse_bind(&r, rep) != 0))
				return -1;
			rep->has_bind = !nul;
		} else if (strcmp(name, "status") == 0) {
			if (member(&seen, 64) != 0 || (!nul && parse_status(&r, rep) != 0))
				return -1;
			rep->has_status = !nul;
		} else if (strcmp(name, "upgrade") == 0) {
			if (member(&seen, 128) != 0)
				return -1;
			if (!nul) {
				jr_ws(&r);
				if (r.p >= r.end || *r.p != '{' || jr_skip(&r) != 0)
					return -1;
				rep->has_upgrade = 1;
			}
		} else if (strcmp(name, "ok") == 0) {
			if (member(&seen, 256) != 0 || (!nul && jr_bool(&r, &rep->ok) != 0))
				return -1;
		} else {
			return -1;
		}
	}
	if (k != 0)
		return -1;
	jr_ws(&r);
	if (r.p != r.end)
		return -1;
	if (!rep->has_v || rep->v != 1)
		return -1;
	/* Either an error or one result, never both (section 5). */
	if (rep->has_error + rep->has_connect + rep->has_bind + rep->has_status +
	        rep->has_upgrade + (rep->ok ? 1 : 0) != 1)
		return -1;
	if (rep->has_error && (!rep->has_code || !rep->has_message))
		return -1;
	return 0;
}

/* ---------------------------------------------------------------------
 * Round trip
 */

/* What a request expects of its reply. */
enum want { WANT_OK, WANT_CONNECT, WANT_BIND, WANT_BIND_TOKEN, WANT_STATUS };

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* recv_packet receives one reply packet into c->buf and its descriptors
 * into fds (*nfds of them; room for RECV_FDS, more are closed and counted
 * in *nfds too), by the rules of section 9. Returns the length, or -1
 * with the failure recorded and every descriptor closed; the connection
 * is dropped where it can no longer be trusted. */
static ssize_t recv_packet(sf_client *c, int *fds, int *nfds, long long deadline)
{
	union {
		char buf[CMSG_SPACE(RECV_FDS * sizeof(int))];
		struct cmsghdr align;
	} control;
	struct iovec iov;
	struct msghdr msg;
	struct cmsghdr *cm;
	struct pollfd pfd;
	ssize_t n;
	int i, k, err, other = 0;
	long long left;

	*nfds = 0;
	for (;;) {
		left = deadline - now_ms();
		if (left <= 0) {
			drop_conn(c);
			return fail(c, SF_UNAVAILABLE, ETIMEDOUT, "no reply from the daemon within %d ms", c->reply_timeout_ms);
		}
		pfd.fd = c->fd;
		pfd.events = POLLIN;
		pfd.revents = 0;
		k = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			err = errno;
			drop_conn(c);
			return fail(c, SF_UNAVAILABLE, err, "poll: %s", strerror(err));
		}
		if (k == 0)
			continue;
		memset(&msg, 0, sizeof msg);
		iov.iov_base = c->buf;
		iov.iov_len = SF_MAX_MESSAGE;
		msg.msg_iov = &iov;
		msg.msg_iovlen = 1;
		msg.msg_control = control.buf;
		msg.msg_controllen = sizeof control.buf;
		n = recvmsg(c->fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
			continue;
		break;
	}
	if (n < 0) {
		err = errno;
		drop_conn(c);
		return fail(c, SF_UNAVAILABLE, err, "receiving the daemon's reply: %s", strerror(err));
	}
	/* Every descriptor that arrived, before anything else (rule 4). */
	for (cm = CMSG_FIRSTHDR(&msg); cm != NULL; cm = CMSG_NXTHDR(&msg, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) {
			other = 1;
			continue;
		}
		if (cm->cmsg_len < CMSG_LEN(0))
			continue;
		k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		for (i = 0; i < k; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof fd);
			if (*nfds < RECV_FDS)
				fds[*nfds] = fd;
			else
				close(fd);
			(*nfds)++;
		}
	}
	if (n == 0 && msg.msg_controllen == 0) {
		drop_conn(c);
		return fail(c, SF_UNAVAILABLE, ECONNRESET, "the daemon closed the connection");
	}
	if (msg.msg_flags & MSG_TRUNC) {
		close_fds(fds, *nfds < RECV_FDS ? *nfds : RECV_FDS);
		*nfds = 0;
		drop_conn(c); /* the stream of replies cannot be trusted */
		return fail(c, SF_PROTOCOL, EPROTO, "reply larger than %d bytes", SF_MAX_MESSAGE);
	}
	if (msg.msg_flags & MSG_CTRUNC) {
		close_fds(fds, *nfds < RECV_FDS ? *nfds : RECV_FDS);
		*nfds = 0;
		return fail(c, SF_PROTOCOL, EPROTO, "the reply's descriptors were truncated by the kernel");
	}
	if (other) {
		close_fds(fds, *nfds < RECV_FDS ? *nfds : RECV_FDS);
		*nfds = 0;
		return fail(c, SF_PROTOCOL, EPROTO, "the reply carries control data other than SCM_RIGHTS");
	}
	return n;
}

/* send_request sends the request in w; on a connection found broken it
 * connects again once and resends (the daemon has not seen it then). */
static int send_request(sf_client *c, const char *p, size_t len)
{
	int fresh = 0, err;
	ssize_t n;

	for (;;) {
		if (c->fd < 0) {
			if (dial(c) != 0)
				return -1;
			fresh = 1;
		}
		do {
			n = send(c->fd, p, len, MSG_NOSIGNAL);
		} while (n < 0 && errno == EINTR);
		if (n == (ssize_t)len)
			return 0;
		err = n < 0 ? errno : EMSGSIZE;
		drop_conn(c);
		if (!fresh && (err == EPIPE || err == ECONNRESET || err == ENOTCONN))
			continue;
		return fail(c, SF_UNAVAILABLE, err, "sending the request to %s: %s", c->path, strerror(err));
	}
}

/* round_trip sends the request (req, len bytes; not in c->buf, which
 * receives the reply) with id and reads
 * its reply, checking it against what want expects. On success the
 * reply is in *rep and the descriptor, if the reply carries one, in
 * *fd (else -1). Returns 0, or -1 with the failure recorded and no
 * descriptor left open. */
static int round_trip(sf_client *c, const char *req, size_t len, uint64_t id, enum want want, int wait_ms,
                      struct reply *rep, int *fd)
{
	int fds[RECV_FDS], nfds, kept, expect;
	ssize_t n;
	long long deadline;
	sf_code code;

	*fd = -1;
	if (send_request(c, req, len) != 0)
		return -1;
	deadline = now_ms() + (wait_ms > c->reply_timeout_ms ? wait_ms : c->reply_timeout_ms);
	n = recv_packet(c, fds, &nfds, deadline);
	if (n < 0)
		return -1;
	kept = nfds < RECV_FDS ? nfds : RECV_FDS;
	if (parse_reply(c->buf, (size_t)n, rep) != 0) {
		close_fds(fds, kept);
		drop_conn(c);
		return fail(c, SF_PROTOCOL, EPROTO, "undecodable reply (%zd bytes)", n);
	}
	if (rep->fds != nfds) {
		close_fds(fds, kept);
		return fail(c, SF_PROTOCOL, EPROTO, "reply announced %d descriptors, %d arrived", rep->fds, nfds);
	}
	if (rep->id != id && !(rep->id == 0 && rep->has_error)) {
		close_fds(fds, kept);
		drop_conn(c);
		return fail(c, SF_PROTOCOL, EPROTO, "reply to request %llu, want %llu", (unsigned long long)rep->id, (unsigned long long)id);
	}
	if (rep->has_error) {
		/* An error carries no descriptor; close any (as the Go client). */
		close_fds(fds, kept);
		code = code_from_name(rep->code);
		c->code = code;
		c->daemon_errno = rep->err_errno;
		snprintf(c->code_name, sizeof c->code_name, "%s", rep->code);
		memcpy(c->message, rep->message, sizeof c->message);
		errno = rep->err_errno != 0 ? rep->err_errno : code_errno(code);
		return -1;
	}
	expect = want == WANT_CONNECT || want == WANT_BIND;
	if ((want == WANT_OK && !rep->ok) || (want == WANT_CONNECT && !rep->has_connect) ||
	    ((want == WANT_BIND || want == WANT_BIND_TOKEN) && !rep->has_bind) ||
	    (want == WANT_STATUS && !rep->has_status) || nfds != expect) {
		close_fds(fds, kept);
		return fail(c, SF_PROTOCOL, EPROTO, "the reply does not answer the request: %s with %d descriptors",
		            rep->ok ? "ok" : rep->has_connect ? "connect" : rep->has_bind ? "bind" : rep->has_status ? "status" : "upgrade", nfds);
	}
	if (expect)
		*fd = fds[0];
	succeed(c);
	return 0;
}

/* begin starts a request: checks the client and starts the writer with
 * {"v":1,"id":ID,"op":"OP", in buf (size bytes) or, when buf is NULL,
 * in the request half of c->buf. */
static int begin_in(sf_client *c, struct jw *w, const char *op, uint64_t *id, char *buf, size_t size)
{
	if (!c->open || c->buf == NULL)
		return fail(c, SF_LOCAL, EBADF, "the client is not open");
	w->p = buf != NULL ? buf : c->buf + SF_MAX_MESSAGE;
	w->len = 0;
	w->cap = buf != NULL ? size : SF_MAX_MESSAGE;
	w->over = 0;
	*id = ++c->next_id;
	if (*id == 0)
		*id = ++c->next_id;
	jw_lit(w, "{\"v\":1,\"id\":");
	jw_u64(w, *id);
	jw_lit(w, ",\"op\":");
	jw_str(w, op);
	return 0;
}

static int begin(sf_client *c, struct jw *w, const char *op, uint64_t *id)
{
	return begin_in(c, w, op, id, NULL, 0);
}

static int finish(sf_client *c, struct jw *w)
{
	jw_lit(w, "}");
	if (w->over)
		return fail(c, SF_LOCAL, EMSGSIZE, "the request is larger than %d bytes", SF_MAX_MESSAGE);
	return 0;
}

static int bad_arg(sf_client *c, const char *what)
{
	return fail(c, SF_LOCAL, EINVAL, "%s", what);
}

static int do_hello(sf_client *c, const char *app)
{
	char req[1024]; /* hello runs inside dial, under another request */
	struct jw w;
	struct reply rep;
	uint64_t id;
	int fd;

	if (begin_in(c, &w, "hello", &id, req, sizeof req) != 0)
		return -1;
	jw_lit(&w, ",\"hello\":{\"app\":");
	jw_str(&w, app);
	jw_lit(&w, "}");
	if (finish(c, &w) != 0)
		return -1;
	return round_trip(c, w.p, w.len, id, WANT_OK, 0, &rep, &fd);
}

int sf_hello(sf_client *c, const char *app)
{
	if (app == NULL)
		return bad_arg(c, "sf_hello: app is NULL");
	if (strlen(app) >= sizeof c->app)
		return fail(c, SF_LOCAL, EINVAL, "app name longer than %zu bytes", sizeof c->app - 1);
	if (do_hello(c, app) != 0)
		return -1;
	memcpy(c->app, app, strlen(app) + 1);
	return 0;
}

int sf_connect_netns(sf_client *c, const char *network, const char *address,
                     int timeout_ms, const char *netns)
{
	struct jw w;
	struct reply rep;
	uint64_t id;
	int fd;

	if (network == NULL || address == NULL || timeout_ms < 0)
		return bad_arg(c, "sf_connect: network or address NULL, or a negative timeout");
	if (begin(c, &w, "connect", &id) != 0)
		return -1;
	jw_lit(&w, ",\"connect\":{\"network\":");
	jw_str(&w, network);
	jw_lit(&w, ",\"address\":");
	jw_str(&w, address);
	if (timeout_ms > 0) {
		jw_lit(&w, ",\"timeout_ms\":");
		jw_u64(&w, (uint64_t)timeout_ms);
	}
	if (netns != NULL && netns[0] != '\0') {
		jw_lit(&w, ",\"netns\":");
		jw_str(&w, netns);
	}
	jw_lit(&w, "}");
	if (finish(c, &w) != 0)
		return -1;
	if (round_trip(c, w.p, w.len, id, WANT_CONNECT, timeout_ms > 0 ? timeout_ms + 5000 : 0, &rep, &fd) != 0)
		return -1;
	return fd;
}

int sf_connect(sf_client *c, const char *network, const char *address, int timeout_ms)
{
	return sf_connect_netns(c, network, address, timeout_ms, NULL);
}

static int bind_request(sf_client *c, const char *network, const char *address,
                        sf_share share, const char *name, int token_only, sf_binding *out)
{
	static const char *const shares[] = { NULL, "none", "same-name", "any" };
	struct jw w;
	struct reply rep;
	uint64_t id;
	int fd;

	if (network == NULL || address == NULL)
		return bad_arg(c, "sf_bind: network or address NULL");
	if ((int)share < 0 || share > SF_SHARE_ANY)
		return bad_arg(c, "sf_bind: unknown share mode");
	if (begin(c, &w, "bind", &id) != 0)
		return -1;
	jw_lit(&w, ",\"bind\":{\"network\":");
	jw_str(&w, network);
	jw_lit(&w, ",\"address\":");
	jw_str(&w, address);
	if (shares[share] != NULL) {
		jw_lit(&w, ",\"share\":");
		jw_str(&w, shares[share]);
	}
	if (name != NULL && name[0] != '\0') {
		jw_lit(&w, ",\"name\":");
		jw_str(&w, name);
	}
	if (token_only)
		jw_lit(&w, ",\"token_only\":true");
	jw_lit(&w, "}");
	if (finish(c, &w) != 0)
		return -1;
	if (round_trip(c, w.p, w.len, id, token_only ? WANT_BIND_TOKEN : WANT_BIND, 0, &rep, &fd) != 0)
		return -1;
	if (out != NULL)
		*out = rep.bind;
	return token_only ? 0 : fd;
}

int sf_bind(sf_client *c, const char *network, const char *address,
            sf_share share, const char *name, sf_binding *out)
{
	return bind_request(c, network, address, share, name, 0, out);
}

int sf_bind_token(sf_client *c, const char *network, const char *address,
                  sf_share share, const char *name, char *token,
                  size_t token_size, sf_binding *out)
{
	sf_binding b;

	if (token == NULL || token_size < SF_TOKEN_SIZE)
		return fail(c, SF_LOCAL, ERANGE, "sf_bind_token: the token buffer needs %d bytes", SF_TOKEN_SIZE);
	if (bind_request(c, network, address, share, name, 1, &b) != 0)
		return -1;
	memcpy(token, b.token, SF_TOKEN_SIZE);
	if (out != NULL)
		*out = b;
	return 0;
}

/* token_request sends op (pickup or release) for token. */
static int token_request(sf_client *c, const char *op, const char *token,
                         enum want want, struct reply *rep, int *fd)
{
	struct jw w;
	uint64_t id;

	if (token == NULL)
		return bad_arg(c, "token is NULL");
	if (begin(c, &w, op, &id) != 0)
		return -1;
	jw_lit(&w, ",\"token\":{\"token\":");
	jw_str(&w, token);
	jw_lit(&w, "}");
	if (finish(c, &w) != 0)
		return -1;
	return round_trip(c, w.p, w.len, id, want, 0, rep, fd);
}

int sf_pickup(sf_client *c, const char *token, sf_binding *out)
{
	struct reply rep;
	int fd;

	if (token_request(c, "pickup", token, WANT_BIND, &rep, &fd) != 0)
		return -1;
	if (out != NULL)
		*out = rep.bind;
	return fd;
}

int sf_release(sf_client *c, const char *token)
{
	struct reply rep;
	int fd;

	return token_request(c, "release", token, WANT_OK, &rep, &fd);
}

int sf_status(sf_client *c, char *buf, size_t size)
{
	struct jw w;
	struct reply rep;
	uint64_t id;
	int fd;

	if (begin(c, &w, "status", &id) != 0)
		return -1;
	if (finish(c, &w) != 0)
		return -1;
	if (round_trip(c, w.p, w.len, id, WANT_STATUS, 0, &rep, &fd) != 0)
		return -1;
	if (buf != NULL) {
		if (rep.status_len >= size)
			return fail(c, SF_LOCAL, ERANGE, "the status (%zu bytes) does not fit in %zu", rep.status_len, size);
		memcpy(buf, rep.status, rep.status_len);
		buf[rep.status_len] = '\0';
	}
	return rep.nsockets;
}
