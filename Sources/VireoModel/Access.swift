import Foundation

/// What the holder of a token may do (docs/security.md has the whole table).
public enum AccessRole: String, Sendable, Codable, CaseIterable, Comparable {
    /// Everything, tokens and the audit trail included.
    case admin
    /// VM and context lifecycle, migrations, executed plans; reads everything but tokens and audit.
    case `operator`
    /// Reads everything but tokens and audit; changes nothing.
    case viewer
    /// Changes only the applications it names and the VMs in them; reads as a viewer.
    case owner
    /// An agent's: registers a host, heartbeats, sends samples; nothing else (as `join.token`).
    case agent

    public static func < (a: AccessRole, b: AccessRole) -> Bool { a.rank < b.rank }
    private var rank: Int { Self.allCases.firstIndex(of: self)! }

    public static var names: String { allCases.map(\.rawValue).joined(separator: ", ") }
}

/// An API token as the store keeps it: its name, role and lifetime, and the SHA-256 of its
/// secret. The secret itself is shown once, when the token is made, and kept nowhere.
public struct AccessToken: Sendable, Codable, Equatable {
    public var name: String
    public var role: AccessRole
    /// For `owner`: the applications it may change (and the VMs in them); empty for other roles.
    public var apps: [String]
    public var createdAt: Date
    /// After this the token is refused; nil: it does not expire.
    public var expiresAt: Date?
    /// When it was revoked; it is refused from then on, and its name is not given again.
    public var revokedAt: Date?
    /// Lowercase hex SHA-256 of the secret.
    public var secretHash: String

    public init(
        name: String, role: AccessRole, apps: [String] = [], createdAt: Date, expiresAt: Date? = nil, revokedAt: Date? = nil,
        secretHash: String
    ) {
        self.name = name
        self.role = role
        self.apps = apps
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.revokedAt = revokedAt
        self.secretHash = secretHash
    }

    public enum Status: String, Sendable, Codable { case active, expired, revoked }

    /// A new secret: 32 bytes from the system's random generator, as 64 hex digits.
    public static func newSecret() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
    }

    public func status(at now: Date) -> Status {
        if revokedAt != nil { return .revoked }
        if let expiresAt, expiresAt <= now { return .expired }
        return .active
    }
}

/// One mutating request, as the audit trail keeps it: who (the token's name) with which role, what
/// (method and path with its query), when, the answer's status, and the request ID that the
/// answer and the server's log carry.
public struct AuditEntry: Sendable, Codable, Equatable {
    /// Assigned by the store, increasing; 0 before it is stored.
    public var seq: Int64
    public var at: Date
    public var who: String
    public var role: AccessRole
    public var method: String
    public var path: String
    public var status: Int
    public var requestId: String
    /// Why it was refused or failed; nil when it succeeded.
    public var error: String?

    public init(
        seq: Int64 = 0, at: Date, who: String, role: AccessRole, method: String, path: String, status: Int, requestId: String,
        error: String? = nil
    ) {
        self.seq = seq
        self.at = at
        self.who = who
        self.role = role
        self.method = method
        self.path = path
        self.status = status
        self.requestId = requestId
        self.error = error
    }
}
