/*
 * driver.c: sfdriver, the C library's driver for the client behaviour
 * suite (internal/clientsuite/DRIVER.md): commands on stdin, one reply
 * line each on stdout, carried out with the library's public API only.
 */
#define _GNU_SOURCE
#include "../sockfactory.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_HANDLES 4096
#define MAX_WORDS 8

struct handle {
	int fd; /* -1 once closed */
	char token[SF_TOKEN_SIZE]; /* "" for a connected socket */
};

static struct handle handles[MAX_HANDLES];
static int nhandles; /* handles[1..nhandles] are assigned */
static sf_client client;
static int client_open;

static void reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void reply(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(stdout, fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
}

/* lib_err replies with the library's typed error: CODE from sf_code,
 * ERRNO the daemon's (or for the library's own errors the errno). */
static void lib_err(int saved_errno)
{
	sf_code code = sf_last_code(&client);
	const char *name;
	int e;

	switch (code) {
	case SF_UNKNOWN_CODE:
		name = sf_last_code_name(&client); /* the daemon's code, verbatim */
		e = sf_last_errno(&client);
		break;
	case SF_UNAVAILABLE:
	case SF_LOCAL:
		name = sf_code_name(code);
		e = saved_errno;
		break;
	case SF_PROTOCOL:
		name = sf_code_name(code);
		e = 0;
		break;
	default:
		name = sf_code_name(code);
		e = sf_last_errno(&client);
	}
	fprintf(stderr, "sfdriver: %s: %s\n", name, sf_last_message(&client));
	reply("err %s %d", name, e);
}

/* ensure_client opens the client at the first command that needs it
 * (and again after a failed open). */
static int ensure_client(void)
{
	if (client_open)
		return 0;
	if (sf_open(&client, NULL) != 0) {
		int e = errno;
		lib_err(e);
		sf_close(&client);
		return -1;
	}
	client_open = 1;
	return 0;
}

static int new_handle(int fd, const char *token)
{
	if (nhandles + 1 >= MAX_HANDLES) {
		close(fd);
		return -1;
	}
	nhandles++;
	handles[nhandles].fd = fd;
	snprintf(handles[nhandles].token, sizeof handles[nhandles].token, "%s", token ? token : "");
	return nhandles;
}

static struct handle *get_handle(const char *word)
{
	char *end;
	long h = strtol(word, &end, 10);

	if (*word == '\0' || *end != '\0' || h < 1 || h > nhandles || handles[h].fd < 0)
		return NULL;
	return &handles[h];
}

static int parse_share(const char *w, sf_share *out)
{
	if (strcmp(w, "-") == 0)
		*out = SF_SHARE_DEFAULT;
	else if (strcmp(w, "none") == 0)
		*out = SF_SHARE_NONE;
	else if (strcmp(w, "sameapp") == 0 || strcmp(w, "same-name") == 0)
		*out = SF_SHARE_SAME_NAME;
	else if (strcmp(w, "any") == 0)
		*out = SF_SHARE_ANY;
	else
		return -1;
	return 0;
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.' && atoi(e->d_name) != dirfd(d))
			n++;
	closedir(d);
	return n;
}

static void sys_err(void)
{
	int e = errno;
	fprintf(stderr, "sfdriver: %s\n", strerror(e));
	reply("err local %d", e);
}

static void cmd_sockname(struct handle *h)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	char ip[INET6_ADDRSTRLEN];

	if (getsockname(h->fd, (struct sockaddr *)&ss, &len) != 0)
		return sys_err();
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
		inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof ip);
		reply("ok %s:%u", ip, ntohs(sin->sin_port));
	} else if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
		inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof ip);
		reply("ok [%s]:%u", ip, ntohs(sin6->sin6_port));
	} else {
		errno = EAFNOSUPPORT;
		sys_err();
	}
}

