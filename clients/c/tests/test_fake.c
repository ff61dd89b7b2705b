/*
 * test_fake.c: the C client against a scripted fake daemon, a forked
 * SOCK_SEQPACKET server that answers each request with a crafted reply
 * and crafted SCM_RIGHTS control data: every control-data case of
 * docs/protocol.md section 9, and replies that break the protocol. After
 * each case the test's descriptor count must be what it was.
 */
#define _GNU_SOURCE
#include "../sockfactory.h"
#include "testutil.h"

#include <errno.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>

enum action { REPLY, CLOSE, NOREPLY, BIG };

struct step {
	const char *expect; /* a substring the request must contain */
	enum action action;
	const char *reply;  /* %ID% is replaced by the request's id */
	int nfds;           /* descriptors (of /dev/null) sent with it */
};

static const struct step *script;
static size_t nscript;

static const char connect_ok[] = "{\"v\":1,\"id\":%ID%,\"fds\":1,\"connect\":{\"local\":\"127.0.0.1:1\",\"remote\":\"127.0.0.1:2\"}}";
static const char bind_ok[] = "{\"v\":1,\"id\":%ID%,\"fds\":1,\"bind\":{\"token\":\"26af6c2467817a5b36384a4486525a5a\",\"local\":\"127.0.0.1:5353\",\"network\":\"udp\",\"reclaim\":\"9b1e0c6d2f4a8b7c3e5d1f0a2b4c6d8e\"}}";

#define OP_CONNECT "\"op\":\"connect\""
#define OP_BIND "\"op\":\"bind\""
#define OP_PICKUP "\"op\":\"pickup\""
#define OP_RELEASE "\"op\":\"release\""
#define OP_HELLO "\"op\":\"hello\""
#define OP_STATUS "\"op\":\"status\""

