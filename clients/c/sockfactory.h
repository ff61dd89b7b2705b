/*
 * sockfactory.h: a C client of sockfactoryd, protocol version 1
 * (docs/protocol.md).
 *
 * The daemon creates sockets (connected, or bound and listening) for its
 * callers and passes them over a UNIX SOCK_SEQPACKET connection. This
 * library speaks that protocol with libc alone.
 *
 * Errors: every call returns -1 on failure with errno set, and leaves the
 * failure's class in the client: sf_last_code() (an sf_code),
 * sf_last_errno() (the daemon's errno, 0 when it sent none),
 * sf_last_message() (the daemon's words, or the library's) and
 * sf_last_code_name() (the daemon's code verbatim, also for codes this
 * library does not know). A successful call sets the code to SF_OK.
 * errno after a daemon error is the daemon's errno when it sent one, else
 * one close to the code (EACCES for denied, ENOENT for not_found, ...; see
 * sf_strerror). After a protocol error it is EPROTO; after SF_UNAVAILABLE
 * the errno of the failed system call (ECONNRESET when the daemon closed
 * the connection, ETIMEDOUT when no reply came in time).
 *
 * Descriptors: every descriptor returned is the caller's to close. It is
 * close-on-exec (received with MSG_CMSG_CLOEXEC; clear FD_CLOEXEC to pass it
 * on to a program you exec) and blocking, as the daemon sends it. No call
 * ever leaves a descriptor it received open unless it returns it: on any
 * error every descriptor that arrived with the reply has been closed.
 *
 * Thread safety: an sf_client is not safe for concurrent use. Use one
 * sf_client per thread, or serialise every call on one client (from
 * sf_open to sf_close, the sf_last_* accessors included) with a mutex of
 * your own. Different sf_client values are independent: the library keeps
 * no global state, so any number of threads may each use their own. A
 * client keeps one request in flight at a time.
 *
 * Fork: a child inherits the client's daemon connection (close-on-exec:
 * an exec drops it). A child must make no requests on an inherited client;
 * it may open its own. sf_close in the child closes only the child's copy:
 * the connection, and the references it holds, live on in the parent.
 */
#ifndef SOCKFACTORY_H
#define SOCKFACTORY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SF_VERSION_MAJOR 0
#define SF_VERSION_MINOR 1

/* Protocol limits (docs/protocol.md sections 3 and 9). */
#define SF_MAX_MESSAGE 65536
#define SF_MAX_FDS 16

/* The size of a buffer that holds a token or reclaim secret: 32 lowercase
 * hex digits and a NUL. */
#define SF_TOKEN_SIZE 33
/* Room for "ip:port", IPv6 in brackets, and a NUL. */
#define SF_ADDR_SIZE 64
/* Room for the daemon's error message: it cuts messages to 1024 bytes
 * and appends an ellipsis. Longer ones are cut here too. */
#define SF_MESSAGE_SIZE 1100
/* Room for an error code the daemon sends (cut if longer). */
#define SF_CODE_SIZE 48

/* The default socket path of the system daemon. */
#define SF_SYSTEM_SOCKET "/run/sockfactory/sockfactory.sock"
/* The environment variable that names the daemon's socket. */
#define SF_ENV_SOCKET "SOCKFACTORY_SOCKET"

/* The class of a call's outcome: one value per error code of the
 * protocol (section 11), and the library's own. */
