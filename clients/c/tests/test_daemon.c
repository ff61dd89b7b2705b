/*
 * test_daemon.c: the C client against the real sockfactoryd, which
 * run-daemon-tests.sh starts with a generated configuration and names in
 * $SOCKFACTORY_SOCKET. Loopback addresses only.
 */
#define _GNU_SOURCE
#include "../sockfactory.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>

/* listener makes a TCP (or UDP) socket on 127.0.0.1, port 0, listening
 * if listen_ is set, and returns it with its port in *port. */
static int listener(int type, int listen_, int *port)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof sa;
	int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);

	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
	    (listen_ && listen(fd, 8) != 0) ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
		perror("listener");
		exit(2);
	}
	*port = ntohs(sa.sin_port);
	return fd;
}

/* port_of returns the port of "ip:port". */
static int port_of(const char *addr)
{
	const char *colon = strrchr(addr, ':');
	return colon ? atoi(colon + 1) : -1;
}

static int sock_type(int fd)
{
	int t = -1;
	socklen_t l = sizeof t;
	getsockopt(fd, SOL_SOCKET, SO_TYPE, &t, &l);
	return t;
}

static void open_client(sf_client *c)
{
	if (sf_open(c, NULL) != 0) {
		fprintf(stderr, "sf_open: %s: %s\n", sf_last_code_name(c), sf_last_message(c));
		exit(2);
	}
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

static void test_default_path(void)
{
	char buf[256];
	const char *env = getenv("SOCKFACTORY_SOCKET");

	CHECK(sf_default_path(buf, sizeof buf) == 0, "errno %d", errno);
	CHECK(env != NULL && strcmp(buf, env) == 0, "default path %s, want $SOCKFACTORY_SOCKET %s", buf, env ? env : "(unset)");
	CHECK(sf_default_path(buf, 3) == -1 && errno == ERANGE, "a small buffer: errno %d", errno);
}

static void test_unavailable(void)
{
	sf_client c;

	CHECK(sf_open(&c, "/nonexistent-sockfactory-dir/sf.sock") == -1, "opened a missing socket");
	CHECK(errno == ENOENT, "errno %d", errno);
	CHECK(sf_last_code(&c) == SF_UNAVAILABLE, "code %d", sf_last_code(&c));
	CHECK(strcmp(sf_last_code_name(&c), "unavailable") == 0, "name %s", sf_last_code_name(&c));
	CHECK(sf_connect(&c, "tcp", "127.0.0.1:1", 0) == -1 && sf_last_code(&c) == SF_UNAVAILABLE,
	      "a connect on a client that never connected: code %d", sf_last_code(&c));
	sf_close(&c);
	CHECK(sf_connect(&c, "tcp", "127.0.0.1:1", 0) == -1 && sf_last_code(&c) == SF_LOCAL && errno == EBADF,
	      "a closed client: code %d errno %d", sf_last_code(&c), errno);
	sf_close(&c);
}

static void test_connect_echo(void)
{
	sf_client c;
	char addr[64], buf[16];
	int lfd, port, fd, s;
	struct sockaddr_in peer;
	socklen_t len = sizeof peer;

	open_client(&c);
	lfd = listener(SOCK_STREAM, 1, &port);
	snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
	fd = sf_connect(&c, "tcp", addr, 5000);
	CHECK(fd >= 0, "sf_connect: %s: %s", sf_last_code_name(&c), sf_last_message(&c));
	CHECK(sf_last_code(&c) == SF_OK, "code %d after success", sf_last_code(&c));
	if (fd >= 0) {
		CHECK(is_cloexec(fd), "the connected socket is not close-on-exec");
		CHECK(!is_nonblocking(fd), "the connected socket is non-blocking");
		CHECK(sock_type(fd) == SOCK_STREAM, "type %d", sock_type(fd));
		CHECK(getpeername(fd, (struct sockaddr *)&peer, &len) == 0 && ntohs(peer.sin_port) == port,
		      "peer port %d, want %d", ntohs(peer.sin_port), port);
		s = accept(lfd, NULL, NULL);
		CHECK(s >= 0, "accept: %s", strerror(errno));
		CHECK(write(fd, "ping", 4) == 4, "write");
		CHECK(read(s, buf, 4) == 4 && memcmp(buf, "ping", 4) == 0, "the server read something else");
		CHECK(write(s, "pong!", 5) == 5, "write");
		CHECK(read(fd, buf, 5) == 5 && memcmp(buf, "pong!", 5) == 0, "the client read something else");
		close(s);
		close(fd);
	}
	close(lfd);
	sf_close(&c);
}

static void test_connect_udp(void)
{
	sf_client c;
	char addr[64], buf[16];
	int ufd, port, fd;
	struct sockaddr_in from;
	socklen_t len = sizeof from;

	open_client(&c);
	ufd = listener(SOCK_DGRAM, 0, &port);
	snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
	fd = sf_connect(&c, "udp4", addr, 0);
	CHECK(fd >= 0, "sf_connect udp: %s: %s", sf_last_code_name(&c), sf_last_message(&c));
	if (fd >= 0) {
		CHECK(sock_type(fd) == SOCK_DGRAM, "type %d", sock_type(fd));
		CHECK(send(fd, "dgram", 5, 0) == 5, "send");
		CHECK(recvfrom(ufd, buf, sizeof buf, 0, (struct sockaddr *)&from, &len) == 5, "recvfrom");
		CHECK(sendto(ufd, "back", 4, 0, (struct sockaddr *)&from, len) == 4, "sendto");
		CHECK(recv(fd, buf, sizeof buf, 0) == 4 && memcmp(buf, "back", 4) == 0, "recv");
		close(fd);
	}
	close(ufd);
	sf_close(&c);
}

static void test_denied(void)
{
	sf_client c;

	open_client(&c);
	/* 127.0.0.2 is loopback, but the test's rule grants only 127.0.0.1. */
	CHECK(sf_connect(&c, "tcp", "127.0.0.2:9", 0) == -1, "connected");
	CHECK(errno == EACCES, "errno %d", errno);
	CHECK(sf_last_code(&c) == SF_DENIED, "code %d (%s)", sf_last_code(&c), sf_last_code_name(&c));
	CHECK(strcmp(sf_last_code_name(&c), "denied") == 0, "name %s", sf_last_code_name(&c));
	CHECK(sf_last_errno(&c) == 0, "errno %d from the daemon", sf_last_errno(&c));
	CHECK(strstr(sf_last_message(&c), "127.0.0.2:9") != NULL, "message %s", sf_last_message(&c));
	/* The connection stays usable after an error. */
	CHECK(sf_connect(&c, "sctp", "127.0.0.1:9", 0) == -1 && sf_last_code(&c) == SF_INVALID_REQUEST && errno == EINVAL,
	      "unknown network: code %d errno %d", sf_last_code(&c), errno);
	sf_close(&c);
}

static void test_connect_failed(void)
{
	sf_client c;
	char addr[64];
	int bfd, port;

	open_client(&c);
	bfd = listener(SOCK_STREAM, 0, &port); /* bound, not listening: refused */
	snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
	CHECK(sf_connect(&c, "tcp", addr, 3000) == -1, "connected to a port nobody listens on");
	CHECK(errno == ECONNREFUSED, "errno %d", errno);
	CHECK(sf_last_code(&c) == SF_CONNECT_FAILED, "code %s", sf_last_code_name(&c));
	CHECK(sf_last_errno(&c) == ECONNREFUSED, "daemon errno %d", sf_last_errno(&c));
	close(bfd);
	sf_close(&c);
}

static void test_hello(void)
{
	sf_client c;

	open_client(&c);
	CHECK(sf_hello(&c, "c-tests") == 0, "hello: %s", sf_last_message(&c));
	CHECK(sf_hello(&c, "") == -1 && sf_last_code(&c) == SF_INVALID_REQUEST, "empty app: code %d", sf_last_code(&c));
	CHECK(sf_hello(&c, "my app") == -1 && sf_last_code(&c) == SF_INVALID_REQUEST, "app with a space: code %d", sf_last_code(&c));
	sf_close(&c);
}

static void test_bind_listen(void)
{
	sf_client c;
	sf_binding b;
	int fd, cfd, s, acc = 0;
	socklen_t l = sizeof acc;
	struct sockaddr_in sa;
	char buf[8];

	open_client(&c);
	fd = sf_bind(&c, "tcp", "127.0.0.1:0", SF_SHARE_NONE, NULL, &b);
	CHECK(fd >= 0, "sf_bind: %s: %s", sf_last_code_name(&c), sf_last_message(&c));
	if (fd < 0) {
		sf_close(&c);
		return;
	}
	CHECK(strlen(b.token) == 32, "token %s", b.token);
	CHECK(strlen(b.reclaim) == 32, "reclaim secret %s", b.reclaim);
	CHECK(strcmp(b.network, "tcp") == 0, "network %s", b.network);
	CHECK(port_of(b.local) > 0, "local %s", b.local);
	CHECK(!b.shared, "shared");
	CHECK(is_cloexec(fd), "the bound socket is not close-on-exec");
	CHECK(!is_nonblocking(fd), "the bound socket is non-blocking");
	CHECK(getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &l) == 0 && acc == 1, "not listening");

	cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons((unsigned short)port_of(b.local));
	CHECK(connect(cfd, (struct sockaddr *)&sa, sizeof sa) == 0, "connect to %s: %s", b.local, strerror(errno));
	s = accept(fd, NULL, NULL);
	CHECK(s >= 0, "accept: %s", strerror(errno));
	if (s >= 0) {
		CHECK(write(cfd, "hi", 2) == 2, "write");
		CHECK(read(s, buf, 2) == 2 && memcmp(buf, "hi", 2) == 0, "read");
		close(s);
	}
	close(cfd);
	CHECK(sf_release(&c, b.token) == 0, "release: %s", sf_last_message(&c));
	CHECK(sf_release(&c, b.token) == -1 && sf_last_code(&c) == SF_NOT_FOUND && errno == ENOENT,
	      "second release: code %d errno %d", sf_last_code(&c), errno);
	close(fd);
	sf_close(&c);
}

