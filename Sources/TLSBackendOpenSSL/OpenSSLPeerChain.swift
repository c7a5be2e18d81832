internal import COpenSSL

/// The peer's certificate chain as DER, leaf first, as a handshake left it in an `SSL`. A client's
/// view of the chain starts with the leaf, a server's leaves it out: both come out the same here.
func peerCertificateChainDER(_ ssl: OpaquePointer) -> [[UInt8]] {
    guard let leaf = SSL_get0_peer_certificate(ssl), let leafDER = OpenSSLPEM.der(leaf) else { return [] }
    var chain = [leafDER]
    if let stack = SSL_get_peer_cert_chain(ssl) {
        for index in 0..<mtls_sk_X509_num(stack) {
            guard let certificate = mtls_sk_X509_value(stack, index), let der = OpenSSLPEM.der(certificate),
                  der != leafDER
            else { continue }
            chain.append(der)
        }
    }
    return chain
}

/// Server: the client's certificate chain as a ticket's session carries it, in the session's
/// ticket app data: each certificate's DER after its 4-byte big-endian length, leaf first.
///
/// A resumed connection reads the client's identity from here, never from a parsed certificate:
/// sessions behind TLS 1.3 tickets are kept without one (OpenSSLServerSessionStore), and TLS 1.2
/// tickets carry the leaf alone, without its intermediates.
enum TicketChain {
    static func encode(_ chain: [[UInt8]]) -> [UInt8] {
        var data: [UInt8] = []
        data.reserveCapacity(chain.reduce(0) { $0 + 4 + $1.count })
        for der in chain {
            let count = UInt32(der.count)
            data += [UInt8(count >> 24), UInt8(truncatingIfNeeded: count >> 16), UInt8(truncatingIfNeeded: count >> 8),
                     UInt8(truncatingIfNeeded: count)]
            data += der
        }
        return data
    }

    /// The chain `session` carries; empty if it carries none (no client certificate) or it is malformed.
    static func read(from session: OpaquePointer) -> [[UInt8]] {
        var data: UnsafeMutableRawPointer?
        var length = 0
        guard SSL_SESSION_get0_ticket_appdata(session, &data, &length) == 1, let data, length > 0 else { return [] }
        let bytes = UnsafeRawBufferPointer(start: data, count: length)
        var chain: [[UInt8]] = []
        var offset = 0
        while offset + 4 <= bytes.count {
            let count = Int(bytes[offset]) << 24 | Int(bytes[offset + 1]) << 16 | Int(bytes[offset + 2]) << 8
                | Int(bytes[offset + 3])
            offset += 4
            guard count > 0, offset + count <= bytes.count else { return [] }
            chain.append(Array(bytes[offset..<offset + count]))
            offset += count
        }
        return offset == bytes.count ? chain : []
    }
}
