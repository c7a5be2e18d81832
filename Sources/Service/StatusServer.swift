import Foundation
import HTTPHello
import Logging
import Loop
import TLSContract

/// What the status listener serves: the `/_status` document, built on a loop (possibly after a
/// probe: `reply` is called once, later, on that same loop), and the `/metrics` text.
public struct StatusEndpoints: Sendable {
    public var status: @Sendable (_ loop: EventLoop, _ reply: @escaping (_ json: [UInt8]) -> Void) -> Void
    /// The Prometheus text exposition, rendered when asked.
    public var metrics: @Sendable () -> [UInt8]

    public init(status: @escaping @Sendable (EventLoop, @escaping ([UInt8]) -> Void) -> Void,
                metrics: @escaping @Sendable () -> [UInt8]) {
        self.status = status
        self.metrics = metrics
    }

    /// `GET /_status` (JSON) and `GET /metrics` (Prometheus text format 0.0.4); 404 for another
    /// path, 405 for another method.
    static let paths = ["/_status", "/metrics"]
}

/// Plain HTTP/1.1 for `--status`, on the server's own loops: a small TCPServer without TLS whose
/// connections speak the hello server's parser and response writer. Meant for loopback: it tells
/// anyone who reaches it what is served and how much.
public final class StatusServer: Sendable {
    private let server: TCPServer
    public var address: SocketAddress { server.address }

    public init(group: LoopGroup, listen: HostAndPort, endpoints: StatusEndpoints, logger: Logger) throws {
        var options = TCPServer.Options()
        options.connection.idleTimeout = .seconds(30)
        // A scraper or a person with curl: a handful at once is plenty, and no flood can take more.
        options.maxConnections = 64
        server = try TCPServer(group: group, listen: listen, contexts: nil, options: options) {
            StatusConnection(endpoints: endpoints, logger: logger)
        }
    }

    public func shutdown() { server.shutdown(graceful: true) }
}

/// One client of the status listener. Requests are answered in order, one at a time: while
/// `/_status` waits for its probe, later pipelined requests wait in the parser.
final class StatusConnection: ConnectionHandler {
    private let endpoints: StatusEndpoints
    private let logger: Logger
    private var parser = HTTPRequestParser(maxBodyBytes: 0)
    private var answering = false

    init(endpoints: StatusEndpoints, logger: Logger) {
        self.endpoints = endpoints
        self.logger = logger
    }

    func connectionDidEstablish(_ connection: Connection) {}

    func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {
        parser.append(bytes)
        answerNext(connection)
    }

    func connectionDidClose(_ connection: Connection, error: ConnectionError?) {}

    private func answerNext(_ connection: Connection) {
        while !answering, connection.state == .established {
            let request: HTTPRequest
            do {
                guard let next = try parser.nextRequest() else { return }
                request = next
            } catch {
                try? connection.write(error.response.serialized(keepAlive: false, includeBody: true))
                connection.close()
                return
            }
            guard StatusEndpoints.paths.contains(request.path) else {
                send(.error(status: 404), answering: request, on: connection)
                continue
            }
            guard request.method == "GET" else {
                send(.error(status: 405, headers: [("Allow", "GET")]), answering: request, on: connection)
                continue
            }
            if request.path == "/metrics" {
                send(HTTPResponse(status: 200, headers: [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")],
                                  body: endpoints.metrics()),
                     answering: request, on: connection)
                continue
            }
            answering = true
            endpoints.status(connection.loop) { [self] json in
                answering = false
                send(HTTPResponse(status: 200, headers: [("Content-Type", "application/json")], body: json),
                     answering: request, on: connection)
                answerNext(connection)
            }
        }
    }

    private func send(_ response: HTTPResponse, answering request: HTTPRequest, on connection: Connection) {
        guard connection.state == .established else { return }
        do {
            try connection.write(response.serialized(answering: request))
        } catch {
            connection.close()
            return
        }
        if !request.keepAlive { connection.close() }
    }
}

/// Whether something accepts connections at `address` (TCP, or a UNIX-domain socket): one connect attempt from `loop`,
/// bounded by `timeout`, then closed at once. `completion` runs once, on `loop`.
public enum TCPReachability {
    public static func probe(_ address: Endpoint, on loop: EventLoop, timeout: Duration,
                             completion: @escaping (Bool) -> Void) {
        let probe = Probe(completion: completion)
        var options = ConnectionOptions()
        options.connectTimeout = timeout
        TCPClient.connect(on: loop, to: address, tls: nil, options: options) { probe }
    }

    /// Confined to the loop it was made for: the only reason it is `Sendable` is that
    /// `TCPClient.connect` takes its handler through a `@Sendable` closure that runs on that loop.
    private final class Probe: ConnectionHandler, @unchecked Sendable {
        private var completion: ((Bool) -> Void)?
        private var connected = false

        init(completion: @escaping (Bool) -> Void) { self.completion = completion }

        func connectionDidEstablish(_ connection: Connection) {
            connected = true
            connection.abort()
        }

        func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {}

        func connectionDidClose(_ connection: Connection, error: ConnectionError?) {
            let completion = self.completion
            self.completion = nil
            completion?(connected)
        }
    }
}
