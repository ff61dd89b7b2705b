/*
 * test_parse.c: a deterministic property test of the reply reader. It
 * includes sockfactory.c to reach its internals. Replies come from a
 * seeded PRNG: valid ones written in every way JSON allows (member order,
 * whitespace, escapes) must be read with the same values; ones broken in
 * a known way must be refused; randomly mutated ones must never crash the
 * reader nor be accepted unless they meet the protocol's rules. A second
 * part sends replies with random descriptors over a socketpair through the
 * public calls and checks that no descriptor leaks.
 *
 * Usage: test_parse [ITERATIONS [SEED]]
 */
#include "../sockfactory.c"
#include "testutil.h"

#include <signal.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void)
{
	uint64_t x = rng_state;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	rng_state = x;
	return x * 0x2545f4914f6cdd1dULL;
}

static unsigned rn(unsigned n) { return (unsigned)(rnd() % n); }

/* A reply as members, each a name and a value's JSON text. */
struct mem {
	const char *name;
	char value[256];
	int is_string; /* value is a string's contents, to be written quoted */
};

struct tmpl {
	const char *what;
	enum want want;
	int nfds; /* descriptors the reply carries */
	struct mem m[6];
	int n;
	sf_code code; /* the outcome when sent as the reply to its request */
};

/* The templates; %ID% members are filled in by make. */
static struct tmpl templates[] = {
	{ "connect", WANT_CONNECT, 1, { { "v", "1", 0 }, { "id", "", 0 }, { "fds", "1", 0 }, { "connect", "{\"local\":\"127.0.0.1:45114\",\"remote\":\"127.0.0.1:8080\"}", 0 } }, 4, SF_OK },
	{ "bind", WANT_BIND, 1, { { "v", "1", 0 }, { "id", "", 0 }, { "fds", "1", 0 }, { "bind", "{\"token\":\"26af6c2467817a5b36384a4486525a5a\",\"local\":\"127.0.0.1:5353\",\"network\":\"udp\",\"shared\":true,\"reclaim\":\"9b1e0c6d2f4a8b7c3e5d1f0a2b4c6d8e\"}", 0 } }, 4, SF_OK },
	{ "bindtoken", WANT_BIND_TOKEN, 0, { { "v", "1", 0 }, { "id", "", 0 }, { "bind", "{\"token\":\"c4da743ad442d8acfb2b79f24206868a\",\"local\":\"[::1]:5353\",\"network\":\"tcp\",\"expires_ms\":29999}", 0 } }, 3, SF_OK },
	{ "error", WANT_CONNECT, 0, { { "v", "1", 0 }, { "id", "", 0 }, { "error", "{\"code\":\"connect_failed\",\"message\":\"connect to 127.0.0.1:1: connection \\u003crefused\\u003e \\ud83d\\ude00\",\"errno\":111}", 0 } }, 3, SF_CONNECT_FAILED },
	{ "ok", WANT_OK, 0, { { "v", "1", 0 }, { "id", "", 0 }, { "ok", "true", 0 } }, 3, SF_OK },
	{ "status", WANT_STATUS, 0, { { "v", "1", 0 }, { "id", "", 0 }, { "status", "{\"sockets\":[{\"network\":\"tcp\",\"local\":\"127.0.0.1:5353\",\"refs\":1,\"age_ms\":0,\"holders\":[{\"share\":\"none\",\"uid\":0,\"pid\":2134,\"pending\":true}]}],\"truncated\":true,\"total\":3}", 0 } }, 3, SF_OK },
};
#define NTEMPLATES (sizeof templates / sizeof templates[0])

struct out {
	char *p;
	size_t n, cap;
};

static void out_c(struct out *o, char ch)
{
	if (o->n < o->cap)
		o->p[o->n++] = ch;
}

static void out_s(struct out *o, const char *s)
{
	while (*s)
		out_c(o, *s++);
}

static void ws(struct out *o, int pretty)
{
	static const char w[] = " \t\n\r";
	int k;

	if (!pretty)
		return;
	for (k = (int)rn(3); k > 0; k--)
		out_c(o, w[rn(4)]);
}

/* value_text writes a value, escaping a random ASCII character of its
 * strings as \u00XX now and then (a string's meaning is unchanged). */