static void test_share(void)
{
	sf_client a, b;
	sf_binding ba, bb;
	char addr[64];
	int fa, fb;

	open_client(&a);
	open_client(&b);
	fa = sf_bind(&a, "tcp", "127.0.0.1:0", SF_SHARE_DEFAULT, NULL, &ba);
	CHECK(fa >= 0, "bind: %s", sf_last_message(&a));
	snprintf(addr, sizeof addr, "127.0.0.1:%d", port_of(ba.local));
	CHECK(sf_bind(&b, "tcp", addr, SF_SHARE_NONE, NULL, &bb) == -1, "shared an exclusive socket");
	CHECK(sf_last_code(&b) == SF_SHARE_CONFLICT && errno == EBUSY, "code %s errno %d", sf_last_code_name(&b), errno);
	CHECK(sf_bind(&b, "tcp", addr, SF_SHARE_ANY, NULL, &bb) == -1 && sf_last_code(&b) == SF_SHARE_CONFLICT,
	      "any vs none: code %s", sf_last_code_name(&b));
	if (fa >= 0)
		close(fa);

	/* Two holders of one name share; a third with another name may not. */
	fa = sf_bind(&a, "udp", "127.0.0.1:0", SF_SHARE_SAME_NAME, "resolver", &ba);
	CHECK(fa >= 0, "bind: %s", sf_last_message(&a));
	snprintf(addr, sizeof addr, "127.0.0.1:%d", port_of(ba.local));
	fb = sf_bind(&b, "udp", addr, SF_SHARE_ANY, "resolver", &bb);
	CHECK(fb >= 0, "bind same-name: %s: %s", sf_last_code_name(&b), sf_last_message(&b));
	CHECK(fb < 0 || bb.shared, "not shared");
	CHECK(sf_bind(&b, "udp", addr, SF_SHARE_ANY, "other", &bb) == -1 && sf_last_code(&b) == SF_SHARE_CONFLICT,
	      "another name: code %s", sf_last_code_name(&b));
	if (fa >= 0)
		close(fa);
	if (fb >= 0)
		close(fb);
	sf_close(&a);
	sf_close(&b);
}

