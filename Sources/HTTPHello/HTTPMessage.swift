/// Header fields in the order they were received or will be sent. Names keep their spelling;
/// look them up case-insensitively with `HTTPRequest.headerValue(_:)` and friends.
public typealias HTTPHeaderFields = [(name: String, value: String)]

/// "HTTP/1.0", "HTTP/1.1". Only major version 1 is parsed; a higher minor version is treated as 1.1.
public struct HTTPVersion: Sendable, Hashable, CustomStringConvertible {
    public let major: Int
    public let minor: Int

    public init(major: Int, minor: Int) {
        self.major = major
        self.minor = minor
    }

    public static let http1_0 = HTTPVersion(major: 1, minor: 0)
    public static let http1_1 = HTTPVersion(major: 1, minor: 1)

    public var description: String { "HTTP/\(major).\(minor)" }

    /// Whether a message of this version keeps the connection open unless told otherwise (1.1 and up).
    var persistentByDefault: Bool { major > 1 || (major == 1 && minor >= 1) }
}

/// Why a request (or response) cannot be used, with the status code a server answers it with:
/// 400 malformed, 413 body too large, 431 header section too large, 501 Transfer-Encoding not
/// implemented, 505 HTTP major version other than 1. After an error the parser is dead: answer
/// with `response` (not keeping the connection alive) and close.
public struct HTTPParseError: Error, Sendable, Hashable, CustomStringConvertible {
    public let status: Int
    /// What exactly was wrong, for logs.
    public let detail: String

    public init(status: Int, detail: String) {
        self.status = status
        self.detail = detail
    }

    public var reason: String { HTTPResponse.reasonPhrase(for: status) }

    /// The error response a server sends before closing (see `HTTPResponse.error(status:)`).
    public var response: HTTPResponse { .error(status: status) }

    public var description: String { "\(status) \(reason): \(detail)" }

    static func badRequest(_ detail: String) -> HTTPParseError { HTTPParseError(status: 400, detail: detail) }
}

/// One parsed request. The body has been read completely (Content-Length framing).
public struct HTTPRequest: Sendable {
    /// Case-sensitive, as sent ("GET").
    public var method: String
    /// The request target as sent: "/hello?x=1", or an absolute URI. See `path`.
    public var target: String
    public var version: HTTPVersion
    public var headers: HTTPHeaderFields
    public var body: [UInt8]
    /// Whether the connection stays open after the response: HTTP/1.1 unless `Connection: close`,
    /// HTTP/1.0 only with `Connection: keep-alive`.
    public var keepAlive: Bool

    public init(method: String, target: String, version: HTTPVersion = .http1_1,
                headers: HTTPHeaderFields = [], body: [UInt8] = [], keepAlive: Bool = true) {
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.body = body
        self.keepAlive = keepAlive
    }

    /// A GET (or HEAD) request as a client sends it, with a Host header.
    public static func get(_ target: String, host: String, keepAlive: Bool = true, method: String = "GET") -> HTTPRequest {
        HTTPRequest(method: method, target: target, headers: [("Host", host)], keepAlive: keepAlive)
    }

    /// The path of the target, without query or fragment; for an absolute URI
    /// ("http://host/hello?x") its path ("/hello", or "/" when it has none).
    public var path: String {
        var rest = Substring(target)
        if !rest.hasPrefix("/"), let scheme = rest.range(of: "://") {
            rest = rest[scheme.upperBound...]
            guard let slash = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }), rest[slash] == "/" else {
                return "/"
            }
            rest = rest[slash...]
        }
        if let end = rest.firstIndex(where: { $0 == "?" || $0 == "#" }) {
            rest = rest[..<end]
        }
        return String(rest)
    }

    /// The first value of the header `name` (case-insensitive).
    public func headerValue(_ name: String) -> String? { HeaderLookup.first(name, in: headers) }

    /// Every value of the header `name` (case-insensitive), in order.
    public func headerValues(_ name: String) -> [String] { HeaderLookup.all(name, in: headers) }

    /// The request on the wire. Adds Content-Length when there is a body and `Connection: close`
    /// when `keepAlive` is false (`Connection: keep-alive` for HTTP/1.0), unless already present.
    public func serialized() -> [UInt8] {
        var text = "\(method) \(target) \(version)\r\n"
        for (name, value) in headers {
            text += "\(HeaderLookup.sanitized(name)): \(HeaderLookup.sanitized(value))\r\n"
        }
        if !body.isEmpty && headerValue("Content-Length") == nil {
            text += "Content-Length: \(body.count)\r\n"
        }
        if headerValue("Connection") == nil {
            if !keepAlive && version.persistentByDefault {
                text += "Connection: close\r\n"
            } else if keepAlive && !version.persistentByDefault {
                text += "Connection: keep-alive\r\n"
            }
        }
        text += "\r\n"
        return Array(text.utf8) + body
    }
}

/// A response to serialize. `serialized` always frames it with Content-Length.
public struct HTTPResponse: Sendable {
    public var status: Int
    public var reason: String
    /// Extra headers. Content-Length and Connection are always generated by `serialized`, and any
    /// given here are ignored; a Server header here replaces the default `Server: swift-mtls`.
    public var headers: HTTPHeaderFields
    /// For a response to HEAD, still the body a GET would get: its length becomes Content-Length.
    public var body: [UInt8]

    public static let serverName = "swift-mtls"