static void value_text(struct out *o, const char *v, int pretty)
{
	int in_str = 0, k;
	char esc[8];

	while (*v) {
		unsigned char ch = (unsigned char)*v;
		if (!in_str && pretty && (ch == ',' || ch == ':' || ch == '{' || ch == '[')) {
			out_c(o, (char)*v++);
			ws(o, pretty);
			continue;
		}
		if (in_str && ch == '\\') { /* copy an escape whole */
			k = v[1] == 'u' ? 6 : 2;
			while (k-- > 0 && *v)
				out_c(o, *v++);
			continue;
		}
		if (ch == '"')
			in_str = !in_str;
		else if (in_str && pretty && ch >= 0x20 && ch < 0x7f && rn(8) == 0) {
			snprintf(esc, sizeof esc, "\\u%04x", ch);
			out_s(o, esc);
			v++;
			continue;
		}
		out_c(o, (char)*v++);
	}
}

/* make writes template t with id: members in a random order and random
 * whitespace when pretty. */
static size_t make(const struct tmpl *t, uint64_t id, int pretty, char *buf, size_t cap)
{
	struct out o = { buf, 0, cap };
	int order[6], i, j, k;
	char num[24];

	for (i = 0; i < t->n; i++)
		order[i] = i;
	if (pretty)
		for (i = t->n - 1; i > 0; i--) {
			j = (int)rn((unsigned)i + 1);
			k = order[i];
			order[i] = order[j];
			order[j] = k;
		}
	ws(&o, pretty);
	out_c(&o, '{');
	for (i = 0; i < t->n; i++) {
		const struct mem *m = &t->m[order[i]];
		if (i > 0)
			out_c(&o, ',');
		ws(&o, pretty);
		out_c(&o, '"');
		out_s(&o, m->name);
		out_c(&o, '"');
		ws(&o, pretty);
		out_c(&o, ':');
		ws(&o, pretty);
		if (strcmp(m->name, "id") == 0) {
			snprintf(num, sizeof num, "%llu", (unsigned long long)id);
			out_s(&o, num);
		} else {
			value_text(&o, m->value, pretty);
		}
		ws(&o, pretty);
	}
	out_c(&o, '}');
	ws(&o, pretty);
	return o.n;
}

/* The ways of breaking a reply that must make it refused. */
static const char *const bad_members[] = {
	",\"zz\":1", ",\"v\":1", ",\"id\":2", ",\"error\":{\"code\":\"denied\",\"message\":\"x\"}",
	",\"ok\":true", ",\"connect\":{}", ",\"ID\":1", ",\"\":0",
};
static const char *const bad_v[] = { "0", "2", "\"1\"", "1.0", "1e0", "true", "null", "-1", "01", "+1", "[1]" };
static const char *const bad_id[] = { "-1", "18446744073709551616", "1.5", "1e3", "\"1\"", "-0", "0x1", "true" };
static const char *const bad_fds[] = { "17", "-1", "1.0", "\"1\"", "true", "99999999999999999999" };

