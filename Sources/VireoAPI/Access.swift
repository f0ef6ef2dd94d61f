import Foundation
import VireoModel

/// Who made a request: the token's name and role (or `loopback`, an admin, for a request without a
/// token to an API that listens on loopback only).
public struct Caller: Sendable, Equatable {
    public var name: String
    public var role: AccessRole
    /// For `owner`: the applications it may change.
    public var apps: Set<String>

    public init(name: String, role: AccessRole, apps: Set<String> = []) {
        self.name = name
        self.role = role
        self.apps = apps
    }

    public init(_ token: AccessToken) {
        self.init(name: token.name, role: token.role, apps: Set(token.apps))
    }

    /// An agent that presented the certificate the cluster authority issued to `host`.
    public init(agentHost host: String) {
        self.init(name: "host:\(host)", role: .agent)
        self.agentHost = host
    }

    /// For an agent known by its certificate: the host it may speak for, and no other.
    public var agentHost: String?

    /// A request without a token to an API on loopback: the all-in-one's user, an admin.
    public static let loopback = Caller(name: "loopback", role: .admin)

    var described: String {
        agentHost.map { "the certificate of host '\($0)'" } ?? "token '\(name)' (\(role.rawValue))"
    }
}

/// What each role may do, in one place (docs/security.md has it as a table).
///
/// Most requests are decided from their method and path (`decide`). What the path cannot tell —
/// which applications a create, an apply or an import touches, whether a plan is executed — the
/// route checks once it has read the body (`permit`).
public enum AccessPolicy {
    public enum Decision: Sendable, Equatable {
        case allow
        /// Refused (403), and why.
        case deny(String)
        /// An owner's change to a VM (name or ID): allowed if the VM is in one of its applications.
        case ownerOfVM(String)
        /// Allowed this far; the route checks what the body changes with `permit`.
        case checkBody
    }

    /// What a request changes, as far as access is concerned.
    public enum Change: Sendable, Equatable {
        /// A VM of this application (nil: of none) is made or changed.
        case vm(app: String?)
        /// This application (its spec or objectives) is made or changed.
        case app(String)
        case context
        /// A rebalancing plan is executed.
        case executePlan
    }

    public static func decide(_ caller: Caller, method: String, path: String) -> Decision {
        let parts = path.split(separator: "/")
        let resource = parts.count > 1 && parts[0] == "v1" ? parts[1] : ""
        let reads = method == "GET" || method == "HEAD"
        if resource == "agent" {
            return caller.role == .admin || caller.role == .agent
                ? .allow : deny(caller, method, path, "only agents' tokens and admin use /v1/agent/")
        }
        if caller.role == .agent { return deny(caller, method, path, "an agent's token is for /v1/agent/ only") }
        if resource == "tokens" || resource == "audit" {
            return caller.role == .admin
                ? .allow : deny(caller, method, path, "only admin manages tokens and reads the audit trail")
        }
        if caller.role == .admin { return .allow }
        if reads {
            // A context's display is its keyboard and mouse, not a view.
            if resource == "contexts", parts.count == 4, parts[3] == "display", caller.role != .operator {
                return deny(caller, method, path, "a context's display is for admin and operator")
            }
            return .allow
        }
        // Planning is a question; executing the plan, a change the route checks.
        if resource == "plans" { return .checkBody }
        switch caller.role {
        case .operator:
            if resource == "vms" || resource == "contexts" { return .allow }
            if resource == "apply" { return .checkBody }
            if resource == "apps", parts.count == 4, parts[3] == "samples" { return .allow }
            return deny(
                caller, method, path, "an operator changes VMs, contexts, migrations and plans, not applications or settings")
        case .owner:
            if resource == "vms" {
                return parts.count >= 3 && parts[2] != "import" ? .ownerOfVM(String(parts[2])) : .checkBody
            }
            if resource == "apps", parts.count >= 3 {
                return caller.apps.contains(String(parts[2])) ? .allow : deny(caller, method, path, ownsOnly(caller))
            }
            if resource == "apply" { return .checkBody }
            return deny(caller, method, path, ownsOnly(caller))
        default:
            return deny(caller, method, path, "a viewer only reads")
        }
    }

    /// For `.ownerOfVM`: the decision once the VM's application is known (`nil`: in none).
    public static func decideOwnerOfVM(_ caller: Caller, method: String, path: String, app: String?) -> Decision {
        if let app, caller.apps.contains(app) { return .allow }
        return deny(caller, method, path, ownsOnly(caller))
    }

    /// Whether `caller` may make `changes` (the route's check of what a body asks for); a refusal
    /// is `forbidden`, naming the first change refused.
    public static func permit(_ caller: Caller?, _ changes: [Change]) throws(VireoError) {
        // No caller: the router without the access middleware (tests of routes alone).
        guard let caller, caller.role != .admin else { return }
        for change in changes {
            let allowed: Bool
            switch (caller.role, change) {
            case (.operator, .vm), (.operator, .context), (.operator, .executePlan): allowed = true
            case (.owner, .vm(let app?)), (.owner, .app(let app)): allowed = caller.apps.contains(app)
            default: allowed = false
            }
            guard allowed else {
                throw VireoError(.forbidden, "\(caller.described) may not \(describe(change)): \(rule(for: caller))")
            }
        }
    }

