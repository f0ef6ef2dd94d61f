import Foundation
import VireoModel

/// What `open` asks for: a context, where to run it, and whether to wait until it is ready.
public struct ContextOpenRequest: Sendable, Codable, Equatable {
    public var spec: ContextSpec
    /// The host to open it on; the controller chooses when nil (an agent's local API: this host).
    public var host: String?
    /// Return only once the context runs from its clean state (otherwise once its VM is started).
    public var wait: Bool

    public init(spec: ContextSpec, host: String? = nil, wait: Bool = false) {
        self.spec = spec
        self.host = host
        self.wait = wait
    }
}

/// Every context, and the pools of booted disposables the hosts keep ready.
public struct ContextList: Sendable, Codable, Equatable {
    public var items: [Context]
    public var pools: [ContextPoolStatus]
    public init(items: [Context], pools: [ContextPoolStatus] = []) {
        self.items = items
        self.pools = pools
    }
}

/// One host's pool of booted disposables for one image.
public struct ContextPoolStatus: Sendable, Codable, Equatable {
    public var host: String
    public var image: String
    public var cpus: Int
    public var memoryMiB: Int
    /// How many it keeps ready.
    public var target: Int
    /// Booted, clean state saved: handed out at once.
    public var ready: Int
    /// Booting or saving.
    public var warming: Int
    /// What the pool's VMs hold in memory on the host now (their QEMU processes' resident memory),
    /// in MiB; nil when the driver cannot tell.
    public var residentMiB: Int?

    public init(
        host: String, image: String, cpus: Int, memoryMiB: Int, target: Int, ready: Int, warming: Int, residentMiB: Int?
    ) {
        self.host = host
        self.image = image
        self.cpus = cpus
        self.memoryMiB = memoryMiB
        self.target = target
        self.ready = ready
        self.warming = warming
        self.residentMiB = residentMiB
    }
}

/// The context verbs, served by the controller (for every host) and by each agent's local API
/// (for its own host, with or without the controller). Names are unique per host; `host` picks
/// one where the same name is open on several hosts.
public protocol ContextService: Sendable {
    func listContexts() async throws -> ContextList
    func context(_ name: String, host: String?) async throws -> Context
    func openContext(_ request: ContextOpenRequest) async throws -> Context
    /// Brings the context back to its clean state; the answer carries `resetMs`. A persistent
    /// context is reset only with `force`.
    func resetContext(_ name: String, host: String?, force: Bool) async throws -> Context
    /// Makes the context's current state its clean state.
    func keepContext(_ name: String, host: String?) async throws -> Context
    /// Closes the context: its VM and disk are gone. The answer is its last view, state `closed`.
    func closeContext(_ name: String, host: String?) async throws -> Context
    /// The end of the context's serial console log (at most `ContextLogs.maxBytes`), its last
    /// `tail` lines when given.
    func contextLogs(_ name: String, host: String?, tail: Int?) async throws -> String
}

public enum ContextLogs {
    /// How much of a context's console log a request returns at most: its end.
    public static let maxBytes = 64 << 10
}

/// Turns an API body or a manifest's `spec` into a context request, or says exactly what is wrong.
public enum ContextValidation {
    /// A context's memory unless it says otherwise (a desktop guest wants more than a server's).
    public static let defaultMemoryMiB = 256
    /// The image of a context that names none.
    public static let defaultImage = "web"

    static let apiFields: Set<String> = ["name", "kind", "image", "cpus", "memory", "network", "display", "host", "wait"]
    static let manifestFields: Set<String> = ["kind", "image", "cpus", "memory", "network", "display", "host"]

    /// Validates the body of `POST /v1/contexts`.
    public static func fromAPIBody(_ body: JSONValue) throws(VireoError) -> ContextOpenRequest {
        let fields = try FieldReader(body, path: "")
        try fields.rejectUnknown(allowed: apiFields)
        let name = try fields.requiredString("name")
        var request = try self.request(name: name, nameField: "name", fields: fields)
        request.wait = try fields.bool("wait") ?? false
        return request
    }

    /// Validates a manifest's `spec` whose name came from `metadata.name`.
    public static func fromManifest(name: String, nameField: String, spec: FieldReader) throws(VireoError)
        -> ContextOpenRequest
    {
        try spec.rejectUnknown(allowed: manifestFields)
        return try request(name: name, nameField: nameField, fields: spec)
    }

    static func request(name: String, nameField: String, fields: FieldReader) throws(VireoError) -> ContextOpenRequest {
        try ResourceName.validate(name, field: nameField)
        let kindText = try fields.requiredString("kind")
        guard let kind = ContextKind(rawValue: kindText) else {
            throw VireoError.invalid(field: fields.field("kind"), value: "'\(kindText)'", "expected disposable or persistent")
        }
        let sizing = try VMSpecValidation.sizing(fields, defaultMemoryMiB: defaultMemoryMiB, defaultImage: defaultImage)
        let network = try ContextNetwork(try fields.string("network") ?? "isolated", field: fields.field("network"))
        var display: DisplayKind?
        if let text = try fields.string("display"), text != "none" {
            guard let kind = DisplayKind(rawValue: text) else {
                throw VireoError.invalid(field: fields.field("display"), value: "'\(text)'", "expected vnc or none")
            }
            display = kind
        }
        let host = try fields.string("host")
        if let host { try ResourceName.validate(host, field: fields.field("host")) }
        return ContextOpenRequest(
            spec: ContextSpec(
                name: name, kind: kind, image: sizing.image, cpus: sizing.cpus, memoryMiB: sizing.memoryMiB,
                network: network, display: display),
            host: host)
    }
}