static void test_token_pickup(void)
{
	sf_client a, b;
	sf_binding bt, bp;
	char token[SF_TOKEN_SIZE], small[8];
	int fd;

	open_client(&a);
	open_client(&b);
	CHECK(sf_bind_token(&a, "udp", "127.0.0.1:0", SF_SHARE_NONE, NULL, small, sizeof small, NULL) == -1 &&
	      errno == ERANGE && sf_last_code(&a) == SF_LOCAL, "a small token buffer: errno %d", errno);
	CHECK(sf_bind_token(&a, "udp", "127.0.0.1:0", SF_SHARE_NONE, NULL, token, sizeof token, &bt) == 0,
	      "bind token: %s: %s", sf_last_code_name(&a), sf_last_message(&a));
	CHECK(strlen(token) == 32 && strcmp(token, bt.token) == 0, "token %s", token);
	CHECK(bt.expires_ms > 0, "expires_ms %lld", (long long)bt.expires_ms);
	CHECK(bt.reclaim[0] == '\0', "a token-only bind has a reclaim secret");
	fd = sf_pickup(&b, token, &bp);
	CHECK(fd >= 0, "pickup: %s: %s", sf_last_code_name(&b), sf_last_message(&b));
	if (fd >= 0) {
		CHECK(strcmp(bp.token, token) == 0, "pickup token %s", bp.token);
		CHECK(strcmp(bp.local, bt.local) == 0, "pickup local %s, bind %s", bp.local, bt.local);
		CHECK(sock_type(fd) == SOCK_DGRAM, "type %d", sock_type(fd));
		CHECK(is_cloexec(fd) && !is_nonblocking(fd), "flags");
		close(fd);
	}
	CHECK(sf_pickup(&b, token, &bp) == -1 && sf_last_code(&b) == SF_NOT_FOUND, "second pickup: code %s", sf_last_code_name(&b));
	CHECK(sf_pickup(&b, "not-a-token", NULL) == -1 && sf_last_code(&b) == SF_NOT_FOUND, "bad token: code %s", sf_last_code_name(&b));
	CHECK(sf_pickup(&b, "", NULL) == -1 && sf_last_code(&b) == SF_INVALID_REQUEST, "empty token: code %s", sf_last_code_name(&b));
	CHECK(sf_release(&a, token) == -1 && sf_last_code(&a) == SF_NOT_FOUND, "release by a non-holder: code %s", sf_last_code_name(&a));
	CHECK(sf_release(&b, token) == 0, "release by the holder: %s", sf_last_message(&b));

	/* A pending token is released by the connection that asked for it. */
	CHECK(sf_bind_token(&a, "tcp", "127.0.0.1:0", SF_SHARE_NONE, NULL, token, sizeof token, NULL) == 0, "bind token");
	CHECK(sf_release(&a, token) == 0, "release pending: %s", sf_last_message(&a));
	CHECK(sf_pickup(&b, token, NULL) == -1 && sf_last_code(&b) == SF_NOT_FOUND, "pickup after release: %s", sf_last_code_name(&b));
	sf_close(&a);
	sf_close(&b);
}

