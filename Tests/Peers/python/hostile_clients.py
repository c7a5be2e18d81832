"""Hostile TLS clients for swift-mtls's fault tests: an outside TLS stack (Python's ssl on OpenSSL)
misbehaving at the moments that once killed our servers.

usage: hostile_clients.py CA CERT KEY PORT MODE COUNT
modes:
  storm        COUNT connections, each ending one of four ways in turn: request then close without
               reading; request then RST; request, close_notify, then RST at once; a request written
               from a second thread while the main thread reads a little and closes.
  slow-header  one connection that sends a request head one byte (one TLS record) every 200 ms;
               prints how many seconds passed before the server closed it.
  trickle      one connection that, after the handshake, sends a TLS record header announcing 1,000
               bytes and then one raw byte every 200 ms; prints the seconds until the server closed it.
Exit status 0 when the run went as described (each connection may fail: that is the point).
"""
import socket, ssl, struct, sys, threading, time

ca, cert, key, port, mode, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
context = ssl.create_default_context(cafile=ca)
context.load_cert_chain(cert, key)
request = b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n"


def connect():
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return raw, context.wrap_socket(raw, server_hostname="localhost")


def reset(tls):
    tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    tls.close()


def storm():
    handshakes = 0
    for index in range(count):
        try:
            way = index % 4
            if way == 3:
                write_while_reading(*bio_connect())
                handshakes += 1
                continue
            raw, tls = connect()
            handshakes += 1
            if way == 0:
                tls.sendall(request * 20)
                tls.close()
            elif way == 1:
                tls.sendall(request * 20)
                reset(tls)
            elif way == 2:
                tls.sendall(request)
                tls.setblocking(False)
                try:
                    tls.unwrap()  # sends close_notify; non-blocking, so it does not wait for the peer's
                except (ssl.SSLError, OSError):
                    pass
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                raw.close()
        except (ssl.SSLError, OSError):
            pass
    print(f"storm: {handshakes} of {count} handshakes completed")


def bio_connect():
    """A TLS client over memory BIOs: the socket carries ciphertext we move by hand, so a second thread
    can write records while the SSL object stays in one thread (OpenSSL's SSL objects are not safe to
    read and write from two threads at once: CPython's ssl module then corrupts its own heap)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            raw.sendall(outgoing.read())
            data = raw.recv(65536)
            if not data:
                raise ConnectionResetError("the server closed during the handshake")
            incoming.write(data)
    raw.sendall(outgoing.read())
    return raw, tls, incoming, outgoing


def write_while_reading(raw, tls, incoming, outgoing):
    """Fifty requests written by a second thread while the main thread reads a little of the answer,
    then FIN both ways under the writer's feet: the server is still writing when its peer goes."""
    tls.write(request * 50)
    ciphertext = outgoing.read()  # encrypted here; the writer only moves bytes
    writer = threading.Thread(target=lambda: _ignore(lambda: raw.sendall(ciphertext)))
    writer.start()
    try:
        while True:
            try:
                tls.read(10)
                break
            except ssl.SSLWantReadError:
                data = raw.recv(65536)
                if not data:
                    break
                incoming.write(data)
    except (ssl.SSLError, OSError):
        pass
    _ignore(lambda: raw.shutdown(socket.SHUT_RDWR))
    writer.join()
    raw.close()


def _ignore(action):
    try:
        action()
    except (ssl.SSLError, OSError, ValueError):
        pass


def wait_closed(sock, send_one, interval=0.2, limit=15.0):
    started = time.monotonic()
    while time.monotonic() - started < limit:
        try:
            send_one()
        except (ssl.SSLError, OSError):
            break
        sock.settimeout(interval)
        try:
            if sock.recv(65536) == b"":
                break
        except socket.timeout:
            pass
        except (ssl.SSLError, OSError):
            break
    print(f"closed after {time.monotonic() - started:.2f} s")


def slow_header():
    raw, tls = connect()
    remaining = list(request)

    def one():
        if remaining:
            tls.sendall(bytes([remaining.pop(0)]))
    wait_closed(tls, one)


def trickle():
    raw, tls = connect()
    raw_socket = socket.socket(fileno=tls.detach())  # the TLS layer is done: raw bytes from here
    raw_socket.sendall(bytes([0x17, 0x03, 0x03, 0x03, 0xE8]))
    wait_closed(raw_socket, lambda: raw_socket.sendall(b"\0"))


{"storm": storm, "slow-header": slow_header, "trickle": trickle}[mode]()
