import Foundation

/// Identifier of a virtual machine; a lowercase UUID string, stable for the VM's lifetime.
public struct VMID: Hashable, Sendable, Codable, Comparable, CustomStringConvertible {
    public let rawValue: String
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public static func generate() -> VMID { VMID(UUID().uuidString.lowercased()) }
    public init(from decoder: any Decoder) throws {
        rawValue = try decoder.singleValueContainer().decode(String.self)
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
    public var description: String { rawValue }
    public static func < (a: VMID, b: VMID) -> Bool { a.rawValue < b.rawValue }
}

/// Identifier of a host (one agent); stable across agent restarts because agents register by name.
public struct HostID: Hashable, Sendable, Codable, Comparable, CustomStringConvertible {
    public let rawValue: String
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public static func generate() -> HostID { HostID(UUID().uuidString.lowercased()) }
    public init(from decoder: any Decoder) throws {
        rawValue = try decoder.singleValueContainer().decode(String.self)
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
    public var description: String { rawValue }
    public static func < (a: HostID, b: HostID) -> Bool { a.rawValue < b.rawValue }
}

/// Names of VMs, hosts and applications: DNS-label-like, so they can become host names,
/// file names and metric labels without escaping.
public enum ResourceName {
    public static let maxLength = 63

    /// Returns nil when `name` is valid, otherwise the reason it is not.
    public static func problem(with name: String) -> String? {
        if name.isEmpty { return "must not be empty" }
        if name.utf8.count > maxLength { return "must be at most \(maxLength) characters" }
        for byte in name.utf8 {
            let ok = (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x30 && byte <= 0x39) || byte == 0x2D
            if !ok { return "must contain only lowercase letters, digits and '-'" }
        }
        if name.hasPrefix("-") || name.hasSuffix("-") { return "must start and end with a letter or digit" }
        return nil
    }

    public static func validate(_ name: String, field: String) throws(VireoError) {
        if let problem = problem(with: name) {
            throw VireoError.invalid(field: field, value: "'\(name)'", "name \(problem)")
        }
    }
}