/* breakit writes a broken variant of t into buf. */
static size_t breakit(const struct tmpl *t, uint64_t id, char *buf, size_t cap)
{
	struct tmpl u = *t;
	size_t n;
	int i;

	switch (rn(9)) {
	case 0: /* a strict prefix: never a whole object */
		n = make(t, id, 0, buf, cap);
		return rn((unsigned)n);
	case 1: /* something after the object */
		n = make(t, id, rn(2), buf, cap);
		buf[n++] = "x},1\"{["[rn(7)];
		return n;
	case 2: /* an unknown, repeated or second result member */
		n = make(t, id, 0, buf, cap);
		n--; /* the closing brace */
		{
			const char *b = bad_members[rn(sizeof bad_members / sizeof bad_members[0])];
			memcpy(buf + n, b, strlen(b));
			n += strlen(b);
		}
		buf[n++] = '}';
		return n;
	case 3:
		snprintf(u.m[0].value, sizeof u.m[0].value, "%s", bad_v[rn(sizeof bad_v / sizeof bad_v[0])]);
		return make(&u, id, rn(2), buf, cap);
	case 4: /* id: replace the member's text after writing */
		n = make(t, id, 0, buf, cap);
		{
			char tmp[1024], num[24];
			char *at;
			snprintf(num, sizeof num, "\"id\":%llu", (unsigned long long)id);
			at = strstr(buf, num);
			if (at == NULL || n >= sizeof tmp)
				return 0;
			memcpy(tmp, buf, n);
			tmp[n] = '\0';
			n = (size_t)snprintf(buf, cap, "%.*s\"id\":%s%s", (int)(at - buf), tmp,
			                     bad_id[rn(sizeof bad_id / sizeof bad_id[0])], tmp + (at - buf) + strlen(num));
			return n;
		}
	case 5:
		if (t->nfds == 0) {
			u.m[u.n].name = "fds";
			u.n++;
			i = u.n - 1;
		} else {
			i = 2;
		}
		snprintf(u.m[i].value, sizeof u.m[i].value, "%s", bad_fds[rn(sizeof bad_fds / sizeof bad_fds[0])]);
		return make(&u, id, rn(2), buf, cap);
	case 6: /* a raw control character, invalid UTF-8 or a bad escape in a string */
	{
		static const char *const junk[] = { "\x01", "\x1f", "\xff", "\xc0\x80", "\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\\x", "\\u1g", "\\u", "\\U0041", "\xe2\x82" };
		const char *j = junk[rn(sizeof junk / sizeof junk[0])];
		char *q;
		n = make(t, id, 0, buf, cap);
		/* inside the first string value after a colon */
		q = memchr(buf, ':', n);
		while (q != NULL && q[1] != '"' && (q = memchr(q + 1, ':', n - (size_t)(q + 1 - buf))) != NULL)
			;
		if (q == NULL || (t->what[0] == 'o'))
			q = buf + 1; /* in the first member's name */
		else
			q += 2;
		memmove(q + strlen(j), q, n - (size_t)(q - buf));
		memcpy(q, j, strlen(j));
		return n + strlen(j);
	}
	case 7: /* an error without its code, or a result of the wrong type */
		if (strcmp(t->what, "error") == 0)
			snprintf(u.m[2].value, sizeof u.m[2].value, "%s", rn(2) ? "{\"message\":\"x\"}" : "{\"code\":\"\",\"message\":\"x\"}");
		else
			snprintf(u.m[u.n - 1].value, sizeof u.m[0].value, "%s", rn(2) ? "[]" : "\"x\"");
		return make(&u, id, rn(2), buf, cap);
	default: /* no v, or nothing but v and id */
		if (rn(2)) {
			u.m[0] = u.m[u.n - 1];
			u.n--;
		} else {
			u.n = 2;
		}
		return make(&u, id, rn(2), buf, cap);
	}
}

/* same checks two readings of one template agree. */
static int same(const struct reply *a, const struct reply *b)
{
	return a->id == b->id && a->fds == b->fds && a->has_error == b->has_error &&
	       strcmp(a->code, b->code) == 0 && strcmp(a->message, b->message) == 0 &&
	       a->err_errno == b->err_errno && strcmp(a->local, b->local) == 0 &&
	       strcmp(a->remote, b->remote) == 0 && memcmp(&a->bind, &b->bind, sizeof a->bind) == 0 &&
	       a->nsockets == b->nsockets && a->ok == b->ok && a->has_status == b->has_status;
}

/* sane checks what an accepted reply must be. */
static int sane(const struct reply *r)
{
	return r->v == 1 && r->fds >= 0 && r->fds <= SF_MAX_FDS &&
	       r->has_error + r->has_connect + r->has_bind + r->has_status + r->has_upgrade + (r->ok != 0) == 1 &&
	       (!r->has_error || r->code[0] != '\0') && (!r->has_bind || is_secret(r->bind.token));
}

