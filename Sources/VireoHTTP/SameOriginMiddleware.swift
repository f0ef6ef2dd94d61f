import Hummingbird
import VireoModel

/// Refuses a request that would change state when a browser sends it from a page of another
/// origin (cross-site request forgery). On loopback the API asks for no token, so without this any
/// web page the user opens could make the browser POST to it (a form or a `no-cors` fetch needs no
/// permission to be sent, only to be read). Browsers send `Origin` with such requests; the CLI,
/// agents and scripts send none, and the console's own requests carry this server's origin.
struct SameOriginMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response
    {
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

    /// Whether a browser's `Origin` is this server's own, as the request addressed it.
    static func isOwn(_ origin: String, authority: String?) -> Bool {
        guard let authority, !authority.isEmpty else { return false }
        return origin == "http://\(authority)" || origin == "https://\(authority)"
    }
}
