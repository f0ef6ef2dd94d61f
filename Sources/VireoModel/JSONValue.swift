/// A parsed JSON or YAML document before it is validated into a model type, so that one
/// validator serves API bodies and manifests and can name the exact field that is wrong.
public enum JSONValue: Sendable, Equatable, Codable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let n = try? c.decode(Double.self) {
            self = .number(n)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([JSONValue].self) {
            self = .array(a)
        } else {
            self = .object(try c.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .number(let n): try c.encode(n)
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    /// The member `key` of an object; nil for other values.
    public subscript(key: String) -> JSONValue? {
        if case .object(let object) = self { object[key] } else { nil }
    }

    public var objectValue: [String: JSONValue]? {
        if case .object(let object) = self { object } else { nil }
    }

    public var stringValue: String? {
        if case .string(let string) = self { string } else { nil }
    }

    public var doubleValue: Double? {
        if case .number(let number) = self { number } else { nil }
    }

    /// The number as an integer, when it is one.
    public var intValue: Int? {
        if case .number(let n) = self, n == n.rounded(), abs(n) < 9e15 { Int(n) } else { nil }
    }

    public var arrayValue: [JSONValue]? {
        if case .array(let array) = self { array } else { nil }
    }

    /// The JSON type name, for error messages.
    public var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "boolean"
        case .number: "number"
        case .string: "string"
        case .array: "array"
        case .object: "object"
        }
    }

    /// A short rendering of the value for error messages.
    public var shown: String {
        switch self {
        case .null: return "null"
        case .bool(let b): return String(b)
        case .number(let n): return n == n.rounded() && abs(n) < 1e15 ? String(Int64(n)) : String(n)
        case .string(let s): return "'" + (s.count > 40 ? String(s.prefix(40)) + "…" : s) + "'"
        case .array(let a): return "an array of \(a.count)"
        case .object: return "an object"
        }
    }
}

/// Reads typed fields out of one object, naming `path.key` in every error, and rejects fields
/// it does not know (a typo must not be silently ignored).
public struct FieldReader {
    public let object: [String: JSONValue]
    public let path: String

    public init(_ value: JSONValue, path: String) throws(VireoError) {
        guard case .object(let object) = value else {
            throw VireoError.invalid(field: path.isEmpty ? "body" : path, value: value.shown, "must be an object")
        }
        self.object = object
        self.path = path
    }

    public func field(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    public func rejectUnknown(allowed: Set<String>) throws(VireoError) {
        for key in object.keys.sorted() where !allowed.contains(key) {
            throw VireoError.invalid(
                field: field(key), value: object[key]!.shown,
                "unknown field; expected one of: \(allowed.sorted().joined(separator: ", "))")
        }
    }

    public func string(_ key: String) throws(VireoError) -> String? {
        switch object[key] {
        case nil, .null: return nil
        case .string(let s): return s
        case let other?: throw VireoError.invalid(field: field(key), value: other.shown, "must be a string")
        }
    }

    public func requiredString(_ key: String) throws(VireoError) -> String {
        guard let s = try string(key) else { throw VireoError(.invalidArgument, "\(field(key)): is required") }
        return s
    }

    public func int(_ key: String) throws(VireoError) -> Int? {
        switch object[key] {
        case nil, .null: return nil
        case .number(let n):
            guard n == n.rounded(), abs(n) < 1e15 else {
                throw VireoError.invalid(field: field(key), value: JSONValue.number(n).shown, "must be an integer")
            }
            return Int(n)
        case let other?: throw VireoError.invalid(field: field(key), value: other.shown, "must be an integer")
        }
    }

    public func requiredInt(_ key: String) throws(VireoError) -> Int {
        guard let n = try int(key) else { throw VireoError(.invalidArgument, "\(field(key)): is required") }
        return n
    }

    /// A size given as a string with a unit (`256MiB`) or as a number of bytes, in whole MiB.
    public func sizeMiB(_ key: String) throws(VireoError) -> Int? {
        switch object[key] {
        case nil, .null: return nil
        case .string(let s): return try ByteSize.parseAPIMiB(s, field: field(key))
        case .number(let n):
            guard n == n.rounded(), n >= 0, n < 1.8e19 else {
                throw VireoError.invalid(field: field(key), value: JSONValue.number(n).shown, "not a size")
            }
            return try ByteSize.mib(fromBytes: UInt64(n), field: field(key), shown: JSONValue.number(n).shown)
        case let other?:
            throw VireoError.invalid(field: field(key), value: other.shown, "must be a size such as 256MiB")
        }
    }

    public func double(_ key: String) throws(VireoError) -> Double? {
        switch object[key] {
        case nil, .null: return nil
        case .number(let n): return n
        case let other?: throw VireoError.invalid(field: field(key), value: other.shown, "must be a number")
        }
    }

    public func bool(_ key: String) throws(VireoError) -> Bool? {
        switch object[key] {
        case nil, .null: return nil
        case .bool(let b): return b
        case let other?: throw VireoError.invalid(field: field(key), value: other.shown, "must be true or false")
        }
    }

    /// A duration written `500ms`, `5s`, `5m`, `1h`, `7d` (or a number of seconds), in seconds.
    public func duration(_ key: String) throws(VireoError) -> Double? {
        switch object[key] {
        case nil, .null: return nil
        case .number(let n) where n.isFinite && n >= 0: return n
        case .string(let s):
            guard let seconds = DurationText.seconds(s) else {
                throw VireoError.invalid(field: field(key), value: "'\(s)'", "not a duration; write e.g. 500ms, 30s, 5m, 1h, 7d")
            }
            return seconds
        case let other?:
            throw VireoError.invalid(field: field(key), value: other.shown, "not a duration; write e.g. 500ms, 30s, 5m, 1h, 7d")
        }
    }

    /// The elements of an array field, each with its path (`objectives[2]`).
    public func array(_ key: String) throws(VireoError) -> [(path: String, value: JSONValue)]? {
        switch object[key] {
        case nil, .null: return nil
        case .array(let items): return items.enumerated().map { ("\(field(key))[\($0.offset)]", $0.element) }
        case let other?: throw VireoError.invalid(field: field(key), value: other.shown, "must be a list")
        }
    }

    public func object(_ key: String) throws(VireoError) -> FieldReader? {
        guard let value = object[key], value != .null else { return nil }
        return try FieldReader(value, path: field(key))
    }
}
