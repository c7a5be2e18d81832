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
static inline uv_handle_t *mtls_timer_handle(uv_timer_t *timer) { return (uv_handle_t *)timer; }
static inline uv_handle_t *mtls_async_handle(uv_async_t *async) { return (uv_handle_t *)async; }
static inline uv_handle_t *mtls_stream_handle(uv_stream_t *stream) { return (uv_handle_t *)stream; }

/// A listening socket that several loops can each bind (SO_REUSEPORT): the kernel spreads new
/// connections across them. Returns the fd or -errno.
static inline int mtls_reuseport_listener(const struct sockaddr *address, socklen_t length, int backlog) {
    int fd = socket(address->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int on = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0) {
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
#endif
