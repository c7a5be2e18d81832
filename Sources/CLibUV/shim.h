#ifndef SWIFT_MTLS_CLIBUV_SHIM_H
#define SWIFT_MTLS_CLIBUV_SHIM_H
// libuv through Swift: its "subclass" structs are cast to their base types in C, where the
// layout guarantee lives, rather than with pointer reinterpretation in Swift.
#include <uv.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <sys/resource.h>
#include <errno.h>
#include <unistd.h>
#include <malloc.h>

static inline uv_handle_t *mtls_tcp_handle(uv_tcp_t *tcp) { return (uv_handle_t *)tcp; }
static inline uv_stream_t *mtls_tcp_stream(uv_tcp_t *tcp) { return (uv_stream_t *)tcp; }
static inline uv_handle_t *mtls_pipe_handle(uv_pipe_t *pipe) { return (uv_handle_t *)pipe; }
static inline uv_stream_t *mtls_pipe_stream(uv_pipe_t *pipe) { return (uv_stream_t *)pipe; }
static inline uv_handle_t *mtls_timer_handle(uv_timer_t *timer) { return (uv_handle_t *)timer; }
static inline uv_handle_t *mtls_async_handle(uv_async_t *async) { return (uv_handle_t *)async; }
static inline uv_handle_t *mtls_stream_handle(uv_stream_t *stream) { return (uv_handle_t *)stream; }

/// A listening socket, or -errno. With `reuse_port`, several loops of one server each bind one
/// (SO_REUSEPORT) and the kernel spreads new connections across them.
static inline int mtls_listener(const struct sockaddr *address, socklen_t length, int backlog, int reuse_port) {
    int fd = socket(address->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int on = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
        (reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0)) {
        int error = errno; close(fd); return -error;
    }
    if (address->sa_family == AF_INET6) {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
    }
    if (bind(fd, address, length) != 0 || listen(fd, backlog) != 0) {
        int error = errno; close(fd); return -error;
    }
    return fd;
}

/// 0 when nobody listens on `address`, else -errno (-EADDRINUSE): a bind without SO_REUSEPORT,
/// undone at once. SO_REUSEPORT would let a second process join another's listeners silently.
static inline int mtls_probe_port_free(const struct sockaddr *address, socklen_t length) {
    int fd = socket(address->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (address->sa_family == AF_INET6) {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
    }
    int status = bind(fd, address, length) == 0 ? 0 : -errno;
    close(fd);
    return status;
}
#endif
