/// The bytes received but not yet parsed, with an incremental search for the end of a message head,
/// so that feeding one byte at a time costs linear, not quadratic, time.
struct MessageBuffer: Sendable {
    private(set) var bytes: [UInt8] = []
    /// The first unconsumed byte: the start of the message being parsed.
    private(set) var start = 0
    /// Where the search for the empty line ending the head resumes.
    private var scanIndex = 0
    /// The start of the line the search is in.
    private var lineStart = 0

    var count: Int { bytes.count - start }

    mutating func append(_ data: UnsafeRawBufferPointer) {
        bytes.append(contentsOf: data)
    }

    mutating func append(_ data: some Collection<UInt8>) {
        bytes.append(contentsOf: data)
    }

    /// Drops the CRLFs (or bare LFs) a client may send between messages (RFC 9112 §2.2).
    /// Returns false when a lone CR at the end leaves it undecided.
    mutating func skipEmptyLines() -> Bool {
        guard scanIndex == start else { return true }
        while start < bytes.count {
            if bytes[start] == UInt8(ascii: "\n") {
                start += 1
            } else if bytes[start] == UInt8(ascii: "\r") {
                guard start + 1 < bytes.count else { resetScan(); return false }
                guard bytes[start + 1] == UInt8(ascii: "\n") else { break }
                start += 2
            } else {
                break
            }
        }
        resetScan()
        return true
    }

    /// The end (one past the LF of the empty line) of the head that begins at `start`, or nil if it has
    /// not all arrived. A head longer than `limit` bytes, terminator included, is a 431.
    mutating func findHeadEnd(limit: Int) throws(HTTPParseError) -> Int? {
        var index = scanIndex
        defer { scanIndex = index }
        while index < bytes.count {
            if bytes[index] == UInt8(ascii: "\n") {
                let length = index - lineStart
                let empty = length == 0 || (length == 1 && bytes[lineStart] == UInt8(ascii: "\r"))
                if empty && lineStart > start {
                    let end = index + 1
                    guard end - start <= limit else { throw Self.headTooLarge(limit) }
                    index = end
                    return end
                }
                lineStart = index + 1
            }
            index += 1
        }
        if bytes.count - start > limit { throw Self.headTooLarge(limit) }
        return nil
    }

    private static func headTooLarge(_ limit: Int) -> HTTPParseError {
        HTTPParseError(status: 431, detail: "the header section is longer than \(limit) bytes")
    }

    /// The head's lines, without their CR LF and without the empty line that ends it.
    func headLines(end: Int) -> [ArraySlice<UInt8>] {
        var lines: [ArraySlice<UInt8>] = []
        var lineBegin = start
        for index in start..<end where bytes[index] == UInt8(ascii: "\n") {
            var line = bytes[lineBegin..<index]
            if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
            lines.append(line)
            lineBegin = index + 1
        }
        if lines.last?.isEmpty == true { lines.removeLast() }
        return lines
    }

    /// The `length` bytes at `offset` past the start, as an array.
    func slice(from offset: Int, count length: Int) -> [UInt8] {
        Array(bytes[(start + offset)..<(start + offset + length)])
    }

    /// Everything from `offset` past the start to the end.
    func rest(from offset: Int) -> [UInt8] {
        Array(bytes[(start + offset)...])
    }

    /// Drops `n` bytes from the front; the next message begins after them.
    mutating func consume(_ n: Int) {
        start += n
        if start == bytes.count {
            bytes.removeAll(keepingCapacity: bytes.count <= 64 * 1024)
            start = 0
        } else if start >= 4096 && start >= bytes.count / 2 {
            bytes.removeFirst(start)
            start = 0
        }
        resetScan()
    }

    mutating func removeAll() {
        bytes.removeAll()
        start = 0
        resetScan()
    }

    private mutating func resetScan() {
        scanIndex = start
        lineStart = start
    }
}

