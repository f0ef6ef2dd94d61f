import Foundation

/// One QMP command: its wire name, the arguments it is sent with and the reply it returns.
///
/// A command is a value; `QMPClient.execute(_:timeout:)` sends it and decodes QEMU's `return`
/// member into `Response`. Commands without arguments leave `Arguments` as `QMP.NoArguments`
/// (no `arguments` member is sent); commands that reply `{}` leave `Response` as `QMP.Empty`.
public protocol QMPCommand: Sendable {
    associatedtype Arguments: Encodable & Sendable = QMP.NoArguments
    associatedtype Response: Decodable & Sendable = QMP.Empty
    /// The name QEMU knows the command by (`query-migrate`, `system_powerdown`).
    static var name: String { get }
    var arguments: Arguments { get }
}

extension QMPCommand where Arguments == QMP.NoArguments {
    public var arguments: QMP.NoArguments { QMP.NoArguments() }
}

// MARK: Wire format

extension QMPCommand {
    /// The line QEMU is sent for this command (without its newline): `execute`, `arguments`
    /// unless there are none, and the `id` QEMU copies into its reply.
    func request(id: Int) throws -> Data {
        let sent = arguments is QMP.NoArguments ? nil : arguments
        return try JSONEncoder().encode(QMPRequest(execute: Self.name, arguments: sent, id: id))
    }

    /// Decodes the `return` member of a successful reply line. A reply of another shape throws
    /// `QMPError.protocolViolation` naming the command and the field.
    static func response(from reply: Data) throws -> Response {
        do {
            return try JSONDecoder().decode(QMPReply<Response>.self, from: reply).value
        } catch let error as DecodingError {
            throw QMPError(kind: .protocolViolation, message: "\(name): \(QMPReply<Response>.describe(error))")
        }
    }
}

private struct QMPRequest<Arguments: Encodable>: Encodable {
    var execute: String
    /// Left out when nil.
    var arguments: Arguments?
    var id: Int
}

private struct QMPReply<Value: Decodable>: Decodable {
    var value: Value
    enum CodingKeys: String, CodingKey { case value = "return" }

    /// Which field of the reply was missing or of the wrong type, as a path from `return`.
    static func describe(_ error: DecodingError) -> String {
        func path(_ keys: [any CodingKey]) -> String {
            let fields = keys.dropFirst().map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
            return fields.isEmpty ? "the reply" : "field '\(fields.hasPrefix(".") ? fields.dropFirst() : Substring(fields))'"
        }
        switch error {
        case .keyNotFound(let key, let context):
            return context.codingPath.isEmpty
                ? "the reply has no '\(key.stringValue)' member"
                : "\(path(context.codingPath + [key])) is missing"
        case .typeMismatch(let type, let context):
            return "\(path(context.codingPath)) is not \(typeName(type))"
        case .valueNotFound(let type, let context):
            return "\(path(context.codingPath)) is null, expected \(typeName(type))"
        case .dataCorrupted(let context):
            return "\(path(context.codingPath)): \(context.debugDescription)"
        @unknown default:
            return "\(error)"
        }
    }

    private static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Bool.Type: "a boolean"
        case is Int.Type, is Int64.Type, is UInt64.Type: "an integer"
        case is Double.Type: "a number"
        case is [String: Any].Type: "an object"
        case is [Any].Type: "an array"
        default: "a \(type)"
        }
    }
}
