/// An incremental HTTP/1.1 request parser without I/O: append whatever arrived, then call
/// `nextRequest()` until it returns nil. Pipelined requests come out one by one.
///
/// - Framing: Content-Length only. A request with any Transfer-Encoding (chunked included) is
///   refused with 501: the hello server has no use for request bodies.
/// - Line ends: CRLF, bare LF tolerated. Empty lines before a request line are skipped.
/// - HTTP/1.1 requests need exactly one Host header (RFC 9112 §3.2), else 400.
/// - Limits: a header section (request line through the empty line, inclusive) longer than
///   `maxHeaderBytes` is a 431, detected as soon as that many bytes are buffered without its end;
///   a Content-Length above `maxBodyBytes` is a 413, detected before the body arrives.
/// - After an error every later call throws it again: send `error.response` with
///   `keepAlive: false` and close.
public struct HTTPRequestParser: Sendable {
    public static let defaultMaxHeaderBytes = 16 * 1024
    public static let defaultMaxBodyBytes = 1024 * 1024

    public let maxHeaderBytes: Int
    public let maxBodyBytes: Int

    private var buffer = MessageBuffer()
    private var state = State.head

    private enum State: Sendable {
        case head
        /// The head is parsed and `headLength` bytes long; waiting for `bodyLength` body bytes.
        case body(HTTPRequest, headLength: Int, bodyLength: Int)
        case failed(HTTPParseError)
    }

    public init(maxHeaderBytes: Int = HTTPRequestParser.defaultMaxHeaderBytes,
                maxBodyBytes: Int = HTTPRequestParser.defaultMaxBodyBytes) {
        self.maxHeaderBytes = maxHeaderBytes
        self.maxBodyBytes = maxBodyBytes
    }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard !hasFailed else { return }
        buffer.append(bytes)
    }

    public mutating func append(_ bytes: some Collection<UInt8>) {
        guard !hasFailed else { return }
        buffer.append(bytes)
    }

    /// Bytes received and not yet returned as part of a request. Non-zero at end of input means
    /// the client closed in the middle of a request.
    public var bufferedByteCount: Int { buffer.count }

    public var hasFailed: Bool {
        if case .failed = state { return true }
        return false
    }

    /// The next complete request, or nil until one has fully arrived.
    public mutating func nextRequest() throws(HTTPParseError) -> HTTPRequest? {
        do {
            return try parseNext()
        } catch {
            state = .failed(error)
            buffer.removeAll()
            throw error
        }
    }

    private mutating func parseNext() throws(HTTPParseError) -> HTTPRequest? {
        switch state {
        case .failed(let error):
            throw error
        case .head:
            guard buffer.skipEmptyLines(), let headEnd = try buffer.findHeadEnd(limit: maxHeaderBytes) else {
                return nil
            }
            let (request, bodyLength) = try parseHead(buffer.headLines(end: headEnd))
            let headLength = headEnd - buffer.start
            state = .body(request, headLength: headLength, bodyLength: bodyLength)
            return try parseNext()
        case .body(var request, let headLength, let bodyLength):
            guard buffer.count >= headLength + bodyLength else { return nil }
            request.body = buffer.slice(from: headLength, count: bodyLength)
            buffer.consume(headLength + bodyLength)
            state = .head
            return request
        }
    }

    private func parseHead(_ lines: [ArraySlice<UInt8>]) throws(HTTPParseError) -> (HTTPRequest, Int) {
        guard let requestLine = lines.first else { throw .badRequest("empty request") }
        let parts = requestLine.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
        guard parts.count == 3 else {
            throw .badRequest("malformed request line '\(HeadParsing.latin1(requestLine.prefix(80)))'")
        }
        let method = parts[0]
        let target = parts[1]
        guard !method.isEmpty, method.allSatisfy(HeadParsing.isTokenByte) else {
            throw .badRequest("invalid method '\(HeadParsing.latin1(method.prefix(32)))'")
        }
        guard !target.isEmpty, target.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw .badRequest("invalid request target")
        }
        let version = try HeadParsing.version(parts[2])

        var headers: HTTPHeaderFields = []
        for line in lines.dropFirst() {
            headers.append(try HeadParsing.headerField(line))
        }
        if !HeaderLookup.all("Transfer-Encoding", in: headers).isEmpty {
            throw HTTPParseError(status: 501, detail: "Transfer-Encoding (chunked) request bodies are not implemented")
        }
        let hosts = HeaderLookup.all("Host", in: headers).count
        if hosts > 1 || (hosts == 0 && version.persistentByDefault) {
            throw .badRequest(hosts > 1 ? "more than one Host header" : "an HTTP/1.1 request needs a Host header")
        }
        let bodyLength = try HeadParsing.contentLength(headers) ?? 0
        guard bodyLength <= maxBodyBytes else {
            throw HTTPParseError(status: 413, detail: "the body is larger than \(maxBodyBytes) bytes")
        }
        let request = HTTPRequest(
            method: HeadParsing.latin1(method), target: HeadParsing.latin1(target), version: version,
            headers: headers, body: [], keepAlive: HeadParsing.keepAlive(version: version, headers: headers))
        return (request, bodyLength)
    }
}
