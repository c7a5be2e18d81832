#!/usr/bin/env python3
"""Reconnects to an mTLS hello server, each time offering the session (ticket) the previous
connection received, and counts how many reconnects the server resumed.

An outside client (Python's ssl module, on the system OpenSSL), so that a bug shared by our client
and our server cannot hide itself. With TLS 1.3, each ticket is offered once: connection k offers
what connection k-1 received, and only that, as a client that follows RFC 8446 C.4 does. With
TLS 1.2, a session is offered again until the server replaces its ticket (RFC 5077 allows reuse).

Usage: Benchmarks/reconnect-resumption.py --pki DIR --port PORT [--connections 10] [--tls 1.3|1.2]
Exit status 0 when every reconnect was resumed, 1 otherwise.
"""
import argparse
import os
import socket
import ssl
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pki", required=True, help="a folder from `mtls pki init`")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server-name", default="localhost")
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--tls", choices=["1.2", "1.3"], default="1.3")
    args = parser.parse_args()

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    version = ssl.TLSVersion.TLSv1_3 if args.tls == "1.3" else ssl.TLSVersion.TLSv1_2
    context.minimum_version = context.maximum_version = version
    context.load_verify_locations(os.path.join(args.pki, "ca.pem"))
    context.load_cert_chain(os.path.join(args.pki, "client.pem"), os.path.join(args.pki, "client.key"))

    session = None
    offered = set()
    resumed = 0
    for index in range(args.connections):
        with socket.create_connection((args.host, args.port)) as raw:
            with context.wrap_socket(raw, server_hostname=args.server_name, session=session) as tls:
                tls.sendall(b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                response = b""
                while chunk := tls.recv(4096):
                    response += chunk
                if b"hello" not in response:
                    print(f"connection {index + 1}: unexpected answer {response[:80]!r}", file=sys.stderr)
                    return 1
                if index > 0 and tls.session_reused:
                    resumed += 1
                # Read after the response: a TLS 1.3 ticket arrives after the handshake, and the
                # connection's session is then the newest one it received.
                received = tls.session
                fresh = received is not None and received.has_ticket and received.id not in offered
                print(f"connection {index + 1}: resumed={tls.session_reused} new ticket={fresh}")
                if received is not None:
                    offered.add(received.id)
                session = received if fresh or args.tls == "1.2" else None
    print(f"{resumed} of {args.connections - 1} reconnects resumed")
    return 0 if resumed == args.connections - 1 else 1


if __name__ == "__main__":
    sys.exit(main())