typedef enum sf_code {
	SF_OK = 0,
	SF_INVALID_REQUEST,     /* "invalid_request" */
	SF_UNSUPPORTED_VERSION, /* "unsupported_version" */
	SF_DENIED,              /* "denied" */
	SF_RESOLVE_FAILED,      /* "resolve_failed" */
	SF_CONNECT_FAILED,      /* "connect_failed" (with the errno) */
	SF_TIMEOUT,             /* "timeout" */
	SF_LIMIT_EXCEEDED,      /* "limit_exceeded" */
	SF_INTERNAL,            /* "internal" */
	SF_SHARE_CONFLICT,      /* "share_conflict" */
	SF_NOT_FOUND,           /* "not_found" */
	SF_BIND_FAILED,         /* "bind_failed" (with the errno) */
	/* The daemon could not be reached, or the connection broke (or no
	 * reply came in time) before the reply: the request may or may not
	 * have been carried out; any socket it produced is closed. */
	SF_UNAVAILABLE,
	/* The daemon's reply broke the protocol. */
	SF_PROTOCOL,
	/* The daemon sent an error code this library does not know: a
	 * failure of the request; sf_last_code_name() has the code. */
	SF_UNKNOWN_CODE,
	/* Not the daemon's: a bad argument (EINVAL), a buffer too small
	 * (ERANGE), no memory (ENOMEM), a closed client (EBADF). */
	SF_LOCAL
} sf_code;

/* A bound socket's share mode (section 7.2). */
typedef enum sf_share {
	SF_SHARE_DEFAULT = 0, /* send none: the daemon's default, "none" */
	SF_SHARE_NONE,        /* nobody else may hold the socket */
	SF_SHARE_SAME_NAME,   /* holders with the same share name may */
	SF_SHARE_ANY          /* anyone whose share mode allows */
} sf_share;

/* What a bind, token-only bind or pickup result says. */
typedef struct sf_binding {
	char token[SF_TOKEN_SIZE];   /* the reference's token */
	char reclaim[SF_TOKEN_SIZE]; /* its reclaim secret; "" when none */
	char local[SF_ADDR_SIZE];    /* the bound address, the real port */
	char network[8];             /* "tcp" or "udp" */
	int64_t expires_ms;          /* token-only bind: time left to pick up */
	int shared;                  /* 1 when the socket already existed */
} sf_binding;

/* A client: one connection to the daemon. Caller-owned: declare one (on
 * the stack, in a struct, anywhere) and pass it to sf_open. Its members
 * are private; use the functions. */
typedef struct sf_client {
	int fd;                 /* the daemon connection, -1 when none */
	int open;               /* 1 between sf_open and sf_close */
	uint64_t next_id;       /* the last request id sent */
	int reply_timeout_ms;   /* bound on the wait for each reply */
	sf_code code;
	int daemon_errno;
	char code_name[SF_CODE_SIZE];
	char message[SF_MESSAGE_SIZE];
	char path[108];         /* sizeof(sun_path) */
	char app[65];           /* the app name, declared again on reconnect */
	char *buf;              /* 2 * SF_MAX_MESSAGE bytes: reply, request */
} sf_client;

/* Opens a client: connects to the daemon's socket at path, or, when path
 * is NULL or "", at the default path: $SOCKFACTORY_SOCKET if set; else
 * the system socket /run/sockfactory/sockfactory.sock if it exists or
 * this process runs as root; else, for a non-root user, the per-user
 * socket ($XDG_RUNTIME_DIR/sockfactory/sockfactory.sock, or
 * $TMPDIR/sockfactory-UID/sockfactory.sock with /tmp for an unset TMPDIR)
 * if it exists in a directory of this user's that no one else may write;
 * else the system socket. Returns 0, or -1 with errno set and the code
 * SF_UNAVAILABLE (SF_LOCAL for a path too long). Even on failure the
 * client must be closed with sf_close, and its sf_last_* calls work.
 * After the connection breaks, the next request connects again to the
 * same path (the references the old connection held are gone). */
int sf_open(sf_client *c, const char *path);

/* Closes the daemon connection, which releases every reference it holds,
 * and frees what sf_open allocated. Descriptors already returned stay
 * open. Safe to call twice. Returns 0. */
int sf_close(sf_client *c);

/* Writes the default socket path (see sf_open) into buf. Returns 0, or -1
 * with errno ERANGE if it does not fit. */
int sf_default_path(char *buf, size_t size);

