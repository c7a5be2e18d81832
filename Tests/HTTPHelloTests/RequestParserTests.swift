import HTTPHello
import Testing

/// Parses `text` fed in one piece and returns every request it holds.
func parseAll(_ text: String, parser: HTTPRequestParser = HTTPRequestParser()) throws(HTTPParseError) -> [HTTPRequest] {
    var parser = parser
    parser.append(Array(text.utf8))
    var requests: [HTTPRequest] = []
    while let request = try parser.nextRequest() { requests.append(request) }
    return requests
}

/// The status of the error parsing `text` throws, or nil if it parses.
func errorStatus(_ text: String) -> Int? {
    errorStatus(bytes: Array(text.utf8))
}

func errorStatus(bytes: [UInt8], parser: HTTPRequestParser = HTTPRequestParser()) -> Int? {
    var parser = parser
    parser.append(bytes)
    do {
        while try parser.nextRequest() != nil {}
        return nil
    } catch {
        return error.status
    }
}

/// The status of the error `body` throws, or nil if it throws none.
/// (-1 for an error that is not an HTTPParseError.)
func throwsStatus(_ body: () throws -> Void) -> Int? {
    do {
        try body()
        return nil
    } catch let error as HTTPParseError {
        return error.status
    } catch {
        return -1
    }
}

@Suite("HTTPRequestParser")
struct RequestParserTests {
    @Test("a simple GET: method, target, version, headers in order, looked up case-insensitively")
    func simpleGet() throws {
        let requests = try parseAll("GET /hello?x=1 HTTP/1.1\r\nHost: localhost:8443\r\nUser-Agent: test/1.0\r\nX-Empty:\r\n\r\n")
        try #require(requests.count == 1)
        let request = requests[0]
        #expect(request.method == "GET")
        #expect(request.target == "/hello?x=1")
        #expect(request.path == "/hello")
        #expect(request.version == .http1_1)
        #expect(request.headers.map(\.name) == ["Host", "User-Agent", "X-Empty"])
        #expect(request.headers.map(\.value) == ["localhost:8443", "test/1.0", ""])
        #expect(request.headerValue("HOST") == "localhost:8443")
        #expect(request.headerValue("user-agent") == "test/1.0")
        #expect(request.headerValue("Accept") == nil)
        #expect(request.body.isEmpty)
        #expect(request.keepAlive)
    }

    @Test("optional whitespace around header values is trimmed; names keep their case")
    func whitespace() throws {
        let request = try #require(try parseAll("GET / HTTP/1.1\r\nhOsT:   example  \t\r\nX-A:\tb c\r\n\r\n").first)
        #expect(request.headers[0].name == "hOsT")
        #expect(request.headerValue("Host") == "example")
        #expect(request.headerValue("x-a") == "b c")
    }

    @Test("header values are read as Latin-1 (RFC 9110 obs-text): bytes above 0x7F each become one character")
    func latin1Values() throws {
        var bytes = Array("GET / HTTP/1.1\r\nHost: h\r\nX-Name: caf".utf8) + [0xE9, 0x20, 0xFF]
        bytes += Array("\r\nX-Plain: ascii only\r\n\r\n".utf8)
        var parser = HTTPRequestParser()
        parser.append(bytes)
        let request = try #require(try parser.nextRequest())
        #expect(request.headerValue("X-Name") == "caf\u{E9} \u{FF}")
        #expect(request.headerValue("X-Name")?.unicodeScalars.count == 6)
        #expect(request.headerValue("X-Plain") == "ascii only")
    }

    @Test("fed one byte at a time, a request appears exactly when its last byte arrives")
    func byteAtATime() throws {
        let text = "POST /hello HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world"
        var parser = HTTPRequestParser()
        let bytes = Array(text.utf8)
        for (index, byte) in bytes.enumerated() {
            parser.append([byte])
            let request = try parser.nextRequest()
            if index < bytes.count - 1 {
                #expect(request == nil, "a request came out after \(index + 1) of \(bytes.count) bytes")
            } else {
                let request = try #require(request)
                #expect(request.method == "POST")
                #expect(String(decoding: request.body, as: UTF8.self) == "hello world")
            }
        }
        #expect(try parser.nextRequest() == nil)
        #expect(parser.bufferedByteCount == 0)
    }

