import HTTPHello
import Testing

func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

func request(_ method: String, _ target: String) -> HTTPRequest {
    HTTPRequest.get(target, host: "localhost", method: method)
}

@Suite("HelloResponder and HTTPResponse")
struct ResponseTests {
    @Test("GET /hello greets the verified client by name")
    func hello() {
        let response = HelloResponder.respond(to: request("GET", "/hello"), clientIdentity: "client.example")
        #expect(response.status == 200)
        #expect(response.reason == "OK")
        #expect(response.headerValue("content-type")?.hasPrefix("text/plain") == true)
        #expect(text(response.body) == "hello, client.example\n")
        #expect(text(HelloResponder.respond(to: request("GET", "/hello?verbose=1"), clientIdentity: "c").body) == "hello, c\n")
    }

    @Test("without a client identity the greeting is for anonymous")
    func anonymous() {
        let response = HelloResponder.respond(to: request("GET", "/hello"), clientIdentity: nil)
        #expect(text(response.body) == "hello, anonymous\n")
    }

    @Test("the exact bytes of a 200, kept alive")
    func exactBytes() {
        let response = HelloResponder.respond(to: request("GET", "/hello"), clientIdentity: "c")
        #expect(text(response.serialized(keepAlive: true, includeBody: true)) ==
            "HTTP/1.1 200 OK\r\nServer: swift-mtls\r\nContent-Type: text/plain; charset=utf-8\r\n"
            + "Content-Length: 9\r\nConnection: keep-alive\r\n\r\nhello, c\n")
    }

    @Test("HEAD /hello: the GET's headers and Content-Length, no body")
    func head() {
        let headRequest = request("HEAD", "/hello")
        let response = HelloResponder.respond(to: headRequest, clientIdentity: "client.example")
        #expect(response.status == 200)
        let wire = text(response.serialized(answering: headRequest))
        let getWire = text(HelloResponder.respond(to: request("GET", "/hello"), clientIdentity: "client.example")
            .serialized(answering: request("GET", "/hello")))
        #expect(wire.hasSuffix("\r\n\r\n"))
        #expect(wire.contains("Content-Length: 22\r\n"))
        #expect(getWire == wire + "hello, client.example\n")
        #expect(response.serialized(keepAlive: true, includeBody: false) == Array(wire.utf8))
    }

    @Test("other methods on /hello are a 405 with Allow: GET, HEAD", arguments: ["POST", "PUT", "DELETE", "OPTIONS", "get", "PATCH"])
    func methodNotAllowed(method: String) {
        let response = HelloResponder.respond(to: request(method, "/hello"), clientIdentity: "c")
        #expect(response.status == 405)
        #expect(response.reason == "Method Not Allowed")
        #expect(response.headerValue("Allow") == "GET, HEAD")
        #expect(text(response.serialized(keepAlive: true, includeBody: true)).contains("\r\nAllow: GET, HEAD\r\n"))
    }

    @Test("other paths are a 404, whatever the method",
          arguments: [("GET", "/"), ("GET", "/hello/"), ("GET", "/hellox"), ("POST", "/x"), ("GET", "/Hello"), ("HEAD", "/nothing")])
    func notFound(method: String, target: String) {
        let get = request(method, target)
        let response = HelloResponder.respond(to: get, clientIdentity: "c")
        #expect(response.status == 404)
        let wire = text(response.serialized(answering: get))
        #expect(wire.hasPrefix("HTTP/1.1 404 Not Found\r\n"))
        #expect(wire.hasSuffix(method == "HEAD" ? "\r\n\r\n" : "\r\n\r\n404 Not Found\n"))
    }

    @Test("the greeting uses a peer identity's display name")
    func peerIdentity() {
        #expect(text(HelloResponder.respond(to: request("GET", "/hello"), peer: nil).body) == "hello, anonymous\n")
    }

    @Test("error(status:) builds every error the server sends",
          arguments: [(400, "Bad Request"), (404, "Not Found"), (405, "Method Not Allowed"), (413, "Content Too Large"),
                      (431, "Request Header Fields Too Large"), (501, "Not Implemented"), (505, "HTTP Version Not Supported")])
    func errors(status: Int, reason: String) throws {
        let response = HTTPResponse.error(status: status)
        #expect(response.status == status)
        #expect(response.reason == reason)
        #expect(text(response.body) == "\(status) \(reason)\n")
        let wire = text(response.serialized(keepAlive: false, includeBody: true))
        #expect(wire.hasPrefix("HTTP/1.1 \(status) \(reason)\r\n"))
        #expect(wire.contains("\r\nServer: swift-mtls\r\n"))
        #expect(wire.contains("\r\nContent-Length: \(response.body.count)\r\n"))
        #expect(wire.contains("\r\nConnection: close\r\n"))
        #expect(!wire.contains("keep-alive"))
        #expect(HTTPParseError(status: status, detail: "").response.status == status)
    }

    @Test("serialized sets Content-Length and Connection itself and keeps CR/LF out of headers")
    func serializedOwnsFraming() {
        let response = HTTPResponse(status: 200, headers: [("content-length", "999"), ("Connection", "upgrade"),
                                                           ("X-Evil", "a\r\nSet-Cookie: x=1"), ("Server", "other")],
                                    body: Array("abc".utf8))
        let wire = text(response.serialized(keepAlive: false, includeBody: true))
        #expect(wire == "HTTP/1.1 200 OK\r\nX-Evil: a Set-Cookie: x=1\r\nServer: other\r\n"
            + "Content-Length: 3\r\nConnection: close\r\n\r\nabc")
    }

    @Test("responses round-trip through HTTPResponseParser, fed one byte at a time")
    func roundTrip() throws {
        let exchanges: [(request: HTTPRequest, response: HTTPResponse, keepAlive: Bool)] = [
            (request("GET", "/hello"), HelloResponder.respond(to: request("GET", "/hello"), clientIdentity: "a"), true),
            (request("HEAD", "/hello"), HelloResponder.respond(to: request("HEAD", "/hello"), clientIdentity: "b"), true),
            (request("GET", "/x"), HelloResponder.respond(to: request("GET", "/x"), clientIdentity: nil), true),
            (request("DELETE", "/hello"), HelloResponder.respond(to: request("DELETE", "/hello"), clientIdentity: nil), true),
            (request("GET", "/hello"), HTTPResponse.error(status: 431), false),
        ]
        let wire = exchanges.flatMap { $0.response.serialized(keepAlive: $0.keepAlive, includeBody: $0.request.method != "HEAD") }
        var parser = HTTPResponseParser()
        var received: [(head: HTTPResponseHead, body: [UInt8])] = []
        for byte in wire {
            parser.append([byte])
            if let response = try parser.nextResponse(requestMethod: exchanges[received.count].request.method) {
                received.append(response)
            }
        }
        #expect(parser.bufferedByteCount == 0)
        try #require(received.count == exchanges.count)
        for (exchange, (head, body)) in zip(exchanges, received) {
            #expect(head.version == .http1_1)
            #expect(head.status == exchange.response.status)
            #expect(head.reason == exchange.response.reason)
            #expect(head.keepAlive == exchange.keepAlive)
            #expect(head.headerValue("Server") == "swift-mtls")
            #expect(head.headerValue("Content-Length") == "\(exchange.response.body.count)")
            #expect(head.headerValue("Allow") == exchange.response.headerValue("Allow"))
            #expect(body == (exchange.request.method == "HEAD" ? [] : exchange.response.body))
        }
    }

    @Test("the response parser: no body for 204/304/1xx, a close-delimited body, a truncated body")
    func responseParserFraming() throws {
        var parser = HTTPResponseParser()
        parser.append(Array("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nHTTP/1.0 200\r\n\r\npartial".utf8))
        let noContent = try #require(try parser.nextResponse())
        #expect(noContent.head.status == 204 && noContent.body.isEmpty && noContent.head.keepAlive)
        #expect(try parser.nextResponse() == nil)
        parser.append(Array(" body".utf8))
        parser.endOfInput()
        let closeDelimited = try #require(try parser.nextResponse())
        #expect(closeDelimited.head.status == 200)
        #expect(closeDelimited.head.reason == "")
        #expect(!closeDelimited.head.keepAlive)
        #expect(text(closeDelimited.body) == "partial body")
        #expect(try parser.nextResponse() == nil)

        var truncated = HTTPResponseParser()
        truncated.append(Array("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".utf8))
        #expect(try truncated.nextResponse() == nil)
        truncated.endOfInput()
        #expect(throwsStatus { _ = try truncated.nextResponse() } == 400)
    }

    @Test("the response parser decodes chunked bodies, fed one byte at a time: extensions, trailers, bare LF, then the next response")
    func chunkedBodies() throws {
        let wire = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7;ext=1\r\nhello, \r\n6\r\nclient\r\n0\r\nX-Trailer: y\r\n\r\n"
            + "HTTP/1.1 200 OK\nTransfer-Encoding: Chunked\n\n2\nhi\n0\n\n"
        var parser = HTTPResponseParser()
        var bodies: [String] = []
        for byte in Array(wire.utf8) {
            parser.append([byte])
            if let response = try parser.nextResponse() { bodies.append(text(response.body)) }
        }
        #expect(bodies == ["hello, client", "hi"])
        #expect(parser.bufferedByteCount == 0)

        var truncated = HTTPResponseParser()
        truncated.append(Array("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab".utf8))
        #expect(try truncated.nextResponse() == nil)
        truncated.endOfInput()
        #expect(throwsStatus { _ = try truncated.nextResponse() } == 400)
    }

    @Test("the response parser refuses malformed status lines, other transfer codings, bad chunks and oversized heads",
          arguments: [("HTTP/1.1 20 OK\r\n\r\n", 400), ("HTTP/1.1 2000 OK\r\n\r\n", 400), ("HTTP/1.1200 OK\r\n\r\n", 400),
                      ("HTTP/2 200 OK\r\n\r\n", 400), ("HTTP/2.0 200 OK\r\n\r\n", 505), ("ICY 200 OK\r\n\r\n", 400),
                      ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
                      ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
                      ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", 400),
                      ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100001\r\n", 413),
                      ("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", 400),
                      ("HTTP/1.1 200 OK\r\nX: " + String(repeating: "y", count: 16384) + "\r\n\r\n", 431),
                      ("HTTP/1.1 200 OK\r\nContent-Length: 1048577\r\n\r\n", 413)])
    func responseParserErrors(wire: String, status: Int) {
        var parser = HTTPResponseParser()
        parser.append(Array(wire.utf8))
        #expect(throwsStatus { _ = try parser.nextResponse() } == status)
    }
}
