import Hummingbird
import VireoModel

/// Keeps web pages of other sites off an API that a browser can reach.
///
/// - A request that would change state is refused when a browser sends it from a page of another
///   origin (cross-site request forgery). On loopback the API asks for no token, so without this
///   any web page the user opens could make the browser POST to it (a form or a `no-cors` fetch
///   needs no permission to be sent, only to be read). Browsers send `Origin` with such requests;
///   the CLI, agents and scripts send none, and the console's own requests carry this server's
///   origin.
/// - With `loopbackOnly` (an API without tokens, listening on loopback), every request must name
///   the server by a loopback address. A site that points a name of its own at 127.0.0.1 (DNS
///   rebinding) would otherwise be this server's origin in the browser's eyes, and read and write.
struct SameOriginMiddleware<Context: RequestContext>: RouterMiddleware {
    let loopbackOnly: Bool

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response
    {
        if loopbackOnly, let authority = request.head.authority, !Self.namesLoopback(authority) {
            throw VireoError(
                .forbidden,
                "Host \(authority) refused: this API has no tokens because it listens on loopback, and it answers only to a loopback address (127.0.0.1, localhost, [::1])"
            )
        }
        if request.method != .get && request.method != .head, let origin = request.headers[.origin] {
            let authority = request.head.authority ?? ""
            guard Self.isOwn(origin, authority: authority) else {
                throw VireoError(
                    .forbidden,
                    "\(request.method) from a page of \(origin) refused: only pages this server serves (its console, \(authority.isEmpty ? "its own address" : "http://\(authority)")) may change state from a browser"
                )
            }
        }
        return try await next(request, context)
    }

    /// Whether a `Host` (`127.0.0.1:7480`, `localhost`, `[::1]:7480`) names a loopback address:
    /// `localhost`, `::1`, or four decimal octets (each at most 255) the first of which is `127`.
    /// Read byte by byte: it runs on every request.
    static func namesLoopback(_ authority: String) -> Bool {
        let bytes = authority.utf8
        if bytes.first == UInt8(ascii: "[") {
            let host = bytes.dropFirst().prefix { $0 != UInt8(ascii: "]") }
            return host.elementsEqual("::1".utf8) && bytes.count > host.count + 1  // and its "]"
        }
        let host = bytes.prefix { $0 != UInt8(ascii: ":") }
        if host.elementsEqual("localhost".utf8) { return true }
        var octets = 0
        var value = 0
        var digits = 0
        var first = ""
        for byte in host {
            if byte == UInt8(ascii: ".") {
                guard digits > 0 else { return false }
                octets += 1
                value = 0
                digits = 0
            } else if byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") {
                value = value * 10 + Int(byte - UInt8(ascii: "0"))
                digits += 1
                guard value <= 255 else { return false }
                if octets == 0 { first.unicodeScalars.append(Unicode.Scalar(byte)) }
            } else {
                return false
            }
        }
        return digits > 0 && octets == 3 && first == "127"
    }

    /// Whether a browser's `Origin` is this server's own, as the request addressed it.
    static func isOwn(_ origin: String, authority: String?) -> Bool {
        guard let authority, !authority.isEmpty else { return false }
        return origin == "http://\(authority)" || origin == "https://\(authority)"
    }
}