    @Test("the unsafe-buffer append works like the array one")
    func rawBufferAppend() throws {
        var parser = HTTPRequestParser()
        let bytes = Array("GET /hello HTTP/1.1\r\nHost: h\r\n\r\n".utf8)
        bytes.withUnsafeBytes { parser.append($0) }
        #expect(try parser.nextRequest()?.path == "/hello")
    }

    @Test("pipelined requests in one chunk come out one by one, in order")
    func pipelining() throws {
        let text = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
            + "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n12345"
            + "HEAD /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        var parser = HTTPRequestParser()
        parser.append(Array(text.utf8))
        let first = try #require(try parser.nextRequest())
        #expect(first.method == "GET" && first.target == "/a" && first.keepAlive)
        let second = try #require(try parser.nextRequest())
        #expect(second.method == "POST" && second.target == "/b" && second.body == Array("12345".utf8))
        let third = try #require(try parser.nextRequest())
        #expect(third.method == "HEAD" && third.target == "/c" && !third.keepAlive)
        #expect(try parser.nextRequest() == nil)
    }

    @Test("two pipelined requests split at every possible point parse the same")
    func pipeliningAtEverySplit() throws {
        let text = "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET /y HTTP/1.0\r\n\r\n"
        let bytes = Array(text.utf8)
        for split in 0...bytes.count {
            var parser = HTTPRequestParser()
            var requests: [HTTPRequest] = []
            parser.append(bytes[..<split])
            while let request = try parser.nextRequest() { requests.append(request) }
            parser.append(bytes[split...])
            while let request = try parser.nextRequest() { requests.append(request) }
            #expect(requests.map(\.target) == ["/x", "/y"], "split at \(split)")
            #expect(requests.first?.body == Array("abc".utf8), "split at \(split)")
            #expect(requests.last?.version == .http1_0, "split at \(split)")
        }
    }

    @Test("keep-alive: HTTP/1.1 unless Connection: close, HTTP/1.0 only with Connection: keep-alive",
          arguments: [
              ("HTTP/1.1", [String](), true),
              ("HTTP/1.1", ["Connection: close"], false),
              ("HTTP/1.1", ["Connection: Close"], false),
              ("HTTP/1.1", ["Connection: keep-alive"], true),
              ("HTTP/1.1", ["Connection: Upgrade, close"], false),
              ("HTTP/1.1", ["Connection: keep-alive", "connection: close"], false),
              ("HTTP/1.1", ["Connection: closed"], true),
              ("HTTP/1.2", [], true),
              ("HTTP/1.0", [], false),
              ("HTTP/1.0", ["Connection: keep-alive"], true),
              ("HTTP/1.0", ["CONNECTION: Keep-Alive"], true),
              ("HTTP/1.0", ["Connection: foo,  keep-alive "], true),
              ("HTTP/1.0", ["Connection: keep-alive, close"], false),
              ("HTTP/1.0", ["Keep-Alive: timeout=5"], false),
          ])
    func keepAlive(version: String, headers: [String], expected: Bool) throws {
        let head = (["GET /hello \(version)", "Host: h"] + headers).joined(separator: "\r\n") + "\r\n\r\n"
        let request = try #require(try parseAll(head).first)
        #expect(request.keepAlive == expected)
    }

    @Test("bare LF line ends are tolerated, also mixed with CRLF")
    func bareLF() throws {
        let requests = try parseAll("GET /a HTTP/1.1\nHost: h\n\nGET /b HTTP/1.1\r\nHost: h\n\r\nGET /c HTTP/1.1\nHost: h\r\n\n")
        #expect(requests.map(\.target) == ["/a", "/b", "/c"])
        #expect(requests.allSatisfy { $0.headerValue("host") == "h" })
    }

    @Test("empty lines before a request line are skipped")
    func leadingEmptyLines() throws {
        let requests = try parseAll("\r\n\r\n\nGET /a HTTP/1.1\r\nHost: h\r\n\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n")
        #expect(requests.map(\.target) == ["/a", "/b"])
    }

