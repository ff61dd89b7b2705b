/*
 * The fd-passing floor in C, built and started by sockfactory-bench
 * (modes fdpass-c and fdpass-c-epoll, docs/benchmarks.md): the least a
 * server can do to answer a request with a descriptor. It listens on a
 * SOCK_SEQPACKET socket and answers every packet of every connection with
 * one byte and one fixed descriptor (a TCP socket listening on 127.0.0.1)
 * as SCM_RIGHTS: no parsing, no policy, no runtime.
 *
 *   fdpass_floor threads SOCKET   a thread per connection, blocking
 *                                 recv and sendmsg: two system calls and
 *                                 one wake-up per request
 *   fdpass_floor epoll SOCKET     one thread per CPU, each with its own
 *                                 epoll set; connections dealt out in turn
 *                                 by the accepting thread: a wake-up
 *                                 serves every connection ready by then
 *
 * It prints "ready" once it accepts, and exits 0 on SIGTERM.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int passed; /* the descriptor every reply carries */

static void die(const char *what)
{
	fprintf(stderr, "fdpass_floor: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void on_term(int sig)
{
	(void)sig;
	_exit(0);
}

/* answer reads one request from fd and replies; 0 when fd is done. */
static int answer(int fd)
{
	char b;
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { .iov_base = &b, .iov_len = 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf };
	struct cmsghdr *c;
	ssize_t n;

	do
		n = recv(fd, &b, 1, 0);
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return 0;
	memset(cbuf, 0, sizeof cbuf);
	c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &passed, sizeof(int));
	do
		n = sendmsg(fd, &msg, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n == 1;
}

static void *serve_conn(void *arg)
{
	int fd = (int)(long)arg;

	while (answer(fd))
		;
	close(fd);
	return NULL;
}

static void *serve_epoll(void *arg)
{
	int ep = (int)(long)arg;
	struct epoll_event ev[64];

	for (;;) {
		int n = epoll_wait(ep, ev, 64, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait");
		}
		for (int i = 0; i < n; i++) {
			int fd = ev[i].data.fd;
			if (!answer(fd)) {
				epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
				close(fd);
			}
		}
	}
	return NULL;
}

int main(int argc, char **argv)
{
	struct sockaddr_in in = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	pthread_attr_t attr;
	int use_epoll, l, nep = 0, next = 0;
	int *eps = NULL;

	if (argc != 3 || (strcmp(argv[1], "threads") && strcmp(argv[1], "epoll")) || strlen(argv[2]) >= sizeof un.sun_path) {
		fprintf(stderr, "usage: fdpass_floor threads|epoll SOCKET\n");
		return 2;
	}
	use_epoll = strcmp(argv[1], "epoll") == 0;
	signal(SIGTERM, on_term);
	signal(SIGPIPE, SIG_IGN);

	passed = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (passed < 0 || bind(passed, (struct sockaddr *)&in, sizeof in) < 0 || listen(passed, 1) < 0)
		die("the TCP socket to pass");
	l = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	strcpy(un.sun_path, argv[2]);
	if (l < 0 || bind(l, (struct sockaddr *)&un, sizeof un) < 0 || listen(l, 4096) < 0)
		die(argv[2]);

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	if (use_epoll) {
		nep = (int)sysconf(_SC_NPROCESSORS_ONLN);
		if (nep < 1)
			nep = 1;
		eps = calloc((size_t)nep, sizeof *eps);
		for (int i = 0; i < nep; i++) {
			pthread_t t;
			if ((eps[i] = epoll_create1(EPOLL_CLOEXEC)) < 0)
				die("epoll_create1");
			if ((errno = pthread_create(&t, &attr, serve_epoll, (void *)(long)eps[i])) != 0)
				die("pthread_create");
		}
	}
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		pthread_t t;
		int fd = accept4(l, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE)
				continue;
			die("accept4");
		}
		if (use_epoll) {
			struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
			if (epoll_ctl(eps[next], EPOLL_CTL_ADD, fd, &ev) < 0)
				die("epoll_ctl");
			next = (next + 1) % nep;
		} else if ((errno = pthread_create(&t, &attr, serve_conn, (void *)(long)fd)) != 0) {
			close(fd); /* out of threads: this client sees its connection close */
		}
	}
}