/* Bounds the wait for each reply (milliseconds, > 0; default 60000). A
 * connect waits at least its timeout_ms and 5 seconds more. When no reply
 * comes in time the call fails with SF_UNAVAILABLE, errno ETIMEDOUT, and
 * the connection is closed (so that a late reply and its socket are
 * dropped by the kernel). */
void sf_set_reply_timeout(sf_client *c, int ms);

/* Declares this program's app name (1 to 64 printable ASCII characters
 * without spaces): the default share name of the binds that follow on
 * this connection, shown in status. Returns 0 or -1. The client declares
 * it again first thing on every new connection it makes. */
int sf_hello(sf_client *c, const char *app);

/* Asks for a socket connected to address ("host:port", IPv6 in
 * brackets) on network ("tcp", "tcp4", "tcp6", "udp", "udp4", "udp6").
 * timeout_ms > 0 bounds the daemon's work; 0 means the daemon's limit.
 * Returns the descriptor, or -1. */
int sf_connect(sf_client *c, const char *network, const char *address,
               int timeout_ms);

/* sf_connect with a network namespace (NULL or "" for the daemon's own,
 * "caller", or a name under the daemon's [netns] dir). */
int sf_connect_netns(sf_client *c, const char *network, const char *address,
                     int timeout_ms, const char *netns);

/* Asks for a socket bound to address ("host:port" with a numeric host,
 * empty host for all addresses, port 0 for a free one) on network; a TCP
 * socket comes listening. share is the share mode, name the share name
 * (NULL or "": the connection's app name). Returns the descriptor and, if
 * out is not NULL, fills it in; or -1. The reference is held by this
 * client's connection until sf_release or sf_close; closing the
 * descriptor does not release it. */
int sf_bind(sf_client *c, const char *network, const char *address,
            sf_share share, const char *name, sf_binding *out);

/* A token-only bind: the daemon creates (or shares) the socket and keeps
 * it for a pending token, which any connection granted the address may
 * exchange for the socket with sf_pickup, once, before it expires.
 * Writes the token into token (token_size at least SF_TOKEN_SIZE; ERANGE
 * otherwise, before anything is sent) and, if out is not NULL, the whole
 * result into out. Returns 0, or -1. */
int sf_bind_token(sf_client *c, const char *network, const char *address,
                  sf_share share, const char *name, char *token,
                  size_t token_size, sf_binding *out);

/* Exchanges a token from a token-only bind for the socket; the reference
 * is then held by this client's connection. Returns the descriptor and,
 * if out is not NULL, fills it in; or -1. */
int sf_pickup(sf_client *c, const char *token, sf_binding *out);

/* Releases the reference token names (held by this connection, or a
 * pending token it asked for). Returns 0, or -1. Descriptors already
 * received stay open. */
int sf_release(sf_client *c, const char *token);

/* Asks for the daemon's status (section 7.8). Writes the raw JSON of the
 * reply's "status" object, NUL-terminated, into buf when buf is not NULL
 * (ERANGE if it does not fit, after the request: the count is then still
 * unknown). Returns the number of sockets listed, or -1. */
int sf_status(sf_client *c, char *buf, size_t size);

/* The outcome of the client's last call. */
sf_code sf_last_code(const sf_client *c);
/* The errno the daemon sent with its error, 0 when none. */
int sf_last_errno(const sf_client *c);
/* A description of the last failure: the daemon's message, or the
 * library's; "" after success. Valid until the next call on c. */
const char *sf_last_message(const sf_client *c);
/* The last error code as the protocol spells it ("denied", or the
 * unknown code verbatim; "unavailable", "protocol", "local" for the
 * library's own); "" after success. */
const char *sf_last_code_name(const sf_client *c);

/* The protocol's name of code: "denied", ..., "unavailable", "protocol",
 * "unknown", "local", "ok". */
const char *sf_code_name(sf_code code);
/* A short description of code, for people. Static; never NULL. */
const char *sf_strerror(sf_code code);

#ifdef __cplusplus
}
#endif

#endif