    /// What an apply of `documents` changes; `currentApp` gives the application of a VM that
    /// exists already (moving a VM out of an application changes that application too).
    public static func changes(of documents: [ManifestDocument], currentApp: (String) -> String??) -> [Change] {
        documents.flatMap { document -> [Change] in
            switch document {
            case .virtualMachine(let spec):
                if let existing = currentApp(spec.name), existing != spec.app { return [.vm(app: spec.app), .vm(app: existing)] }
                return [.vm(app: spec.app)]
            case .application(let spec): return [.app(spec.name)]
            case .slo(let slo): return [.app(slo.service)]
            case .context: return [.context]
            case .service: return []
            }
        }
    }

    private static func deny(_ caller: Caller, _ method: String, _ path: String, _ reason: String) -> Decision {
        .deny("\(caller.described) may not \(method) \(path): \(reason)")
    }

    private static func ownsOnly(_ caller: Caller) -> String {
        "an owner changes only its applications (\(caller.apps.sorted().joined(separator: ", "))) and the VMs in them"
    }

    private static func rule(for caller: Caller) -> String {
        switch caller.role {
        case .operator: "an operator changes VMs, contexts, migrations and plans, not applications or settings"
        case .owner: ownsOnly(caller)
        case .viewer: "a viewer only reads"
        case .agent: "an agent's token is for /v1/agent/ only"
        case .admin: "admin may do everything"
        }
    }

    private static func describe(_ change: Change) -> String {
        switch change {
        case .vm(let app?): "change VMs of application '\(app)'"
        case .vm(nil): "change VMs outside an application"
        case .app(let name): "change application '\(name)'"
        case .context: "open or change contexts"
        case .executePlan: "execute a plan"
        }
    }
}

/// `POST /v1/tokens`.
public struct TokenRequest: Sendable, Equatable {
    public var name: String
    public var role: AccessRole
    public var apps: [String]
    public var expiresAt: Date?

    public init(name: String, role: AccessRole, apps: [String] = [], expiresAt: Date? = nil) {
        self.name = name
        self.role = role
        self.apps = apps
        self.expiresAt = expiresAt
    }

    /// Names the controller's own tokens and callers have in the audit trail.
    public static let reservedNames: Set<String> = ["admin", "join", "loopback"]

    /// Validates a request body; `now` bounds the expiry.
    public static func fromAPIBody(_ body: JSONValue, now: Date) throws(VireoError) -> TokenRequest {
        let fields = try FieldReader(body, path: "")
        try fields.rejectUnknown(allowed: ["name", "role", "apps", "expiresAt"])
        let name = try fields.requiredString("name")
        try ResourceName.validate(name, field: "name")
        if reservedNames.contains(name) {
            throw VireoError.invalid(
                field: "name", value: "'\(name)'", "is reserved (\(reservedNames.sorted().joined(separator: ", ")))")
        }
        let roleText = try fields.requiredString("role")
        guard let role = AccessRole(rawValue: roleText) else {
            throw VireoError.invalid(field: "role", value: "'\(roleText)'", "expected one of \(AccessRole.names)")
        }
        var apps: [String] = []
        for (path, value) in try fields.array("apps") ?? [] {
            guard case .string(let app) = value else {
                throw VireoError.invalid(field: path, value: "\(value)", "expected a string")
            }
            try ResourceName.validate(app, field: path)
            if !apps.contains(app) { apps.append(app) }
        }
        if role == .owner, apps.isEmpty {
            throw VireoError.invalid(field: "apps", value: "[]", "an owner's token names the applications it may change")
        }
        if role != .owner, !apps.isEmpty {
            throw VireoError.invalid(
                field: "apps", value: "[\(apps.joined(separator: ", "))]", "only an owner's token names applications")
        }
        var expiresAt: Date?
        if let text = try fields.string("expiresAt") {
            guard let date = try? Date(text, strategy: .iso8601) else {
                throw VireoError.invalid(field: "expiresAt", value: "'\(text)'", "expected an RFC 3339 time")
            }
            guard date > now else {
                throw VireoError.invalid(field: "expiresAt", value: "'\(text)'", "must be in the future")
            }
            expiresAt = date
        }
        return TokenRequest(name: name, role: role, apps: apps, expiresAt: expiresAt)
    }
}

/// A token as the API shows it: never its secret or the secret's hash.
public struct TokenView: Sendable, Codable, Equatable {
    public var name: String
    public var role: AccessRole
    public var apps: [String]
    public var createdAt: Date
    public var expiresAt: Date?
    public var revokedAt: Date?
    public var status: AccessToken.Status

    public init(_ token: AccessToken, now: Date) {
        name = token.name
        role = token.role
        apps = token.apps
        createdAt = token.createdAt
        expiresAt = token.expiresAt
        revokedAt = token.revokedAt
        status = token.status(at: now)
    }
}

/// `POST /v1/tokens`' answer: the token and its secret, shown this once.
public struct TokenCreated: Sendable, Codable, Equatable {
    public var token: TokenView
    public var secret: String

    public init(token: TokenView, secret: String) {
        self.token = token
        self.secret = secret
    }
}

public struct TokenList: Sendable, Codable, Equatable {
    public var items: [TokenView]
    public init(items: [TokenView]) { self.items = items }
}

public struct AuditList: Sendable, Codable, Equatable {
    public var items: [AuditEntry]
    public init(items: [AuditEntry]) { self.items = items }
}

/// The answer to `POST /v1/hosts/{host}/revoke`: the agent certificates issued to `host` before
/// `revokedBefore` are refused.
public struct CertificateRevocation: Sendable, Codable, Equatable {
    public var host: String
    public var revokedBefore: Date
    /// Whether a host of that name is registered (a removed host's certificates can be revoked too).
    public var registered: Bool

    public init(host: String, revokedBefore: Date, registered: Bool) {
        self.host = host
        self.revokedBefore = revokedBefore
        self.registered = registered
    }
}
