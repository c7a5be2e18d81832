internal import COpenSSL
import TLSContract

/// The one BIO between a session's `SSL` and the session itself, both ways, in place of two memory
/// BIOs. A memory BIO costs two copies per byte (in, then out again) plus a zeroing of the room it
/// grows into; this one reads the ciphertext OpenSSL asks for straight from the session's
/// `SessionCiphertext` (including bytes the caller lends for one call) and appends what OpenSSL
/// writes straight to the queue the loop takes its ciphertext from.
///
/// Ownership: the `SSL` owns the BIO (SSL_set_bio) and frees it in SSL_free, from the session's
/// deinit. The BIO's data is an unretained pointer to the session's `SessionCiphertext`, which the
/// session owns and frees only after SSL_free: OpenSSL calls the BIO only from inside the session's
/// own SSL_* calls, so the pointer is valid whenever it is used. The destroy callback touches nothing.
enum OpenSSLSessionBIO {
    /// Built once per process and never freed, like OpenSSL's own static method tables.
    nonisolated(unsafe) private static let method: OpaquePointer? = {
        guard let method = BIO_meth_new(BIO_get_new_index() | mtls_BIO_TYPE_SOURCE_SINK(), "mtls session") else { return nil }
        _ = BIO_meth_set_write_ex(method, sessionBIOWrite)
        _ = BIO_meth_set_read_ex(method, sessionBIORead)
        _ = BIO_meth_set_ctrl(method, sessionBIOControl)
        _ = BIO_meth_set_create(method, sessionBIOCreate)
        _ = BIO_meth_set_destroy(method, sessionBIODestroy)
        return method
    }()

    /// A new BIO over `buffers`, or nil if OpenSSL cannot allocate one.
    static func make(over buffers: SessionCiphertext) -> OpaquePointer? {
        guard let method, let bio = BIO_new(method) else { return nil }
        BIO_set_data(bio, Unmanaged.passUnretained(buffers).toOpaque())
        return bio
    }
}

/// A session's ciphertext on its way in and out, reached by the BIO's callbacks.
final class SessionCiphertext {
    /// Received and not yet read by OpenSSL (including bytes lent for one `receiveCiphertext` call).
    var inbound = IncomingCiphertext()
    /// Written by OpenSSL, waiting for the loop to take it.
    var outbound = OutgoingRecords()
}

// Capture-free C callbacks (see OpenSSLSessionBIO for what the data pointer is and why it is valid).

private func buffers(of bio: OpaquePointer?) -> SessionCiphertext? {
    guard let bio, let data = BIO_get_data(bio) else { return nil }
    return Unmanaged<SessionCiphertext>.fromOpaque(data).takeUnretainedValue()
}

private let sessionBIOWrite: @convention(c) (OpaquePointer?, UnsafePointer<CChar>?, Int, UnsafeMutablePointer<Int>?) -> Int32 = {
    bio, data, size, written in
    guard let bio, let buffers = buffers(of: bio) else { return 0 }
    mtls_BIO_clear_retry_flags(bio)
    if size > 0, let data { buffers.outbound.append(UnsafeRawBufferPointer(start: data, count: size)) }
    written?.pointee = size
    return 1
}

/// An empty inbound side asks OpenSSL to retry (it reports SSL_ERROR_WANT_READ): the end of the
/// peer's input is the session's to judge, as it was with memory BIOs set to never report EOF.
private let sessionBIORead: @convention(c) (OpaquePointer?, UnsafeMutablePointer<CChar>?, Int, UnsafeMutablePointer<Int>?) -> Int32 = {
    bio, data, size, read in
    guard let bio, let buffers = buffers(of: bio) else { return 0 }
    mtls_BIO_clear_retry_flags(bio)
    guard size > 0, let data else { return 0 }
    let count = buffers.inbound.read(into: UnsafeMutableRawBufferPointer(start: data, count: size))
    guard count > 0 else {
        mtls_BIO_set_retry_read(bio)
        return 0
    }
    read?.pointee = count
    return 1
}

private let sessionBIOControl: @convention(c) (OpaquePointer?, Int32, Int, UnsafeMutableRawPointer?) -> Int = {
    bio, command, _, _ in
    switch command {
    case BIO_CTRL_FLUSH, BIO_CTRL_DUP: return 1
    case BIO_CTRL_PENDING: return buffers(of: bio)?.inbound.count ?? 0
    case BIO_CTRL_WPENDING: return buffers(of: bio)?.outbound.count ?? 0
    default: return 0  // no EOF of its own, no kTLS, nothing to push or pop
    }
}

private let sessionBIOCreate: @convention(c) (OpaquePointer?) -> Int32 = { bio in
    BIO_set_init(bio, 1)
    return 1
}

private let sessionBIODestroy: @convention(c) (OpaquePointer?) -> Int32 = { _ in 1 }