static void test_parser(int iters)
{
	static char buf[8192];
	struct reply want, got;
	size_t n, i;
	int it, accepted_mut = 0;

	for (i = 0; i < NTEMPLATES; i++) {
		n = make(&templates[i], 7, 0, buf, sizeof buf);
		CHECK(parse_reply(buf, n, &want) == 0, "template %s refused: %.*s", templates[i].what, (int)n, buf);
	}
	CHECK(strcmp(want.code, "") == 0 && want.nsockets == 1, "status sockets %d", want.nsockets);
	n = make(&templates[3], 7, 0, buf, sizeof buf);
	parse_reply(buf, n, &want);
	CHECK(strcmp(want.message, "connect to 127.0.0.1:1: connection <refused> \xf0\x9f\x98\x80") == 0, "message %s", want.message);

	for (it = 0; it < iters; it++) {
		const struct tmpl *t = &templates[rn(NTEMPLATES)];
		uint64_t id = rn(4) ? rnd() % 100000 : rnd();

		/* valid, written another way: the same values */
		n = make(t, id, 0, buf, sizeof buf);
		CHECK(parse_reply(buf, n, &want) == 0, "compact %s refused", t->what);
		n = make(t, id, 1, buf, sizeof buf);
		if (parse_reply(buf, n, &got) != 0 || !same(&want, &got))
			CHECK(0, "valid %s read otherwise: %.*s", t->what, (int)n, buf);

		/* broken in a known way: refused */
		n = breakit(t, id, buf, sizeof buf);
		if (parse_reply(buf, n, &got) == 0)
			CHECK(0, "broken %s accepted: %.*s", t->what, (int)n, buf);

		/* mutated at random: no crash; accepted only if sane */
		n = make(t, id, rn(2), buf, sizeof buf);
		for (i = rn(4) + 1; i > 0 && n > 0; i--) {
			size_t at = rn((unsigned)n);
			switch (rn(4)) {
			case 0: buf[at] = (char)rnd(); break;
			case 1: buf[at] ^= (char)(1u << rn(8)); break;
			case 2: memmove(buf + at, buf + at + 1, n - at - 1); n--; break;
			default:
				if (n + 1 < sizeof buf) {
					memmove(buf + at + 1, buf + at, n - at);
					buf[at] = "{}[]\",:\\0-1.e\"u"[rn(15)];
					n++;
				}
			}
		}
		if (parse_reply(buf, n, &got) == 0) {
			accepted_mut++;
			if (!sane(&got))
				CHECK(0, "insane reply accepted: %.*s", (int)n, buf);
		}
	}
	fprintf(stderr, "test_parse: %d iterations, %d mutated replies still valid\n", iters, accepted_mut);

	/* Deep nesting is bounded, not a stack overflow. */
	n = (size_t)snprintf(buf, sizeof buf, "{\"v\":1,\"id\":1,\"status\":{\"sockets\":[{\"a\":");
	while (n < sizeof buf - 2)
		buf[n++] = '[';
	CHECK(parse_reply(buf, n, &got) != 0, "deep nesting accepted");
	CHECK(parse_reply("", 0, &got) != 0, "empty accepted");
	CHECK(parse_reply("{}", 2, &got) != 0, "{} accepted");
	CHECK(parse_reply("{\"v\":1,\"id\":1,\"ok\":true}\0", 25, &got) != 0, "a NUL after the object accepted");
	CHECK(parse_reply("\xef\xbb\xbf{\"v\":1,\"id\":1,\"ok\":true}", 27, &got) != 0, "a BOM accepted");
	CHECK(parse_reply("{\"v\":1,\"id\":1,\"ok\":true,\"fds\":null}", 35, &got) == 0, "null fds refused");
	CHECK(parse_reply("{\"v\":1,\"id\":18446744073709551615,\"ok\":true}", 43, &got) == 0 && got.id == UINT64_MAX, "the largest id");
}

static int peer = -1;

static void new_pair(sf_client *c)
{
	int sv[2];

	if (peer >= 0)
		close(peer);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
		perror("socketpair");
		exit(2);
	}
	c->fd = sv[0];
	peer = sv[1];
}

static void queue(const char *buf, size_t n, int nfds)
{
	union {
		char b[CMSG_SPACE(20 * sizeof(int))];
		struct cmsghdr align;
	} control;
	struct iovec iov = { (void *)buf, n };
	struct msghdr msg;
	struct cmsghdr *cm;
	int fds[20], i;

	memset(&msg, 0, sizeof msg);
	memset(&control, 0, sizeof control);
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	for (i = 0; i < nfds; i++)
		fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (nfds > 0) {
		msg.msg_control = control.b;
		msg.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		cm = CMSG_FIRSTHDR(&msg);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
	}
	if (sendmsg(peer, &msg, 0) < 0)
		perror("sendmsg");
	for (i = 0; i < nfds; i++)
		close(fds[i]);
}

/* Replies, valid or broken, with 0, 1, 2 or 17 descriptors, through the
 * public calls: the outcome is as the rules say and nothing leaks. */
