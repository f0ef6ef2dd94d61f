import Foundation
import Hummingbird
import Logging
import Synchronization
import VireoAPI
import VireoModel

/// Turns every error into the one envelope, with the status its code maps to.
struct ErrorEnvelopeMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response
    {
        do {
            return try await next(request, context)
        } catch {
            let vireoError = Self.vireoError(from: error)
            if vireoError.code == .internal {
                context.logger.error("request failed", metadata: ["error": "\(error)", "path": "\(request.uri.path)"])
            }
            return Self.response(for: vireoError, requestID: context.id)
        }
    }

    static func vireoError(from error: any Error) -> VireoError {
        switch error {
        case let error as VireoError:
            return error
        case let error as HTTPError:
            switch error.status.code {
            case 404: return VireoError(.notFound, "no such endpoint")
            case 405: return VireoError(.methodNotAllowed, "method not allowed on this endpoint")
            case 413: return VireoError(.payloadTooLarge, "request body is too large")
            case 401: return VireoError(.unauthorized, error.body ?? "unauthorized")
            case 400..<500: return VireoError(.invalidArgument, error.body ?? "bad request")
            default: return VireoError(.internal, error.body ?? "internal error")
            }
        case let error as DecodingError:
            return VireoError(.invalidArgument, describe(error))
        default:
            return VireoError(.internal, "internal error")
        }
    }

    static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            let p = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
            return p.isEmpty ? "body" : p
        }
        switch error {
        case .typeMismatch(let type, let c): return "\(path(c)): expected \(type)"
        case .valueNotFound(let type, let c): return "\(path(c)): expected \(type), got null"
        case .keyNotFound(let key, let c): return "\(path(c)).\(key.stringValue): is required"
        case .dataCorrupted(let c): return "\(path(c)): \(c.debugDescription)"
        @unknown default: return "body: malformed"
        }
    }

    static func response(for error: VireoError, requestID: String) -> Response {
        errorResponse(error, requestID: requestID)
    }
}

/// An error as the API answers it: the envelope, with the status its code maps to (and, for 401,
/// `WWW-Authenticate`). Also what a standby controller answers with.
public func errorResponse(_ error: VireoError, requestID: String) -> Response {
    let envelope = ErrorEnvelope(code: error.code, message: error.message, requestId: requestID)
    let data = (try? VireoJSON.encoder().encode(envelope)) ?? Data("{}".utf8)
    var headers: HTTPFields = [.contentType: "application/json"]
    if error.code == .unauthorized { headers[.wwwAuthenticate] = "Bearer" }
    return Response(
        status: HTTPResponse.Status(code: error.code.httpStatus), headers: headers,
        body: ResponseBody(byteBuffer: ByteBuffer(data: data)))
}

/// The methods each route path has, to answer a known path asked with another method: 405 with
/// `Allow`, rather than the router's 404. Filled once the router has its routes.
final class RouteMethods: Sendable {
    private struct Pattern {
        /// nil: a parameter, which matches any one component.
        var parts: [Substring?]
        /// A trailing `**`: matches any rest.
        var rest: Bool
        var methods: Set<String>
    }
    private let patterns = Mutex<[Pattern]>([])
    /// The methods of each path without parameters: most requests are found here with one lookup.
    private let exact = Mutex<[String: Set<String>]>([:])

    func set(_ routes: [(method: String, path: String)]) {
        var byPath: [String: Set<String>] = [:]
        for route in routes { byPath[route.path, default: []].insert(route.method) }
        exact.withLock { $0 = byPath.filter { path, _ in !path.contains("{") && !path.contains("*") } }
        patterns.withLock {
            $0 = byPath.map { path, methods in
                var parts = path.split(separator: "/").map { $0.hasPrefix("{") || $0 == "*" ? nil : $0 }
                let rest = parts.last == "**"
                if rest { parts.removeLast() }
                return Pattern(parts: parts, rest: rest, methods: methods)
            }
        }
    }

    /// The methods `path` has, sorted, when it has some but not `method`.
    func allowed(_ path: String, besides method: String) -> [String]? {
        if exact.withLock({ $0[path]?.contains(method) ?? false }) { return nil }
        let parts = path.split(separator: "/")
        return patterns.withLock { patterns in
            var methods: Set<String> = []
            for pattern in patterns where pattern.rest ? parts.count > pattern.parts.count : parts.count == pattern.parts.count {
                guard zip(pattern.parts, parts).allSatisfy({ $0 == nil || $0 == $1 }) else { continue }
                if pattern.methods.contains(method) { return nil }
                methods.formUnion(pattern.methods)
            }
            return methods.isEmpty ? nil : methods.sorted()
        }
    }
}

/// Answers a known path asked with a method it does not have: 405 with `Allow`, before anyone is
/// identified (nothing can change, so nothing is audited).
struct MethodNotAllowedMiddleware<Context: RequestContext>: RouterMiddleware {
    let routes: RouteMethods

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response
    {
        guard let allowed = routes.allowed(request.uri.path, besides: request.method.rawValue) else {
            return try await next(request, context)
        }
        var response = ErrorEnvelopeMiddleware<Context>.response(
            for: VireoError(
                .methodNotAllowed,
                "\(request.method.rawValue) is not a method of \(request.uri.path): it has \(allowed.joined(separator: ", "))"),
            requestID: context.id)
        response.headers[.allow] = allowed.joined(separator: ", ")
        return response
    }
}