static const struct step steps[] = {
	/* 0 */ { OP_CONNECT, REPLY, connect_ok, 1 },
	/* 1 */ { OP_CONNECT, REPLY, connect_ok, 0 },
	/* 2 */ { OP_CONNECT, REPLY, connect_ok, 2 },
	/* 3 */ { OP_CONNECT, REPLY, "{\"v\":1,\"id\":%ID%,\"connect\":{\"local\":\"127.0.0.1:1\",\"remote\":\"127.0.0.1:2\"}}", 1 },
	/* 4 */ { OP_CONNECT, REPLY, "{\"v\":1,\"id\":%ID%,\"fds\":2,\"connect\":{}}", 2 },
	/* 5 */ { OP_CONNECT, REPLY, connect_ok, 40 },
	/* 6 */ { OP_CONNECT, REPLY, "{\"v\":1,\"id\":%ID%,\"fds\":17,\"connect\":{}}", 17 },
	/* 7 */ { OP_CONNECT, REPLY, "{\"v\":1,\"id\":%ID%,\"fds\":1,\"error\":{\"code\":\"denied\",\"message\":\"no\"}}", 1 },
	/* 8 */ { OP_CONNECT, REPLY, "{\"v\":1,\"id\":%ID%,\"error\":{\"code\":\"denied\",\"message\":\"no\"}}", 1 },
	/* 9 */ { OP_RELEASE, REPLY, "{\"v\":1,\"id\":%ID%,\"fds\":1,\"ok\":true}", 1 },
	/* 10 */ { "\"token_only\":true", REPLY, bind_ok, 1 },
	/* 11 */ { OP_PICKUP, REPLY, bind_ok, 1 },
	/* 12 */ { OP_CONNECT, BIG, NULL, 1 },
	/* 13: after the reconnect */
	{ OP_CONNECT, REPLY, "{\"v\":1,\"id\":%ID%,\"error\":{\"code\":\"frobnicated\",\"message\":\"new\",\"errno\":5}}", 0 },
	/* 14 */ { OP_CONNECT, REPLY, "{\"v\":1,\"id\":%ID%,\"error\":{\"code\":\"frobnicated\",\"message\":\"new\"}}", 0 },
	/* 15 */ { OP_CONNECT, REPLY, "{\"v\":1,\"id\":999,\"fds\":1,\"connect\":{}}", 1 },
	/* 16: after the reconnect */
	{ OP_CONNECT, REPLY, "{\"v\":2,\"id\":%ID%,\"fds\":1,\"connect\":{}}", 1 },
	/* 17 */ { OP_CONNECT, CLOSE, NULL, 0 },
	/* 18 */ { OP_CONNECT, REPLY, "{\"v\":1,\"id\":%ID%,\"fds\":1,\"connect\":{},\"extra\":1}", 1 },
	/* 19 */ { OP_CONNECT, REPLY, "{\"v\":1,\"id\":%ID%,\"error\":{\"code\":\"connect_failed\",\"message\":\"connect to 127.0.0.1:1: connection refused\",\"errno\":111}}", 0 },
	/* 20 */ { OP_CONNECT, REPLY, "{\"v\":1,\"id\":0,\"error\":{\"code\":\"invalid_request\",\"message\":\"malformed message: not a JSON object\"}}", 0 },
	/* 21 */ { "\"address\":\"a\\\"b\\\\c\\u0001\xc3\xa9\"", REPLY, "{\"v\":1,\"id\":%ID%,\"error\":{\"code\":\"invalid_request\",\"message\":\"address \\\"\\u003cx\\u003e:80\\\"\"}}", 0 },
	/* 22 */ { OP_CONNECT, NOREPLY, NULL, 0 },
	/* 23: after the reconnect */
	{ OP_HELLO, REPLY, "{\"v\":1,\"id\":%ID%,\"ok\":true}", 0 },
	/* 24 */ { OP_CONNECT, CLOSE, NULL, 0 },
	/* 25: the reconnect declares the app first */
	{ "\"hello\":{\"app\":\"fake-app\"}", REPLY, "{\"v\":1,\"id\":%ID%,\"ok\":true}", 0 },
	/* 26 */ { OP_CONNECT, REPLY, connect_ok, 1 },
	/* 27 */ { OP_STATUS, REPLY, "{\"v\":1,\"id\":%ID%,\"status\":{\"sockets\":[{\"network\":\"tcp\",\"local\":\"127.0.0.1:1\",\"refs\":1,\"age_ms\":0,\"holders\":[]},{}]}}", 0 },
	/* 28 */ { OP_BIND, REPLY, "{\"v\":1,\"id\":%ID%,\"fds\":1,\"bind\":{\"token\":\"NOTHEX\",\"local\":\"127.0.0.1:5353\",\"network\":\"udp\"}}", 1 },
	/* 28b: the undecodable reply dropped the connection: hello again */
	{ OP_HELLO, REPLY, "{\"v\":1,\"id\":%ID%,\"ok\":true}", 0 },
	/* 29 */ { OP_CONNECT, REPLY, "{\"v\":1,\"id\":%ID%,\"error\":{\"code\":\"limit_exceeded\",\"message\":\"more than 2 requests in flight\",\"unseen\":true}}", 1 },
	/* 30 */ { OP_CONNECT, REPLY, "{\"v\":1,\"id\":%ID%,\"error\":{\"code\":\"limit_exceeded\",\"message\":\"x\",\"unseen\":true}}", 0 },
};

static int send_fds(int s, const char *buf, size_t len, int nfds)
{
	union {
		char buf[CMSG_SPACE(64 * sizeof(int))];
		struct cmsghdr align;
	} control;
	struct iovec iov = { (void *)buf, len };
	struct msghdr msg;
	struct cmsghdr *cm;
	int fds[64], i, r;

	memset(&msg, 0, sizeof msg);
	memset(&control, 0, sizeof control);
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	for (i = 0; i < nfds; i++)
		fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (nfds > 0) {
		msg.msg_control = control.buf;
		msg.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		cm = CMSG_FIRSTHDR(&msg);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
	}
	r = (int)sendmsg(s, &msg, MSG_NOSIGNAL);
	for (i = 0; i < nfds; i++)
		close(fds[i]);
	return r;
}

