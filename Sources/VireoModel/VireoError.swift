/// The one error type that crosses Vireo's boundaries (API, CLI, agent link).
///
/// Codes are stable strings: clients and scripts match on them. A code that this build does not
/// know (from a newer server) decodes to `.unknown` instead of failing.
public struct VireoError: Error, Sendable, Equatable, Codable, CustomStringConvertible {
    public enum Code: String, Sendable, Codable, CaseIterable {
        case invalidArgument = "invalid_argument"
        case notFound = "not_found"
        case conflict = "conflict"
        case unauthorized = "unauthorized"
        case forbidden = "forbidden"
        case failedPrecondition = "failed_precondition"
        case unsupported = "unsupported"
        case unavailable = "unavailable"
        case payloadTooLarge = "payload_too_large"
        /// A known path asked with a method it does not have; the answer's `Allow` lists those it has.
        case methodNotAllowed = "method_not_allowed"
        case `internal` = "internal"
        case unknown = "unknown"

        public init(from decoder: any Decoder) throws {
            let raw = try decoder.singleValueContainer().decode(String.self)
            self = Code(rawValue: raw) ?? .unknown
        }

        /// The HTTP status for this code. The only place where that mapping lives.
        public var httpStatus: Int {
            switch self {
            case .invalidArgument: 400
            case .unauthorized: 401
            case .forbidden: 403
            case .notFound: 404
            case .methodNotAllowed: 405
            case .conflict: 409
            case .failedPrecondition: 412
            case .payloadTooLarge: 413
            case .unsupported: 501
            case .unavailable: 503
            case .internal, .unknown: 500
            }
        }
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }

    public static func invalid(field: String, value: String, _ reason: String) -> VireoError {
        VireoError(.invalidArgument, "\(field): \(reason) (got \(value))")
    }

    public static func notFound(_ kind: String, _ name: String) -> VireoError {
        VireoError(.notFound, "\(kind) '\(name)' not found")
    }
}
