/// Decodes a `Transfer-Encoding: chunked` body (RFC 9112 §7.1): chunk sizes in hex with optional
/// extensions (ignored), the data, and a last chunk of size 0 followed by optional trailer fields
/// (ignored) and an empty line. Bare LF line ends are tolerated, as in the heads.
enum ChunkedBody {
    /// The decoded body and how many bytes of `bytes` it took, or nil until all of it has arrived.
    static func decode(_ bytes: ArraySlice<UInt8>, maxBodyBytes: Int) throws(HTTPParseError) -> (body: [UInt8], length: Int)? {
        var body: [UInt8] = []
        var index = bytes.startIndex
        while true {
            guard let (sizeLine, afterSize) = line(in: bytes, from: index) else { return nil }
            let sizeText = sizeLine.prefix { $0 != UInt8(ascii: ";") }.filter { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\t") }
            guard !sizeText.isEmpty, sizeText.count <= 8, let size = Int(String(decoding: sizeText, as: UTF8.self), radix: 16) else {
                throw .badRequest("malformed chunk size '\(HeadParsing.latin1(sizeLine.prefix(40)))'")
            }
            if size == 0 {
                // Trailer fields until an empty line.
                var cursor = afterSize
                while true {
                    guard let (trailer, next) = line(in: bytes, from: cursor) else { return nil }
                    cursor = next
                    if trailer.isEmpty { return (body, cursor - bytes.startIndex) }
                }
            }
            guard body.count + size <= maxBodyBytes else {
                throw HTTPParseError(status: 413, detail: "the body is larger than \(maxBodyBytes) bytes")
            }
            guard bytes.endIndex - afterSize >= size else { return nil }
            body += bytes[afterSize..<afterSize + size]
            guard let (end, next) = line(in: bytes, from: afterSize + size) else { return nil }
            guard end.isEmpty else { throw .badRequest("a chunk is longer than its size says") }
            index = next
        }
    }

    /// The line starting at `start` without its CRLF (or LF), and where the next one starts.
    private static func line(in bytes: ArraySlice<UInt8>, from start: Int) -> (ArraySlice<UInt8>, Int)? {
        guard start <= bytes.endIndex, let newline = bytes[start...].firstIndex(of: UInt8(ascii: "\n")) else { return nil }
        var end = newline
        if end > start && bytes[end - 1] == UInt8(ascii: "\r") { end -= 1 }
        return (bytes[start..<end], newline + 1)
    }
}