/* serve is the fake daemon: one connection at a time, one step per
 * request, until the script ends. */
static void serve(int l)
{
	static char req[SF_MAX_MESSAGE + 1], out[SF_MAX_MESSAGE + 8000];
	size_t next = 0;

	while (next < nscript) {
		int s = accept(l, NULL, NULL);
		if (s < 0)
			_exit(3);
		for (;;) {
			ssize_t n = recv(s, req, SF_MAX_MESSAGE, 0);
			const struct step *st;
			const char *idp;
			char id[24];
			size_t o = 0;
			const char *p;

			if (n <= 0)
				break;
			req[n] = '\0';
			if (next >= nscript)
				_exit(0);
			st = &script[next++];
			idp = strstr(req, "\"id\":");
			snprintf(id, sizeof id, "%llu", idp ? strtoull(idp + 5, NULL, 10) : 0ULL);
			if (strstr(req, st->expect) == NULL) {
				fprintf(stderr, "fake daemon: step %zu wants %s in %s\n", next - 1, st->expect, req);
				snprintf(out, sizeof out, "{\"v\":1,\"id\":%s,\"error\":{\"code\":\"script_mismatch\",\"message\":\"step %zu\"}}", id, next - 1);
				send_fds(s, out, strlen(out), 0);
				continue;
			}
			if (st->action == CLOSE)
				break;
			if (st->action == NOREPLY)
				continue;
			if (st->action == BIG) {
				memset(out, ' ', 70000);
				send_fds(s, out, 70000, st->nfds);
				continue;
			}
			for (p = st->reply; *p;) {
				if (strncmp(p, "%ID%", 4) == 0) {
					memcpy(out + o, id, strlen(id));
					o += strlen(id);
					p += 4;
				} else {
					out[o++] = *p++;
				}
			}
			if (send_fds(s, out, o, st->nfds) < 0)
				perror("fake daemon: sendmsg");
		}
		close(s);
	}
	_exit(0);
}

static sf_client c;
static int base;

/* expect_fail checks that the last call failed with code and errno. */
#define EXPECT_FAIL(ret, code_, errno_)                                         \
	do {                                                                    \
		int r_ = (ret), e_ = errno;                                     \
		CHECK(r_ == -1, "succeeded (%d)", r_);                          \
		if (r_ >= 0)                                                    \
			close(r_);                                              \
		CHECK(sf_last_code(&c) == (code_), "code %s (%s), want %s",     \
		      sf_last_code_name(&c), sf_last_message(&c), sf_code_name(code_)); \
		CHECK(e_ == (errno_), "errno %d (%s), want %d", e_, strerror(e_), errno_); \
		CHECK(fd_count() == base + (c.fd >= 0), "descriptors: %d, want %d", fd_count(), base + (c.fd >= 0)); \
	} while (0)

