/* testutil.h: the little test framework of the C client's tests. */
#ifndef SF_TESTUTIL_H
#define SF_TESTUTIL_H

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int t_checks, t_failures, t_tests, t_failed_tests;
static const char *t_name;

#define CHECK(cond, ...)                                                        \
	do {                                                                    \
		t_checks++;                                                     \
		if (!(cond)) {                                                  \
			t_failures++;                                           \
			fprintf(stderr, "FAIL %s: %s:%d: %s: ", t_name, __FILE__, \
			        __LINE__, #cond);                               \
			fprintf(stderr, __VA_ARGS__);                           \
			fputc('\n', stderr);                                    \
		}                                                               \
	} while (0)

/* RUN runs one test function and reports it. */
#define RUN(fn)                                                                 \
	do {                                                                    \
		int before_ = t_failures;                                       \
		t_name = #fn;                                                   \
		t_tests++;                                                      \
		fn();                                                           \
		if (t_failures != before_)                                      \
			t_failed_tests++;                                       \
		fprintf(stderr, "%s %s\n", t_failures == before_ ? "ok  " : "FAIL", #fn); \
	} while (0)

static inline int t_report(const char *prog)
{
	fprintf(stderr, "%s: %d tests, %d checks, %d failed checks in %d tests\n",
	        prog, t_tests, t_checks, t_failures, t_failed_tests);
	return t_failures == 0 ? 0 : 1;
}

/* fd_count counts this process's open descriptors, the one used to
 * count excluded. Under valgrind /proc/self/fd also lists valgrind's
 * own (above its reserved limit): they are counted only below 1024. */
static inline int fd_count(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		if (atoi(e->d_name) == dirfd(d) || atoi(e->d_name) >= 1024)
			continue;
		n++;
	}
	closedir(d);
	return n;
}

static inline int is_cloexec(int fd)
{
	int f = fcntl(fd, F_GETFD);
	return f >= 0 && (f & FD_CLOEXEC) != 0;
}

static inline int is_nonblocking(int fd)
{
	int f = fcntl(fd, F_GETFL);
	return f >= 0 && (f & O_NONBLOCK) != 0;
}

#endif
