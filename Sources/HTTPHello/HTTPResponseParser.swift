/// An incremental HTTP/1.x response parser for the hello client, without I/O.
///
/// Bodies are framed by `Transfer-Encoding: chunked`, by Content-Length or, without either, by the
/// end of input (call `endOfInput()`). Responses to HEAD, 1xx, 204 and 304 have no body. Other
/// transfer codings (gzip...) are refused (501). Errors use the same status codes as `HTTPRequestParser`
/// (400 malformed or truncated, 413, 431, 501, 505); after one, the parser is dead.
public struct HTTPResponseParser: Sendable {
    public let maxHeaderBytes: Int
    public let maxBodyBytes: Int

    private var buffer = MessageBuffer()
    private var state = State.head
    private var inputEnded = false

    private enum State: Sendable {
        case head
        /// `bodyLength` nil: the body runs to the end of input.
        case body(HTTPResponseHead, headLength: Int, bodyLength: Int?)
        /// A chunked body, decoded once it has fully arrived.
        case chunkedBody(HTTPResponseHead, headLength: Int)
        case failed(HTTPParseError)
    }

    public init(maxHeaderBytes: Int = HTTPRequestParser.defaultMaxHeaderBytes,
                maxBodyBytes: Int = HTTPRequestParser.defaultMaxBodyBytes) {
        self.maxHeaderBytes = maxHeaderBytes
        self.maxBodyBytes = maxBodyBytes
    }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        buffer.append(bytes)
    }

    public mutating func append(_ bytes: some Collection<UInt8>) {
        buffer.append(bytes)
    }

    /// The server closed the connection: completes a body framed by the close, and turns a
    /// half-received response into an error on the next `nextResponse` call.
    public mutating func endOfInput() {
        inputEnded = true
    }

    public var bufferedByteCount: Int { buffer.count }

    /// The next complete response, or nil until one has fully arrived (or, at end of input with
    /// nothing buffered, nil for good). `requestMethod` is the method of the request it answers:
    /// a response to HEAD has no body whatever its Content-Length says.
    public mutating func nextResponse(requestMethod: String = "GET") throws(HTTPParseError) -> (head: HTTPResponseHead, body: [UInt8])? {
        do {
            return try parseNext(requestMethod: requestMethod)
        } catch {
            state = .failed(error)
            buffer.removeAll()
            throw error
        }
    }

    private mutating func parseNext(requestMethod: String) throws(HTTPParseError) -> (head: HTTPResponseHead, body: [UInt8])? {
        switch state {
        case .failed(let error):
            throw error
        case .head:
            guard buffer.skipEmptyLines(), let headEnd = try buffer.findHeadEnd(limit: maxHeaderBytes) else {
                if inputEnded && buffer.count > 0 {
                    throw .badRequest("the connection closed in the middle of a response head")
                }
                return nil
            }
            let (head, framing) = try parseHead(buffer.headLines(end: headEnd), requestMethod: requestMethod)
            switch framing {
            case .length(let length): state = .body(head, headLength: headEnd - buffer.start, bodyLength: length)
            case .untilClose: state = .body(head, headLength: headEnd - buffer.start, bodyLength: nil)
            case .chunked: state = .chunkedBody(head, headLength: headEnd - buffer.start)
            }
            return try parseNext(requestMethod: requestMethod)
        case .chunkedBody(let head, let headLength):
            let encoded = buffer.bytes[(buffer.start + headLength)...]
            guard let (body, length) = try ChunkedBody.decode(encoded, maxBodyBytes: maxBodyBytes) else {
                if inputEnded { throw .badRequest("the connection closed in the middle of a chunked body") }
                return nil
            }
            buffer.consume(headLength + length)
            state = .head
            return (head, body)
        case .body(let head, let headLength, let bodyLength?):
            guard buffer.count >= headLength + bodyLength else {
                if inputEnded {
                    throw .badRequest("the connection closed after \(buffer.count - headLength) of \(bodyLength) body bytes")
                }
                return nil
            }
            let body = buffer.slice(from: headLength, count: bodyLength)
            buffer.consume(headLength + bodyLength)
            state = .head
            return (head, body)
        case .body(let head, let headLength, nil):
            guard buffer.count - headLength <= maxBodyBytes else {
                throw HTTPParseError(status: 413, detail: "the body is larger than \(maxBodyBytes) bytes")
            }
            guard inputEnded else { return nil }
            let body = buffer.rest(from: headLength)
            buffer.consume(buffer.count)
            state = .head
            return (head, body)
        }
    }

    private enum BodyFraming { case length(Int), untilClose, chunked }

    private func parseHead(_ lines: [ArraySlice<UInt8>], requestMethod: String) throws(HTTPParseError) -> (HTTPResponseHead, BodyFraming) {
        guard let statusLine = lines.first, statusLine.count >= 12 else {
            throw .badRequest("malformed status line")
        }
        let version = try HeadParsing.version(statusLine.prefix(8))
        let rest = statusLine.dropFirst(8)
        let digits = rest.dropFirst().prefix(3).compactMap(HeadParsing.digit)
        guard rest.first == UInt8(ascii: " "), digits.count == 3,
              rest.count == 4 || rest[rest.startIndex + 4] == UInt8(ascii: " ")
        else {
            throw .badRequest("malformed status line '\(HeadParsing.latin1(statusLine.prefix(80)))'")
        }
        let status = digits[0] * 100 + digits[1] * 10 + digits[2]
        guard status >= 100 else { throw .badRequest("invalid status code \(status)") }
        let reason = HeadParsing.text(rest.dropFirst(5))

        var headers: HTTPHeaderFields = []
        for line in lines.dropFirst() {
            headers.append(try HeadParsing.headerField(line))
        }
        var keepAlive = HeadParsing.keepAlive(version: version, headers: headers)
        let framing: BodyFraming
        let codings = HeaderLookup.tokens("Transfer-Encoding", in: headers)
        if requestMethod == "HEAD" || (100..<200).contains(status) || status == 204 || status == 304 {
            framing = .length(0)
        } else if !codings.isEmpty {
            // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3); only plain chunked is decoded.
            guard codings == ["chunked"] else {
                throw HTTPParseError(status: 501, detail: "Transfer-Encoding '\(codings.joined(separator: ", "))' is not implemented (only chunked)")
            }
            framing = .chunked
        } else if let length = try HeadParsing.contentLength(headers) {
            guard length <= maxBodyBytes else {
                throw HTTPParseError(status: 413, detail: "the body is larger than \(maxBodyBytes) bytes")
            }
            framing = .length(length)
        } else {
            framing = .untilClose
            keepAlive = false
        }
        let head = HTTPResponseHead(version: version, status: status, reason: reason, headers: headers, keepAlive: keepAlive)
        return (head, framing)
    }
}
