import TLSContract

/// The hello server's one resource: `GET /hello` greets the verified client by name.
public enum HelloResponder {
    public static let path = "/hello"
    public static let allowedMethods = ["GET", "HEAD"]

    /// `GET /hello` (any query) → 200 text/plain "hello, <identity>\n", "anonymous" without an
    /// identity; `HEAD /hello` → the same response, to be serialized without its body (see
    /// `HTTPResponse.serialized(answering:)`); another method on /hello → 405 with
    /// `Allow: GET, HEAD`; any other path → 404.
    public static func respond(to request: HTTPRequest, clientIdentity: String?) -> HTTPResponse {
        guard request.path == path else {
            return .error(status: 404)
        }
        guard allowedMethods.contains(request.method) else {
            return .error(status: 405, headers: [("Allow", allowedMethods.joined(separator: ", "))])
        }
        return HTTPResponse(status: 200, headers: [("Content-Type", "text/plain; charset=utf-8")],
                            body: Array(greeting(for: clientIdentity).utf8))
    }

    /// As `respond(to:clientIdentity:)`, greeting the peer by its `displayName`.
    public static func respond(to request: HTTPRequest, peer: PeerIdentity?) -> HTTPResponse {
        respond(to: request, clientIdentity: peer?.displayName)
    }

    /// "hello, <identity>\n".
    public static func greeting(for clientIdentity: String?) -> String {
        "hello, \(clientIdentity ?? "anonymous")\n"
    }
}