static void test_status(void)
{
	sf_client c;
	sf_binding b;
	char buf[SF_MAX_MESSAGE], tiny[4];
	int fd, n;

	open_client(&c);
	fd = sf_bind(&c, "tcp", "127.0.0.1:0", SF_SHARE_NONE, NULL, &b);
	CHECK(fd >= 0, "bind: %s", sf_last_message(&c));
	n = sf_status(&c, buf, sizeof buf);
	CHECK(n >= 1, "status: %d %s", n, sf_last_message(&c));
	CHECK(strstr(buf, b.local) != NULL, "status %s lacks %s", buf, b.local);
	CHECK(sf_status(&c, NULL, 0) == n, "status without a buffer");
	CHECK(sf_status(&c, tiny, sizeof tiny) == -1 && errno == ERANGE, "small buffer: errno %d", errno);
	if (fd >= 0)
		close(fd);
	sf_close(&c);
}

/* The child binds exclusively, tells the port and waits to be killed;
 * once it is, the daemon releases its reference and an exclusive bind
 * succeeds. */
static void test_crash_release(void)
{
	int pfd[2], port = 0, fd, i;
	pid_t pid;
	sf_client c;
	sf_binding b;
	char addr[64];

	if (pipe(pfd) != 0) {
		CHECK(0, "pipe");
		return;
	}
	pid = fork();
	if (pid == 0) {
		sf_client k;
		close(pfd[0]);
		if (sf_open(&k, NULL) != 0 || sf_bind(&k, "tcp", "127.0.0.1:0", SF_SHARE_NONE, NULL, &b) < 0)
			_exit(1);
		port = port_of(b.local);
		if (write(pfd[1], &port, sizeof port) != sizeof port)
			_exit(1);
		for (;;)
			pause();
	}
	close(pfd[1]);
	CHECK(read(pfd[0], &port, sizeof port) == sizeof port, "the child bound nothing");
	close(pfd[0]);
	open_client(&c);
	snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
	CHECK(sf_bind(&c, "tcp", addr, SF_SHARE_NONE, NULL, &b) == -1 && sf_last_code(&c) == SF_SHARE_CONFLICT,
	      "bind while the child holds it: code %s", sf_last_code_name(&c));
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	fd = -1;
	for (i = 0; i < 100 && fd < 0; i++) {
		fd = sf_bind(&c, "tcp", addr, SF_SHARE_NONE, NULL, &b);
		if (fd < 0) {
			CHECK(sf_last_code(&c) == SF_SHARE_CONFLICT, "code %s: %s", sf_last_code_name(&c), sf_last_message(&c));
			sleep_ms(50);
		}
	}
	CHECK(fd >= 0, "the killed child's reference was not released");
	if (fd >= 0)
		close(fd);
	sf_close(&c);
}

int main(void)
{
	int base = fd_count(), after;

	signal(SIGPIPE, SIG_IGN);
	RUN(test_default_path);
	RUN(test_unavailable);
	RUN(test_connect_echo);
	RUN(test_connect_udp);
	RUN(test_denied);
	RUN(test_connect_failed);
	RUN(test_hello);
	RUN(test_bind_listen);
	RUN(test_share);
	RUN(test_token_pickup);
	RUN(test_status);
	RUN(test_crash_release);
	after = fd_count();
	t_name = "fd-baseline";
	CHECK(after == base, "%d descriptors open at the end, %d at the start", after, base);
	return t_report("test_daemon");
}
