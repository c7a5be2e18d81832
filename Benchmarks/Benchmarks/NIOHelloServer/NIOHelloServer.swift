// A SwiftNIO + NIOSSL counterpart of `mtls hello-server` and `mtls echo-server`, for same-run comparisons
// (compare-servers.sh). It stays at NIOSSL's defaults on purpose: whatever NIOSSL does with session tickets,
// the cipher suites and the groups is what a NIO user gets, so nothing is tuned here.
import ArgumentParser
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

@main
struct NIOHelloServer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nio-hello-server",
        abstract: "mTLS hello (GET /hello -> 200 hello) or echo server on SwiftNIO and NIOSSL, at NIOSSL's defaults.")

    @Option(help: "A PKI folder from `mtls pki init` (ca.pem, server.pem, server.key).") var pki: String
    @Option(help: "Address to listen on.") var host: String = "127.0.0.1"
    @Option(help: "Port to listen on (0: any; the chosen port is printed).") var port: Int = 8443
    @Option(help: "Event loop threads.") var threads: Int = System.coreCount
    @Flag(help: "Echo every byte back instead of serving HTTP.") var echo = false

    func run() throws {
        let tls = try NIOSSLContext(configuration: serverTLSConfiguration())
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let echo = self.echo
        let channel = try ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let handlers = channel.pipeline.syncOperations
                    try handlers.addHandler(NIOSSLServerHandler(context: tls))
                    if echo {
                        try handlers.addHandler(EchoHandler())
                    } else {
                        try handlers.configureHTTPServerPipeline(withErrorHandling: true)
                        try handlers.addHandler(HelloHandler())
                    }
                }
            }
            .bind(host: host, port: port).wait()
        print("listening on \(channel.localAddress.map { "\($0)" } ?? "?")")
        try channel.closeFuture.wait()
        try group.syncShutdownGracefully()
    }

    /// Mutual TLS as our servers do it: TLS 1.2 to 1.3, a client certificate required and verified against the
    /// PKI's CA (no name check: clients are identified, not addressed). Everything else is NIOSSL's default.
    func serverTLSConfiguration() throws -> TLSConfiguration {
        let chain = try NIOSSLCertificate.fromPEMFile("\(pki)/server.pem").map { NIOSSLCertificateSource.certificate($0) }
        let key = try NIOSSLPrivateKey(file: "\(pki)/server.key", format: .pem)
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        configuration.maximumTLSVersion = .tlsv13
        configuration.certificateVerification = .noHostnameVerification
        configuration.trustRoots = .file("\(pki)/ca.pem")
        return configuration
    }
}

/// GET /hello answers 200 "hello\n"; anything else 404. Keep-alive as the request asks.
final class HelloHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private var request: HTTPRequestHead?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            request = head
        case .body:
            break
        case .end:
            guard let request else { return }
            self.request = nil
            let found = request.method == .GET && request.uri == "/hello"
            let body = found ? "hello\n" : "not found\n"
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: "text/plain")
            headers.add(name: "content-length", value: "\(body.utf8.count)")
            if !request.isKeepAlive { headers.add(name: "connection", value: "close") }
            let head = HTTPResponseHead(version: request.version, status: found ? .ok : .notFound, headers: headers)
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
            let written = context.eventLoop.makePromise(of: Void.self)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: written)
            if !request.isKeepAlive {
                let channel = context.channel
                written.futureResult.whenComplete { _ in channel.close(promise: nil) }
            }
        }
    }
}

/// Writes back whatever arrives, flushing once per read burst.
final class EchoHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.write(data, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
