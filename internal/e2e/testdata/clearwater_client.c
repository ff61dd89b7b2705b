/*
 * clearwater_client: a test client that does exactly what a Project
 * Clearwater socket factory client does (cpp-common's namespace_hop.cpp and
 * the factory's test client), so that the end-to-end tests prove unchanged
 * C/C++ clients work against sockfactoryd's compat listener.
 *
 * Usage: clearwater_client SOCKET HOST:PORT LINE
 *
 *   1. socket(AF_UNIX, SOCK_STREAM) and connect to SOCKET;
 *   2. ONE send() of HOST:PORT, with no terminator;
 *   3. recvmsg() into a 1-byte data buffer and a CMSG_SPACE(sizeof(int))
 *      control buffer, then walk the control headers for SOL_SOCKET /
 *      SCM_RIGHTS;
 *   4. on the received fd, with plain blocking send() and recv(): send LINE
 *      and read back as many bytes, then print them on stdout.
 *
 * Any failure prints "FAIL: ..." on stderr and exits non-zero; a daemon that
 * closes the connection without sending an fd gives "no fd received" and
 * exit status 3.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

static int fail(int code, const char *what)
{
	fprintf(stderr, "FAIL: %s: %s\n", what, errno ? strerror(errno) : "no error reported");
	return code;
}

/* recv_fd returns the fd from the first SCM_RIGHTS message, or -1. */
static int recv_fd(int sock, ssize_t *got)
{
	char data[1] = {0};
	struct iovec iov[1];
	char ctrl[CMSG_SPACE(sizeof(int))];
	struct msghdr msg;
	struct cmsghdr *cm;

	memset(ctrl, 0, sizeof(ctrl));
	memset(&msg, 0, sizeof(msg));
	iov[0].iov_base = data;
	iov[0].iov_len = sizeof(data);
	msg.msg_iov = iov;
	msg.msg_iovlen = 1;
	msg.msg_control = ctrl;
	msg.msg_controllen = sizeof(ctrl);

	*got = recvmsg(sock, &msg, 0);
	if (*got <= 0)
		return -1;
	for (cm = CMSG_FIRSTHDR(&msg); cm != NULL; cm = CMSG_NXTHDR(&msg, cm)) {
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
			int fd;
			memcpy(&fd, CMSG_DATA(cm), sizeof(fd));
			return fd;
		}
	}
	return -1;
}

int main(int argc, char **argv)
{
	struct sockaddr_un addr;
	const char *path, *target, *line;
	size_t len, done;
	ssize_t n, got;
	char *buf;
	int sock, fd;

	if (argc != 4) {
		fprintf(stderr, "usage: %s SOCKET HOST:PORT LINE\n", argv[0]);
		return 2;
	}
	path = argv[1];
	target = argv[2];
	line = argv[3];

	memset(&addr, 0, sizeof(addr));
	addr.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(addr.sun_path)) {
		fprintf(stderr, "FAIL: socket path too long: %s\n", path);
		return 2;
	}
	strcpy(addr.sun_path, path);

	sock = socket(AF_UNIX, SOCK_STREAM, 0);
	if (sock < 0)
		return fail(1, "socket");
	if (connect(sock, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		return fail(1, "connect to the socket factory");

	/* One send of host:port, no terminator, as the Clearwater clients do. */
	len = strlen(target);
	errno = 0;
	n = send(sock, target, len, 0);
	if (n < 0 || (size_t)n != len)
		return fail(1, "send of the target");

	errno = 0;
	fd = recv_fd(sock, &got);
	if (fd < 0) {
		if (got < 0)
			return fail(3, "no fd received: recvmsg");
		fprintf(stderr, "FAIL: no fd received (recvmsg returned %zd)\n", got);
		return 3;
	}
	close(sock);

	/* Plain blocking I/O on the received socket: a non-blocking socket
	 * would make recv fail with EAGAIN here. */
	for (done = 0, len = strlen(line); done < len; done += (size_t)n) {
		n = send(fd, line + done, len - done, 0);
		if (n < 0)
			return fail(4, "send on the received socket");
	}
	buf = malloc(len + 1);
	if (buf == NULL)
		return fail(1, "malloc");
	for (done = 0; done < len; done += (size_t)n) {
		errno = 0;
		n = recv(fd, buf + done, len - done, 0);
		if (n < 0)
			return fail(5, "recv on the received socket");
		if (n == 0) {
			fprintf(stderr, "FAIL: recv on the received socket: EOF after %zu of %zu bytes\n", done, len);
			return 5;
		}
	}
	buf[len] = '\0';
	fputs(buf, stdout);
	free(buf);
	close(fd);
	return 0;
}