static void test_fds(int iters)
{
	static char buf[8192], drain[SF_MAX_MESSAGE];
	static const int counts[] = { 0, 1, 1, 2, 17 };
	sf_client c;
	int it, base, fd, ret, valid, nfds;
	size_t n;
	sf_code want;
	char token[SF_TOKEN_SIZE];

	memset(&c, 0, sizeof c);
	c.fd = -1;
	c.open = 1;
	c.reply_timeout_ms = 5000;
	c.buf = malloc(2 * SF_MAX_MESSAGE);
	base = fd_count();
	for (it = 0; it < iters; it++) {
		const struct tmpl *t = &templates[rn(NTEMPLATES)];
		struct tmpl u = *t;
		uint64_t id = c.next_id + 1;

		if (c.fd < 0)
			new_pair(&c);
		while (recv(peer, drain, sizeof drain, MSG_DONTWAIT) > 0)
			;
		nfds = counts[rn(5)];
		valid = rn(3) != 0;
		if (valid && nfds != t->nfds && rn(2)) {
			/* announce what is sent: right count, wrong for the op */
			if (t->nfds == 0) {
				u.m[u.n].name = "fds";
				u.n++;
			}
			snprintf(u.m[t->nfds == 0 ? u.n - 1 : 2].value, sizeof u.m[0].value, "%d", nfds);
			if (nfds == 0)
				u.m[2] = u.m[--u.n];
		}
		n = valid ? make(&u, id, rn(2), buf, sizeof buf) : breakit(t, id, buf, sizeof buf);
		{
			int announced = u.n > 2 && strcmp(u.m[2].name, "fds") == 0 ? atoi(u.m[2].value) : 0;
			int k;
			for (k = 0; k < u.n; k++)
				if (strcmp(u.m[k].name, "fds") == 0)
					announced = atoi(u.m[k].value);
			if (n == 0 && nfds == 0)
				want = SF_UNAVAILABLE; /* an empty packet is end of file */
			else if (!valid || announced != nfds || announced > SF_MAX_FDS)
				want = SF_PROTOCOL;
			else if (t->code != SF_OK)
				want = t->code; /* an error: its descriptors are closed */
			else if (nfds != t->nfds)
				want = SF_PROTOCOL;
			else
				want = SF_OK;
		}
		queue(buf, n, nfds);
		switch (t->want) {
		case WANT_CONNECT:
			ret = fd = sf_connect(&c, "tcp", "127.0.0.1:1", 0);
			break;
		case WANT_BIND:
			ret = fd = sf_bind(&c, "udp", "127.0.0.1:5353", SF_SHARE_ANY, "n", NULL);
			break;
		case WANT_BIND_TOKEN:
			ret = sf_bind_token(&c, "tcp", "[::1]:5353", SF_SHARE_NONE, NULL, token, sizeof token, NULL);
			fd = -1;
			break;
		case WANT_OK:
			ret = sf_release(&c, "c4da743ad442d8acfb2b79f24206868a");
			fd = -1;
			break;
		default:
			ret = sf_status(&c, NULL, 0);
			fd = -1;
		}
		if (want == SF_OK)
			CHECK(ret >= 0 && sf_last_code(&c) == SF_OK, "%s with %d fds: %s: %s: %.*s", t->what, nfds,
			      sf_last_code_name(&c), sf_last_message(&c), (int)n, buf);
		else
			CHECK(ret == -1 && sf_last_code(&c) == want, "%s with %d fds, valid %d: code %s, want %s: %.*s",
			      t->what, nfds, valid, sf_last_code_name(&c), sf_code_name(want), (int)n, buf);
		if (fd >= 0) {
			CHECK(is_cloexec(fd), "not close-on-exec");
			close(fd);
		}
		if (fd_count() != base + (c.fd >= 0) + 1) {
			CHECK(0, "iteration %d (%s, %d fds): %d descriptors, want %d", it, t->what, nfds,
			      fd_count(), base + (c.fd >= 0) + 1);
			break;
		}
	}
	sf_close(&c);
	close(peer);
	peer = -1;
	CHECK(fd_count() == base, "%d descriptors at the end, %d at the start", fd_count(), base);
}

static int iterations = 20000;

static void property_parser(void) { test_parser(iterations); }
static void property_fds(void) { test_fds(iterations / 4); }

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc > 1)
		iterations = atoi(argv[1]);
	if (argc > 2)
		rng_state = strtoull(argv[2], NULL, 0) | 1;
	fprintf(stderr, "test_parse: seed %#llx\n", (unsigned long long)rng_state);
	RUN(property_parser);
	RUN(property_fds);
	return t_report("test_parse");
}
