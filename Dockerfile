# syntax=docker/dockerfile:1
#
# sockfactoryd and the sockfactory CLI in a minimal image: two static
# binaries on scratch, no shell, running as uid 64999 with
# CAP_NET_BIND_SERVICE as its only capability.
#
#   docker build -t sockfactory:dev --build-arg VERSION=v0.1.0 .
#   docker run -d --name sockfactoryd -v sockfactory:/run/sockfactory sockfactory:dev
#   docker logs sockfactoryd       # msg=privileges ... needed_capabilities_held=[CAP_NET_BIND_SERVICE]
#   docker exec sockfactoryd sockfactory status
#
# Needs BuildKit (docker build's builder since Docker 23) for the heredoc
# below and because its COPY keeps the file capability set in the build
# stage. contrib/kubernetes/README.md says how the image is run in
# Kubernetes; contrib/kubernetes/validate checks this file's final stage.
#
# Privileges. A daemon started as non-root does not drop anything itself
# ([daemon] user needs root): it simply runs with what it was given, and
# logs at start every rule it cannot honour with that (docs/security.md).
# The only privileged thing the default configuration asks for is binding
# ports below 1024 (on loopback), so CAP_NET_BIND_SERVICE is all it needs.
# Container runtimes do not pass an added capability on to a non-root
# process (no ambient capabilities), so the binary carries it as a file
# capability (docs/security.md, "A file capability"). Consequences:
#   - the container's bounding set must contain NET_BIND_SERVICE (Docker's
#     default set does; with --cap-drop ALL add --cap-add NET_BIND_SERVICE,
#     or the kernel refuses to run sockfactoryd: "operation not permitted");
#   - no_new_privs (--security-opt no-new-privileges, Kubernetes'
#     allowPrivilegeEscalation: false) makes the kernel ignore the file
#     capability: the daemon still runs, and logs that rules granting ports
#     below 1024 cannot be honoured.
# Rules that cover other network namespaces (CAP_SYS_ADMIN), callers'
# namespaces (CAP_SYS_PTRACE, CAP_KILL) or the transparent option
# (CAP_NET_ADMIN) need more than this image grants.

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
RUN apt-get update \
	&& DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libcap2-bin \
	&& rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# VERSION, when given, is what --version prints (internal/version).
ARG VERSION=
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false \
	-ldflags "-s -w ${VERSION:+-X github.com/sockfactory/sockfactory/internal/version.Version=$VERSION}" \
	-o /out/ ./cmd/sockfactoryd ./cmd/sockfactory
RUN setcap cap_net_bind_service=+ep /out/sockfactoryd \
	&& getcap /out/sockfactoryd | grep -q cap_net_bind_service
# The account, for names in logs and for rules that name it; rules may
# give the number instead.
RUN mkdir -p /rootfs/etc /rootfs/run/sockfactory \
	&& echo 'sockfactory:x:64999:64999:sockfactory daemon:/nonexistent:/sbin/nologin' >/rootfs/etc/passwd \
	&& echo 'sockfactory:x:64999:' >/rootfs/etc/group

FROM scratch
COPY --from=build /rootfs/etc/passwd /rootfs/etc/group /etc/
# Root-owned and not rewritten after the build stage's setcap: a chown
# would clear the file capability.
COPY --from=build /out/sockfactoryd /out/sockfactory /usr/local/bin/
# The socket directory must belong to the daemon's user (or root, but then
# a non-root daemon could not create its socket there) and be writable by
# no one else.
COPY --from=build --chown=64999:64999 --chmod=0755 /rootfs/run/sockfactory /run/sockfactory
# The default configuration: root and the daemon's own user may connect to
# and bind loopback, as the built-in default allows, with the socket at
# its usual place. Replace it by mounting a file (or a Kubernetes
# ConfigMap) over /etc/sockfactory; check one with
# sockfactoryd -check-config FILE.
COPY <<EOT /etc/sockfactory/sockfactoryd.toml
[daemon]
socket = "/run/sockfactory/sockfactory.sock"
socket_mode = "0660"

[[rule]]
name = "loopback"
users = [0, 64999]
connect = ["127.0.0.0/8:*", "[::1]:*", "localhost:*"]
bind = ["*:127.0.0.0/8:*", "*:[::1]:*"]
EOT
# For the CLI run in this container (probes, docker exec), and for a
# configuration that names no socket.
ENV SOCKFACTORY_SOCKET=/run/sockfactory/sockfactory.sock
VOLUME /run/sockfactory
USER 64999:64999
# No shell: the CLI itself asks the daemon over its socket.
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s CMD ["/usr/local/bin/sockfactory", "status"]
# SIGTERM stops it cleanly; SIGHUP reloads the configuration.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/sockfactoryd"]
CMD ["-config", "/etc/sockfactory/sockfactoryd.toml"]