static void cmd_fdinfo(struct handle *h)
{
	int type = 0, fl, fdf;
	socklen_t len = sizeof type;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;

	if (getsockopt(h->fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 ||
	    getsockname(h->fd, (struct sockaddr *)&ss, &sl) != 0 ||
	    (fl = fcntl(h->fd, F_GETFL)) < 0 || (fdf = fcntl(h->fd, F_GETFD)) < 0)
		return sys_err();
	reply("ok %s %s %s %s",
	      type == SOCK_STREAM ? "stream" : type == SOCK_DGRAM ? "dgram" : "other",
	      ss.ss_family == AF_INET ? "inet" : ss.ss_family == AF_INET6 ? "inet6" : "other",
	      (fl & O_NONBLOCK) ? "nonblocking" : "blocking",
	      (fdf & FD_CLOEXEC) ? "cloexec" : "nocloexec");
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t k = write(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

static void cmd_echo(struct handle *h, const char *data)
{
	size_t n = strlen(data), got = 0;
	char *buf;

	if (write_all(h->fd, data, n) != 0)
		return sys_err();
	buf = malloc(n + 1);
	if (buf == NULL)
		return sys_err();
	while (got < n) {
		ssize_t k = read(h->fd, buf + got, n - got);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			if (k == 0)
				errno = ECONNRESET;
			free(buf);
			return sys_err();
		}
		got += (size_t)k;
	}
	buf[n] = '\0';
	reply("ok %s", buf);
	free(buf);
}

static void cmd_serve(struct handle *h)
{
	char buf[64];
	size_t n = 0;
	int s;

	do {
		s = accept4(h->fd, NULL, NULL, SOCK_CLOEXEC);
	} while (s < 0 && errno == EINTR);
	if (s < 0)
		return sys_err();
	while (n < sizeof buf) {
		ssize_t k = read(s, buf + n, 1);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		n++;
		if (buf[n - 1] == '\n')
			break;
	}
	if (write_all(s, buf, n) != 0) {
		int e = errno;
		close(s);
		errno = e;
		return sys_err();
	}
	close(s);
	reply("ok");
}

/* run carries out one command line; returns 1 after quit. */
static int run(char *line)
{
	char *w[MAX_WORDS + 1];
	int n = 0, fd, e;
	char *p = line, *sp;
	struct handle *h;
	sf_binding b;
	sf_share share;
	char token[SF_TOKEN_SIZE];

	while (n <= MAX_WORDS) {
		w[n++] = p;
		sp = strchr(p, ' ');
		if (sp == NULL)
			break;
		*sp = '\0';
		p = sp + 1;
	}
	if (n > MAX_WORDS) {
		reply("bad too-many-words");
		return 0;
	}
#define WANT(k)                                              \
	do {                                                 \
		if (n != (k) + 1) {                          \
			reply("bad %s-needs-%d-words", w[0], k); \
			return 0;                            \
		}                                            \
	} while (0)
#define HANDLE(i)                                            \
	do {                                                 \
		if ((h = get_handle(w[i])) == NULL) {        \
			reply("bad handle");                 \
			return 0;                            \
		}                                            \
	} while (0)

	if (strcmp(w[0], "connect") == 0) {
		WANT(2);
		if (ensure_client() != 0)
			return 0;
		fd = sf_connect(&client, w[1], w[2], 0);
		if (fd < 0)
			return lib_err(errno), 0;
		reply("ok %d", new_handle(fd, NULL));
	} else if (strcmp(w[0], "bind") == 0 || strcmp(w[0], "bindtoken") == 0) {
		WANT(4);
		if (parse_share(w[3], &share) != 0) {
			reply("bad share");
			return 0;
		}
		if (ensure_client() != 0)
			return 0;
		if (w[0][4] == '\0') {
			fd = sf_bind(&client, w[1], w[2], share, strcmp(w[4], "-") == 0 ? NULL : w[4], &b);
			if (fd < 0)
				return lib_err(errno), 0;
			reply("ok %d %s", new_handle(fd, b.token), b.token);
		} else {
			if (sf_bind_token(&client, w[1], w[2], share, strcmp(w[4], "-") == 0 ? NULL : w[4],
			                  token, sizeof token, NULL) != 0)
				return lib_err(errno), 0;
			reply("ok %s", token);
		}
	} else if (strcmp(w[0], "pickup") == 0) {
		WANT(1);
		if (ensure_client() != 0)
			return 0;
		fd = sf_pickup(&client, w[1], &b);
		if (fd < 0)
			return lib_err(errno), 0;
		reply("ok %d %s", new_handle(fd, b.token), b.token);
	} else if (strcmp(w[0], "release") == 0) {
		WANT(1);
		if (ensure_client() != 0)
			return 0;
		if (sf_release(&client, w[1]) != 0)
			return lib_err(errno), 0;
		reply("ok");
	} else if (strcmp(w[0], "closefd") == 0) {
		WANT(1);
		HANDLE(1);
		close(h->fd);
		h->fd = -1;
		reply("ok");
	} else if (strcmp(w[0], "close") == 0) {
		WANT(1);
		HANDLE(1);
		if (h->token[0] != '\0') {
			if (ensure_client() != 0) {
				close(h->fd);
				h->fd = -1;
				return 0;
			}
			if (sf_release(&client, h->token) != 0) {
				e = errno;
				close(h->fd);
				h->fd = -1;
				lib_err(e);
				return 0;
			}
		}
		close(h->fd);
		h->fd = -1;
		reply("ok");
	} else if (strcmp(w[0], "sockname") == 0) {
		WANT(1);
		HANDLE(1);
		cmd_sockname(h);
	} else if (strcmp(w[0], "fdinfo") == 0) {
		WANT(1);
		HANDLE(1);
		cmd_fdinfo(h);
	} else if (strcmp(w[0], "echo") == 0) {
		WANT(2);
		HANDLE(1);
		cmd_echo(h, w[2]);
	} else if (strcmp(w[0], "serve") == 0) {
		WANT(1);
		HANDLE(1);
		cmd_serve(h);
	} else if (strcmp(w[0], "status") == 0) {
		WANT(0);
		if (ensure_client() != 0)
			return 0;
		if ((n = sf_status(&client, NULL, 0)) < 0)
			return lib_err(errno), 0;
		reply("ok %d", n);
	} else if (strcmp(w[0], "reconnect") == 0) {
		WANT(0);
		if (client_open) {
			sf_close(&client);
			client_open = 0;
		}
		if (ensure_client() != 0)
			return 0;
		reply("ok");
	} else if (strcmp(w[0], "fds") == 0) {
		WANT(0);
		reply("ok %d", count_fds());
	} else if (strcmp(w[0], "quit") == 0) {
		return 1;
	} else {
		reply("bad unknown-command");
	}
	return 0;
}

int main(void)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int i;

	signal(SIGPIPE, SIG_IGN);
	while ((n = getline(&line, &cap, stdin)) >= 0) {
		if (n > 0 && line[n - 1] == '\n')
			line[--n] = '\0';
		if (n > 0 && line[n - 1] == '\r')
			line[--n] = '\0';
		if (run(line))
			break;
	}
	for (i = 1; i <= nhandles; i++)
		if (handles[i].fd >= 0)
			close(handles[i].fd);
	if (client_open)
		sf_close(&client);
	free(line);
	reply("ok");
	return 0;
}