    @Test("HTTP/1.0 needs no Host; absolute-form targets have a path")
    func http10AndAbsoluteForm() throws {
        let request = try #require(try parseAll("GET http://example.com:8443/hello?q#f HTTP/1.0\r\n\r\n").first)
        #expect(request.version == .http1_0)
        #expect(request.path == "/hello")
        #expect(HTTPRequest(method: "GET", target: "https://example.com").path == "/")
        #expect(HTTPRequest(method: "GET", target: "https://example.com?x").path == "/")
        #expect(HTTPRequest(method: "OPTIONS", target: "*").path == "*")
    }

    @Test("Content-Length bodies, including a repeated identical value and leading zeros")
    func contentLength() throws {
        let requests = try parseAll(
            "PUT /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nxyz"
                + "PUT /b HTTP/1.1\r\nHost: h\r\nContent-Length: 2, 2\r\n\r\nab"
                + "PUT /c HTTP/1.1\r\nHost: h\r\nContent-Length: 0004\r\n\r\nwxyz"
                + "PUT /d HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
        #expect(requests.map(\.target) == ["/a", "/b", "/c", "/d"])
        #expect(requests.map { String(decoding: $0.body, as: UTF8.self) } == ["xyz", "ab", "wxyz", ""])
    }

    static let malformed: [String] = [
        "GET /hello\r\nHost: h\r\n\r\n",
        "GET /hello HTTP/1.1 extra\r\nHost: h\r\n\r\n",
        "GET  /hello HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /hello  HTTP/1.1\r\nHost: h\r\n\r\n",
        " GET /hello HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /hello http/1.1\r\nHost: h\r\n\r\n",
        "GET /hello HTTP/1\r\nHost: h\r\n\r\n",
        "GET /hello HTTP/1.10\r\nHost: h\r\n\r\n",
        "GET /hello HTTP/x.1\r\nHost: h\r\n\r\n",
        "G(T /hello HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /hé HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /a\u{7F}b HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost h\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost : h\r\n\r\n",
        "GET /hello HTTP/1.1\r\n: h\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHo st: h\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: h\r\nX-A: a\r\n folded\r\n\r\n",
        "GET /hello HTTP/1.1\r\n Host: h\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: h\r\nX-A: a\u{1}b\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: h\r\nContent-Length: abc\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: h\r\nContent-Length: \r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: h\r\nContent-Length: 1 2\r\n\r\nab",
        "GET /hello HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 2\r\n\r\nab",
        "GET /hello HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        "GET /hello HTTP/1.1\r\nHost: h\r\nContent-Length: 1,\r\n\r\na",
        "GET /hello HTTP/1.1\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET /hello HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n",
    ]

    @Test("a malformed request line, header or Content-Length is a 400", arguments: malformed)
    func badRequest(text: String) {
        #expect(errorStatus(text) == 400)
    }

    @Test("HTTP versions other than 1.x are a 505")
    func versionNotSupported() {
        #expect(errorStatus("GET /hello HTTP/2.0\r\nHost: h\r\n\r\n") == 505)
        #expect(errorStatus("GET /hello HTTP/0.9\r\n\r\n") == 505)
    }

    @Test("any Transfer-Encoding is a 501 (chunked request bodies are not implemented)")
    func transferEncoding() {
        #expect(errorStatus("POST /hello HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n") == 501)
        #expect(errorStatus("POST /hello HTTP/1.1\r\nHost: h\r\ntransfer-encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n") == 501)
    }

    @Test("a body of exactly 1 MiB is accepted; one byte more is a 413 before the body arrives")
    func bodyLimit() throws {
        let limit = HTTPRequestParser.defaultMaxBodyBytes
        #expect(limit == 1_048_576)
        var parser = HTTPRequestParser()
        parser.append(Array("POST /hello HTTP/1.1\r\nHost: h\r\nContent-Length: \(limit)\r\n\r\n".utf8))
        #expect(try parser.nextRequest() == nil)
        parser.append([UInt8](repeating: 0x61, count: limit))
        #expect(try parser.nextRequest()?.body.count == limit)

        // No body byte sent: the 413 comes from the head alone.
        #expect(errorStatus("POST /hello HTTP/1.1\r\nHost: h\r\nContent-Length: \(limit + 1)\r\n\r\n") == 413)
        #expect(errorStatus("POST /hello HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999999\r\n\r\n") == 413)
        #expect(errorStatus(bytes: Array("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n".utf8),
                            parser: HTTPRequestParser(maxBodyBytes: 10)) == 413)
    }

    /// A request whose header section (request line through the final empty line) is exactly `size` bytes.
    static func request(headerSectionSize size: Int, lineEnd: String = "\r\n") -> [UInt8] {
        let start = "GET /hello HTTP/1.1\(lineEnd)Host: h\(lineEnd)X-Pad: "
        let end = "\(lineEnd)\(lineEnd)"
        let padding = size - start.utf8.count - end.utf8.count
        let text = start + String(repeating: "p", count: padding) + end
        precondition(text.utf8.count == size)
        return Array(text.utf8)
    }

    @Test("a header section of exactly 16 KiB is accepted, one byte more is a 431", arguments: ["\r\n", "\n"])
    func headerLimit(lineEnd: String) throws {
        let limit = HTTPRequestParser.defaultMaxHeaderBytes
        #expect(limit == 16384)
        var parser = HTTPRequestParser()
        parser.append(Self.request(headerSectionSize: limit, lineEnd: lineEnd))
        let request = try #require(try parser.nextRequest())
        #expect(request.headerValue("X-Pad")?.count == limit - 33 - 4 * lineEnd.utf8.count)
        #expect(errorStatus(bytes: Self.request(headerSectionSize: limit + 1, lineEnd: lineEnd)) == 431)
    }

    @Test("the 431 comes as soon as 16 KiB + 1 bytes are buffered without the end of the header section")
    func headerLimitIncremental() throws {
        var parser = HTTPRequestParser()
        let limit = HTTPRequestParser.defaultMaxHeaderBytes
        parser.append(Array("GET /hello HTTP/1.1\r\nX-Pad: ".utf8))
        parser.append([UInt8](repeating: 0x70, count: limit - parser.bufferedByteCount))
        #expect(try parser.nextRequest() == nil)
        parser.append([0x70])
        #expect(throwsStatus { _ = try parser.nextRequest() } == 431)
        #expect(throwsStatus { _ = try parser.nextRequest() } == 431, "a failed parser must keep failing")
    }

    @Test("empty lines skipped before a request do not count towards the header limit")
    func leadingLinesNotCounted() throws {
        var bytes = Array(String(repeating: "\r\n", count: 100).utf8)
        bytes += Self.request(headerSectionSize: HTTPRequestParser.defaultMaxHeaderBytes)
        #expect(errorStatus(bytes: bytes) == nil)
    }

    @Test("after an error the parser stays failed, ignores new bytes and drops its buffer")
    func failedStaysFailed() throws {
        var parser = HTTPRequestParser()
        parser.append(Array("BROKEN\r\n\r\n".utf8))
        #expect(throwsStatus { _ = try parser.nextRequest() } == 400)
        #expect(parser.hasFailed)
        parser.append(Array("GET /hello HTTP/1.1\r\nHost: h\r\n\r\n".utf8))
        #expect(parser.bufferedByteCount == 0)
        #expect(throwsStatus { _ = try parser.nextRequest() } == 400)
    }

    @Test("a request built by HTTPRequest.serialized parses back")
    func requestRoundTrip() throws {
        let requests = [
            HTTPRequest.get("/hello", host: "localhost"),
            HTTPRequest.get("/hello", host: "localhost", keepAlive: false, method: "HEAD"),
            HTTPRequest(method: "POST", target: "/upload", headers: [("Host", "h"), ("X-Y", "z")], body: Array("data".utf8)),
            HTTPRequest(method: "GET", target: "/old", version: .http1_0, keepAlive: true),
            HTTPRequest(method: "GET", target: "/old", version: .http1_0, keepAlive: false),
        ]
        let parsed = try parseAll(String(decoding: requests.flatMap { $0.serialized() }, as: UTF8.self))
        try #require(parsed.count == requests.count)
        for (sent, received) in zip(requests, parsed) {
            #expect(received.method == sent.method)
            #expect(received.target == sent.target)
            #expect(received.version == sent.version)
            #expect(received.body == sent.body)
            #expect(received.keepAlive == sent.keepAlive, "\(sent.method) \(sent.target) \(sent.version)")
            #expect(received.headerValue("Host") == sent.headerValue("Host"))
        }
    }
}