/// Rules shared by the request and response parsers.
enum HeadParsing {
    /// RFC 9110 tchar.
    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return Array("!#$%&'*+-.^_`|~".utf8).contains(byte)
        }
    }

    /// "HTTP/1.1" → 1.1. Nil when it is not HTTP-version syntax; major versions other than 1 are a 505.
    static func version(_ text: ArraySlice<UInt8>) throws(HTTPParseError) -> HTTPVersion {
        let bytes = Array(text)
        guard bytes.count == 8, bytes[0..<5].elementsEqual("HTTP/".utf8), bytes[6] == UInt8(ascii: "."),
              let major = digit(bytes[5]), let minor = digit(bytes[7])
        else {
            throw .badRequest("'\(latin1(text))' is not an HTTP version")
        }
        guard major == 1 else {
            throw HTTPParseError(status: 505, detail: "HTTP/\(major).\(minor) is not supported (HTTP/1.x only)")
        }
        return HTTPVersion(major: major, minor: minor)
    }

    static func digit(_ byte: UInt8) -> Int? {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) ? Int(byte - UInt8(ascii: "0")) : nil
    }

    /// "Name: value" with optional whitespace around the value. Obsolete line folding, whitespace
    /// before the colon and control characters in the value are refused (400).
    static func headerField(_ line: ArraySlice<UInt8>) throws(HTTPParseError) -> (name: String, value: String) {
        guard let first = line.first, first != UInt8(ascii: " "), first != UInt8(ascii: "\t") else {
            throw .badRequest("obsolete header line folding is not accepted")
        }
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else {
            throw .badRequest("header line without a colon: '\(latin1(line.prefix(64)))'")
        }
        let name = line[line.startIndex..<colon]
        guard !name.isEmpty, name.allSatisfy(isTokenByte) else {
            throw .badRequest("invalid header name '\(latin1(name.prefix(64)))'")
        }
        var value = line[(colon + 1)...]
        while let byte = value.first, byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") { value = value.dropFirst() }
        while let byte = value.last, byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") { value = value.dropLast() }
        guard value.allSatisfy({ $0 == UInt8(ascii: "\t") || ($0 >= 0x20 && $0 != 0x7F) }) else {
            throw .badRequest("control character in the value of header '\(latin1(name))'")
        }
        return (latin1(name), text(value))
    }

    /// The message body length from Content-Length: nil when absent. Repeated headers (or a
    /// comma-separated list) must all agree. Values beyond 18 digits come back as `Int.max`.
    static func contentLength(_ headers: HTTPHeaderFields) throws(HTTPParseError) -> Int? {
        var result: Int?
        for value in HeaderLookup.all("Content-Length", in: headers) {
            for item in value.split(separator: ",", omittingEmptySubsequences: false) {
                let digits = item.trimmingASCIIWhitespace()
                guard !digits.isEmpty, digits.utf8.allSatisfy({ digit($0) != nil }) else {
                    throw .badRequest("invalid Content-Length '\(value)'")
                }
                let significant = digits.drop { $0 == "0" }
                let length = significant.count > 18 ? Int.max : (Int(significant) ?? 0)
                if let result, result != length {
                    throw .badRequest("conflicting Content-Length values")
                }
                result = length
            }
        }
        return result
    }

    /// Whether the connection persists after a message with these headers (RFC 9112 §9.3).
    static func keepAlive(version: HTTPVersion, headers: HTTPHeaderFields) -> Bool {
        let tokens = HeaderLookup.tokens("Connection", in: headers)
        if tokens.contains("close") { return false }
        return version.persistentByDefault || tokens.contains("keep-alive")
    }

    /// UTF-8 when it is valid, else ISO 8859-1 (lossless for obs-text).
    static func text(_ bytes: ArraySlice<UInt8>) -> String {
        var decoder = UTF8()
        var iterator = bytes.makeIterator()
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue: continue
            case .emptyInput: return String(decoding: bytes, as: UTF8.self)
            case .error: return latin1(bytes)
            }
        }
    }

    static func latin1(_ bytes: ArraySlice<UInt8>) -> String {
        // Almost every head is ASCII, which is the same in Latin-1 and UTF-8: one validating copy
        // instead of a scalar at a time (this ran for every header of every request).
        if bytes.allSatisfy({ $0 < 0x80 }) { return String(decoding: bytes, as: UTF8.self) }
        var scalars = String.UnicodeScalarView()
        scalars.append(contentsOf: bytes.map { Unicode.Scalar($0) })
        return String(scalars)
    }
}
