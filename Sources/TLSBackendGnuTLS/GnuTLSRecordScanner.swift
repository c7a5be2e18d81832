/// Follows the record framing of the bytes the peer sends, without decrypting anything, to answer two
/// questions GnuTLS's error codes leave open: did the peer send something that is not TLS at all, and
/// did it send a plaintext alert where GnuTLS expected an encrypted record?
struct RecordScanner {
    /// Offset in the inbound stream of the first record header that cannot be TLS.
    private(set) var firstBadHeaderOffset: Int?
    /// The last unencrypted alert record seen (content type 21, two bytes): its description, and the
    /// stream offset just past it.
    private(set) var lastPlaintextAlert: (description: UInt8, end: Int)?

    private var header: [UInt8] = []
    private var bodyRemaining = 0
    private var alertBody: [UInt8]?
    private var offset = 0

    /// The largest record TLS 1.2 allows on the wire (2^14 + 2048); TLS 1.3's limit is lower.
    static let maximumRecordLength = 16384 + 2048

    mutating func scan(_ bytes: UnsafeRawBufferPointer) {
        var index = 0
        while index < bytes.count && firstBadHeaderOffset == nil {
            if bodyRemaining > 0 {
                let count = min(bodyRemaining, bytes.count - index)
                if alertBody != nil {
                    alertBody!.append(contentsOf: bytes[index..<index + count])
                }
                index += count
                offset += count
                bodyRemaining -= count
                if bodyRemaining == 0, let body = alertBody {
                    lastPlaintextAlert = (body[1], offset)
                    alertBody = nil
                }
                continue
            }
            header.append(bytes[index])
            index += 1
            offset += 1
            if !Self.plausibleHeader(header) {
                firstBadHeaderOffset = offset - header.count
                return
            }
            if header.count == 5 {
                bodyRemaining = Int(header[3]) << 8 | Int(header[4])
                if bodyRemaining > Self.maximumRecordLength {
                    firstBadHeaderOffset = offset - 5
                    return
                }
                alertBody = header[0] == 21 && bodyRemaining == 2 ? [] : nil
                header.removeAll(keepingCapacity: true)
            }
        }
    }

    /// True unless the header bytes seen so far cannot start a TLS record: content type 20...24,
    /// major version 3.
    static func plausibleHeader(_ bytes: [UInt8]) -> Bool {
        if let type = bytes.first, !(20...24).contains(type) { return false }
        if bytes.count > 1, bytes[1] != 3 { return false }
        return true
    }
}