    public init(status: Int, reason: String? = nil, headers: HTTPHeaderFields = [], body: [UInt8] = []) {
        self.status = status
        self.reason = reason ?? Self.reasonPhrase(for: status)
        self.headers = headers
        self.body = body
    }

    /// A plain-text error response ("404 Not Found\n") for 400, 404, 405, 413, 431, 501, 505 or any
    /// other status; `headers` are added (for example `Allow` for a 405).
    public static func error(status: Int, headers: HTTPHeaderFields = []) -> HTTPResponse {
        let reason = reasonPhrase(for: status)
        return HTTPResponse(status: status, reason: reason,
                            headers: [("Content-Type", "text/plain; charset=utf-8")] + headers,
                            body: Array("\(status) \(reason)\n".utf8))
    }

    public static func reasonPhrase(for status: Int) -> String {
        switch status {
        case 100: return "Continue"
        case 200: return "OK"
        case 204: return "No Content"
        case 304: return "Not Modified"
        case 400: return "Bad Request"
        case 403: return "Forbidden"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 408: return "Request Timeout"
        case 411: return "Length Required"
        case 413: return "Content Too Large"
        case 414: return "URI Too Long"
        case 431: return "Request Header Fields Too Large"
        case 500: return "Internal Server Error"
        case 501: return "Not Implemented"
        case 503: return "Service Unavailable"
        case 505: return "HTTP Version Not Supported"
        default: return "Status \(status)"
        }
    }

    /// The first value of the header `name` (case-insensitive).
    public func headerValue(_ name: String) -> String? { HeaderLookup.first(name, in: headers) }

    /// The response on the wire: status line, `Server: swift-mtls`, the headers, `Content-Length:
    /// <body.count>` and `Connection: keep-alive` or `Connection: close`. With `includeBody` false
    /// (the answer to HEAD) the body is left out but Content-Length still gives its length.
    public func serialized(keepAlive: Bool, includeBody: Bool) -> [UInt8] {
        var text = "HTTP/1.1 \(status) \(HeaderLookup.sanitized(reason))\r\n"
        text.reserveCapacity(128 + 64 * headers.count)  // one allocation for a usual head, not one per line
        if headerValue("Server") == nil {
            text += "Server: \(Self.serverName)\r\n"
        }
        for (name, value) in headers {
            let lowered = name.lowercased()
            if lowered == "content-length" || lowered == "connection" || lowered == "transfer-encoding" { continue }
            text += "\(HeaderLookup.sanitized(name)): \(HeaderLookup.sanitized(value))\r\n"
        }
        text += "Content-Length: \(body.count)\r\n"
        text += keepAlive ? "Connection: keep-alive\r\n" : "Connection: close\r\n"
        text += "\r\n"
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count + (includeBody ? body.count : 0))
        bytes += text.utf8
        if includeBody { bytes += body }
        return bytes
    }

    /// The answer to `request` on the wire: keeps the connection alive as the request asks, and
    /// leaves the body out when the request was HEAD.
    public func serialized(answering request: HTTPRequest) -> [UInt8] {
        serialized(keepAlive: request.keepAlive, includeBody: request.method != "HEAD")
    }
}

/// A response's status line and headers, as parsed by `HTTPResponseParser`.
public struct HTTPResponseHead: Sendable {
    public var version: HTTPVersion
    public var status: Int
    public var reason: String
    public var headers: HTTPHeaderFields
    /// Whether the server keeps the connection open after this response.
    public var keepAlive: Bool

    public func headerValue(_ name: String) -> String? { HeaderLookup.first(name, in: headers) }
    public func headerValues(_ name: String) -> [String] { HeaderLookup.all(name, in: headers) }
}

enum HeaderLookup {
    static func first(_ name: String, in headers: HTTPHeaderFields) -> String? {
        headers.first { equalsIgnoringASCIICase($0.name, name) }?.value
    }

    static func all(_ name: String, in headers: HTTPHeaderFields) -> [String] {
        headers.filter { equalsIgnoringASCIICase($0.name, name) }.map(\.value)
    }

    static func equalsIgnoringASCIICase(_ a: String, _ b: String) -> Bool {
        a.utf8.count == b.utf8.count && zip(a.utf8, b.utf8).allSatisfy { lower($0) == lower($1) }
    }

    static func lower(_ byte: UInt8) -> UInt8 {
        (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z")) ? byte | 0x20 : byte
    }

    /// The comma-separated tokens of every `name` header, lowercased ("Connection: close, Upgrade").
    static func tokens(_ name: String, in headers: HTTPHeaderFields) -> [String] {
        all(name, in: headers).flatMap { $0.split(separator: ",") }.map {
            $0.trimmingASCIIWhitespace().lowercased()
        }.filter { !$0.isEmpty }
    }

    /// No CR, LF or NUL can reach the wire through a header: they would split the message.
    static func sanitized(_ text: String) -> String {
        guard text.utf8.contains(where: { $0 == 13 || $0 == 10 || $0 == 0 }) else { return text }
        return String(text.map { ($0 == "\r" || $0 == "\n" || $0 == "\r\n" || $0 == "\0") ? " " : $0 })
    }
}

extension StringProtocol {
    func trimmingASCIIWhitespace() -> Substring {
        var slice = Substring(self)
        while let first = slice.first, first == " " || first == "\t" { slice = slice.dropFirst() }
        while let last = slice.last, last == " " || last == "\t" { slice = slice.dropLast() }
        return slice
    }
}
