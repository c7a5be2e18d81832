import Foundation
import Loop
import TLSContract

/// A TLS client on a blocking socket, driven by hand, for peers that misbehave at a precise moment:
/// write and close without reading, send close_notify and reset at once, trickle a record byte by
/// byte. The session is ours (either backend); the socket is a plain POSIX one.
final class BlockingTLSPeer {
    let socket: RawSocket
    let session: any TLSSession

    /// Connects and completes the handshake, or throws.
    init(port: Int, context: any TLSContext) throws {
        socket = try RawSocket(port: port)
        session = try context.makeSession()
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(socket.fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        while !session.isHandshakeComplete {
            switch session.process() {
            case .failed(let error):
                socket.close()
                throw error
            case .needsInput:
                flush()
                guard receiveOnce() else {
                    socket.close()
                    throw ConnectionError.refused("the server closed during the handshake")
                }
            default:
                break
            }
        }
        flush()
    }

    /// Sends whatever the session has for the peer.
    func flush() {
        let bytes = session.takeCiphertext()
        if !bytes.isEmpty { socket.send(bytes) }
    }

    /// One read into the session; false at EOF or error.
    @discardableResult
    func receiveOnce() -> Bool {
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        let count = recv(socket.fd, &buffer, buffer.count, 0)
        guard count > 0 else { return false }
        session.receiveCiphertext(Array(buffer[0..<count]))
        return true
    }

    /// Encrypts and sends application data.
    func write(_ bytes: [UInt8]) throws {
        try session.writePlaintext(bytes)
        flush()
    }

    /// Queues and sends close_notify.
    func sendCloseNotify() {
        session.close()
        flush()
    }
}