static void cases(void)
{
	int fd;
	sf_binding b;
	char token[SF_TOKEN_SIZE], st[512];

	/* 0: the reply and descriptor as they should be */
	fd = sf_connect(&c, "tcp", "127.0.0.1:2", 0);
	CHECK(fd >= 0, "connect: %s", sf_last_message(&c));
	CHECK(fd < 0 || is_cloexec(fd), "not close-on-exec");
	if (fd >= 0)
		close(fd);
	/* 1: "fds":1, none arrived */
	EXPECT_FAIL(sf_connect(&c, "tcp", "127.0.0.1:2", 0), SF_PROTOCOL, EPROTO);
	CHECK(c.fd >= 0, "a count mismatch dropped the connection");
	/* 2: "fds":1, two arrived */
	EXPECT_FAIL(sf_connect(&c, "tcp", "127.0.0.1:2", 0), SF_PROTOCOL, EPROTO);
	/* 3: no "fds", one arrived */
	EXPECT_FAIL(sf_connect(&c, "tcp", "127.0.0.1:2", 0), SF_PROTOCOL, EPROTO);
	/* 4: two announced and sent, a connect wants one */
	EXPECT_FAIL(sf_connect(&c, "tcp", "127.0.0.1:2", 0), SF_PROTOCOL, EPROTO);
	/* 5: 40 sent: the control data is truncated (MSG_CTRUNC) */
	EXPECT_FAIL(sf_connect(&c, "tcp", "127.0.0.1:2", 0), SF_PROTOCOL, EPROTO);
	CHECK(strstr(sf_last_message(&c), "truncated") != NULL, "message %s", sf_last_message(&c));
	/* 6: "fds":17, out of range */
	EXPECT_FAIL(sf_connect(&c, "tcp", "127.0.0.1:2", 0), SF_PROTOCOL, EPROTO);
	/* 7: an error with a descriptor: the error, the descriptor closed */
	EXPECT_FAIL(sf_connect(&c, "tcp", "127.0.0.1:2", 0), SF_DENIED, EACCES);
	/* 8: an error, a descriptor it does not announce */
	EXPECT_FAIL(sf_connect(&c, "tcp", "127.0.0.1:2", 0), SF_PROTOCOL, EPROTO);
	/* 9: release answered with a descriptor */
	EXPECT_FAIL(sf_release(&c, "26af6c2467817a5b36384a4486525a5a"), SF_PROTOCOL, EPROTO);
	/* 10: a token-only bind answered with a descriptor */
	EXPECT_FAIL(sf_bind_token(&c, "udp", "127.0.0.1:0", SF_SHARE_NONE, NULL, token, sizeof token, NULL), SF_PROTOCOL, EPROTO);
	/* 11: pickup as it should be */
	fd = sf_pickup(&c, "26af6c2467817a5b36384a4486525a5a", &b);
	CHECK(fd >= 0, "pickup: %s", sf_last_message(&c));
	CHECK(strcmp(b.local, "127.0.0.1:5353") == 0 && strcmp(b.reclaim, "9b1e0c6d2f4a8b7c3e5d1f0a2b4c6d8e") == 0, "binding %s %s", b.local, b.reclaim);
	if (fd >= 0)
		close(fd);
	/* 12: a reply larger than 65536 bytes (MSG_TRUNC): the connection goes */
	EXPECT_FAIL(sf_connect(&c, "tcp", "127.0.0.1:2", 0), SF_PROTOCOL, EPROTO);
	CHECK(c.fd < 0, "the connection was kept after MSG_TRUNC");
	/* 13, 14: a code this library does not know */
	EXPECT_FAIL(sf_connect(&c, "tcp", "127.0.0.1:2", 0), SF_UNKNOWN_CODE, 5);
	CHECK(strcmp(sf_last_code_name(&c), "frobnicated") == 0, "code name %s", sf_last_code_name(&c));
	CHECK(sf_last_errno(&c) == 5, "daemon errno %d", sf_last_errno(&c));
	EXPECT_FAIL(sf_connect(&c, "tcp", "127.0.0.1:2", 0), SF_UNKNOWN_CODE, EIO);
	/* 15: a reply to another request */
	EXPECT_FAIL(sf_connect(&c, "tcp", "127.0.0.1:2", 0), SF_PROTOCOL, EPROTO);
	/* 16: another protocol version */
	EXPECT_FAIL(sf_connect(&c, "tcp", "127.0.0.1:2", 0), SF_PROTOCOL, EPROTO);
	/* 17: the daemon closes the connection */
	EXPECT_FAIL(sf_connect(&c, "tcp", "127.0.0.1:2", 0), SF_UNAVAILABLE, ECONNRESET);
	/* 18: an unknown member */
	EXPECT_FAIL(sf_connect(&c, "tcp", "127.0.0.1:2", 0), SF_PROTOCOL, EPROTO);
	/* 19: connect_failed with its errno */
	EXPECT_FAIL(sf_connect(&c, "tcp", "127.0.0.1:2", 0), SF_CONNECT_FAILED, ECONNREFUSED);
	CHECK(sf_last_errno(&c) == 111, "daemon errno %d", sf_last_errno(&c));
	/* 20: id 0, the daemon could not read ours */
	EXPECT_FAIL(sf_connect(&c, "tcp", "127.0.0.1:2", 0), SF_INVALID_REQUEST, EINVAL);
	/* 21: the request's strings are escaped, the reply's unescaped */
	EXPECT_FAIL(sf_connect(&c, "tcp", "a\"b\\c\001\xc3\xa9", 0), SF_INVALID_REQUEST, EINVAL);
	CHECK(strcmp(sf_last_message(&c), "address \"<x>:80\"") == 0, "message %s", sf_last_message(&c));
	/* 22: no reply in time */
	sf_set_reply_timeout(&c, 200);
	EXPECT_FAIL(sf_connect(&c, "tcp", "127.0.0.1:2", 0), SF_UNAVAILABLE, ETIMEDOUT);
	sf_set_reply_timeout(&c, 60000);
	/* 23-26: the app name is declared again on a new connection */
	CHECK(sf_hello(&c, "fake-app") == 0, "hello: %s", sf_last_message(&c));
	EXPECT_FAIL(sf_connect(&c, "tcp", "127.0.0.1:2", 0), SF_UNAVAILABLE, ECONNRESET);
	fd = sf_connect(&c, "tcp", "127.0.0.1:2", 0);
	CHECK(fd >= 0, "connect after reconnect: %s: %s", sf_last_code_name(&c), sf_last_message(&c));
	if (fd >= 0)
		close(fd);
	/* 27: status, counted, raw */
	CHECK(sf_status(&c, st, sizeof st) == 2, "status: %s", sf_last_message(&c));
	CHECK(strncmp(st, "{\"sockets\":[", 12) == 0 && st[strlen(st) - 1] == '}', "status %s", st);
	/* 28: a token that is not 32 hex digits */
	EXPECT_FAIL(sf_bind(&c, "udp", "127.0.0.1:5353", SF_SHARE_DEFAULT, NULL, &b), SF_PROTOCOL, EPROTO);
	/* 29: limit_exceeded with a stray descriptor; 30: without */
	EXPECT_FAIL(sf_connect(&c, "tcp", "127.0.0.1:2", 0), SF_PROTOCOL, EPROTO);
	EXPECT_FAIL(sf_connect(&c, "tcp", "127.0.0.1:2", 0), SF_LIMIT_EXCEEDED, EAGAIN);
}

int main(void)
{
	char dir[] = "/tmp/sf-fake.XXXXXX", path[64];
	struct sockaddr_un sa;
	int l, status;
	pid_t pid;

	signal(SIGPIPE, SIG_IGN);
	script = steps;
	nscript = sizeof steps / sizeof steps[0];
	if (mkdtemp(dir) == NULL)
		return 2;
	snprintf(path, sizeof path, "%s/fake.sock", dir);
	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	l = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(l, 4) != 0) {
		perror("fake daemon");
		return 2;
	}
	pid = fork();
	if (pid == 0)
		serve(l);
	close(l);
	base = fd_count();
	t_name = "open";
	CHECK(sf_open(&c, path) == 0, "sf_open: %s", sf_last_message(&c));
	base = fd_count() - 1; /* the client's connection is counted apart */
	RUN(cases);
	sf_close(&c);
	t_name = "fd-baseline";
	CHECK(fd_count() == base, "%d descriptors at the end, %d at the start", fd_count(), base);
	waitpid(pid, &status, 0);
	t_name = "fake-daemon";
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the fake daemon ended with status %d", status);
	unlink(path);
	rmdir(dir);
	return t_report("test_fake");
}
