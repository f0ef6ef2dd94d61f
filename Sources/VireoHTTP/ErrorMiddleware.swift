import Foundation
import Hummingbird
import Logging
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
            case 405: return VireoError(.invalidArgument, "method not allowed on this endpoint")
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
        let envelope = ErrorEnvelope(code: error.code, message: error.message, requestId: requestID)
        let data = (try? VireoJSON.encoder().encode(envelope)) ?? Data("{}".utf8)
        var headers: HTTPFields = [.contentType: "application/json"]
        if error.code == .unauthorized { headers[.wwwAuthenticate] = "Bearer" }
        return Response(
            status: HTTPResponse.Status(code: error.code.httpStatus), headers: headers,
            body: ResponseBody(byteBuffer: ByteBuffer(data: data)))
    }
}
