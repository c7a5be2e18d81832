#!/usr/bin/env python3
"""Attributes the perf samples of one server process to cost categories, as a Markdown table.

Usage: Benchmarks/perf-attribution.py PERF_SCRIPT_OUTPUT [SERVER_MICROSECONDS_PER_HANDSHAKE]
The input is `perf script` output of `perf record --call-graph dwarf -p SERVER_PID`; given the server's CPU
per handshake (from `mtls bench handshakes --server-pid`), each share is also shown in µs per handshake.

Each sample goes to the first matching category, looking at the whole call chain, and libc frames
(memcpy, strcmp, malloc, locks) count for whoever called them. Debian's libcrypto has no symbols for its
static functions, so OpenSSL's share is split by the exported functions on the chain (OSSL_DECODER_*,
EC_POINT_mul, X509_verify_cert, ...). GnuTLS's share is split by library: Nettle, Hogweed and GMP do its
cryptography, libtasn1 its ASN.1 decoding, libgnutls the rest. Two more lines count time in malloc/free and in pthread locks,
whoever the caller."""
import collections, re, sys

def frames_of(block):
    lines = [l.strip() for l in block.strip().split('\n') if l.strip()]
    out = []
    for l in lines[1:]:
        m = re.match(r'([0-9a-f]+)\s+(.*)\s+\((.*)\)$', l)
        if m:
            out.append((m.group(2).split('+0x')[0], m.group(3).split('/')[-1]))
    return out

LIBC = ('libc.so', 'ld-linux', '[vdso]', 'libm.so', 'inlined')
ALLOC = re.compile(r'malloc|_int_free|cfree|^free$|unlink_chunk|tcache|realloc|calloc|consolidate|sysmalloc')

def owner(frames):
    """The DSO-level owner of a sample: the first frame that is not libc."""
    for name, dso in frames:
        if not dso.startswith(LIBC):
            return name, dso
    return frames[0]

def category(frames):
    names = [f[0] for f in frames]
    has = lambda *keys: any(any(k in n for k in keys) for n in names)
    name, dso = owner(frames)
    if frames[0][1].startswith('[kernel'):
        return 'kernel: syscalls, loopback TCP, scheduling'
    if dso.startswith(('libcrypto', 'libssl')):
        if has('d2i_SSL_SESSION', 'i2d_SSL_SESSION', 'tls_construct_new_session_ticket', 'EVP_EncryptUpdate'):
            return 'OpenSSL: session tickets'
        if has('OSSL_DECODER'):
            return 'OpenSSL: OSSL_DECODER (client certificate public key)'
        if has('EC_POINT_mul', 'EVP_DigestSignFinal', 'EVP_DigestVerifyFinal', 'EVP_PKEY_derive', 'EVP_PKEY_generate',
               'EVP_DigestSign', 'EVP_PKEY_keygen', 'ecp_nistz256', 'x25519', 'ossl_ecdsa'):
            return 'OpenSSL: crypto (ECDSA sign/verify, X25519, incl. set-up)'
        if has('X509_verify_cert'):
            return 'OpenSSL: chain verification, non-crypto part'
        return 'OpenSSL: other (state machine, records, key schedule, fetches, ASN.1)'
    if dso.startswith(('libnettle', 'libhogweed', 'libgmp')):
        return 'GnuTLS: crypto (Nettle, Hogweed, GMP)'
    if dso.startswith(('libgnutls', 'libtasn1', 'libp11-kit', 'libidn2', 'libunistring')):
        if has('gnutls_session_ticket', '_gnutls_encrypt_session_ticket', '_gnutls_decrypt_session_ticket',
               'gnutls_session_pack', 'gnutls_session_unpack', '_gnutls_session_pack', '_gnutls_session_unpack'):
            return 'GnuTLS: session tickets'
        if has('verify_crt', 'trust_list_verify'):
            return 'GnuTLS: chain verification, non-crypto part'
        if dso.startswith('libtasn1'):
            return 'GnuTLS: ASN.1 decoding (libtasn1)'
        return 'GnuTLS: other (state machine, records, key schedule, priorities)'
    if dso.startswith('libuv'):
        return 'libuv'
    if has('TLSBackendOpenSSL'):
        return 'Swift: OpenSSL backend (ours)'
    if has('TLSBackendGnuTLS'):
        return 'Swift: GnuTLS backend (ours)'
    if has('PeerIdentity'):
        return 'Swift: PeerIdentity (TLSContract)'
    if has('HTTPHello', 'HelloConnection', '4Apps'):
        return 'Swift: HTTP hello (Apps, HTTPHello)'
    if has('4Loop'):
        return 'Swift: Loop'
    return 'other (Swift runtime, Foundation, start-up)'

def main():
    blocks = open(sys.argv[1]).read().split('\n\n')
    per_handshake_us = float(sys.argv[2]) if len(sys.argv) > 2 else None
    counts = collections.Counter()
    allocator = locks = total = 0
    for block in blocks:
        frames = frames_of(block)
        if not frames:
            continue
        total += 1
        counts[category(frames)] += 1
        leaf = frames[0][0]
        if frames[0][1].startswith(LIBC) and ALLOC.search(leaf):
            allocator += 1
        if 'pthread_rwlock' in leaf or 'pthread_mutex' in leaf or 'CRYPTO_THREAD' in leaf:
            locks += 1
    def line(share, name):
        extra = f" {share * per_handshake_us:.0f} µs |" if per_handshake_us else ""
        print(f"| {name} | {share * 100:.1f} % |{extra}")
    print(f"{total} samples\n")
    print("| where | share |" + (" per handshake |" if per_handshake_us else ""))
    print("|---|---|" + ("---|" if per_handshake_us else ""))
    for name, count in counts.most_common():
        line(count / total, name)
    line(allocator / total, '(across all: malloc/free)')
    line(locks / total, '(across all: pthread locks)')

if __name__ == "__main__":
    main()
