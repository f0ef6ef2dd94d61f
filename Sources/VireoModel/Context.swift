import Foundation

/// How a VM's screen is shown.
public enum DisplayKind: String, Sendable, Codable, Equatable, CaseIterable {
    /// A VNC server on the host's loopback.
    case vnc
}

/// Whether a desktop context keeps what happens in it.
public enum ContextKind: String, Sendable, Codable, Equatable, CaseIterable {
    /// Thrown away at every reset: comes back to its clean state (disk, memory and devices as they
    /// were once it had booted, or at its last `keep`). A browser or personal context.
    case disposable
    /// Keeps its disk across resets of other contexts, agent restarts and host reboots; `reset`
    /// is refused unless forced. A work context.
    case persistent
}

/// Where a desktop context is in its life, as its host sees it.
public enum ContextState: String, Sendable, Codable, Equatable, CaseIterable {
    /// Its VM is booting.
    case starting
    /// Booted; its clean state is being saved.
    case saving
    /// In use.
    case running
    /// Going back to its clean state.
    case resetting
    /// Making its current state the clean one.
    case keeping
    /// Being closed: its VM and disk are going away.
    case closing
    /// Closed: gone (only in the answer to `close`).
    case closed
    /// Not running (after a host reboot, until it is started again).
    case stopped
    /// Could not start or be brought back; `message` says why.
    case failed
}

/// The network a context is on.
public enum ContextNetwork: Sendable, Equatable, Hashable, CustomStringConvertible {
    /// A network of its own: it reaches nothing and nothing reaches it.
    case isolated
    /// A named network on its host, shared with the other contexts on it (and nothing else).
    case named(String)

    public init(_ text: String, field: String) throws(VireoError) {
        if text == "isolated" {
            self = .isolated
        } else {
            if let problem = ResourceName.problem(with: text) {
                throw VireoError.invalid(field: field, value: "'\(text)'", "expected isolated or a network name that \(problem)")
            }
            self = .named(text)
        }
    }

    public var description: String {
        switch self {
        case .isolated: "isolated"
        case .named(let name): name
        }
    }
}

extension ContextNetwork: Codable {
    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do {
            self = try ContextNetwork(text, field: "network")
        } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: error.message))
        }
    }
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// What a context is made of: what `open` asks for.
public struct ContextSpec: Sendable, Codable, Equatable {
    public var name: String
    public var kind: ContextKind
    public var image: String
    public var cpus: Int
    public var memoryMiB: Int
    public var network: ContextNetwork
    public var display: DisplayKind?

    public init(
        name: String, kind: ContextKind, image: String, cpus: Int, memoryMiB: Int, network: ContextNetwork = .isolated,
        display: DisplayKind? = nil
    ) {
        self.name = name
        self.kind = kind
        self.image = image
        self.cpus = cpus
        self.memoryMiB = memoryMiB
        self.network = network
        self.display = display
    }
}

/// A desktop context as its host reports it and the API shows it.
public struct Context: Sendable, Codable, Equatable {
    public var name: String
    public var kind: ContextKind
    public var state: ContextState
    /// The host it runs on.
    public var host: String
    public var image: String
    public var cpus: Int
    public var memoryMiB: Int
    public var network: ContextNetwork
    /// The guest's address on its network, while it runs.
    public var address: String?
    /// Where its display is served (`127.0.0.1:PORT`, VNC), while it runs with one.
    public var display: String?
    /// Resets since it was opened.
    public var resets: Int
    /// When its current clean state was taken (at open, or at the last `keep`).
    public var cleanSince: Date?
    /// The last reset, from the request reaching the host to the guest running again from its
    /// clean state, in milliseconds, as the host measured it.
    public var resetMs: Int?
    /// The hypervisor's part of `resetMs`: loading the saved state.
    public var loadMs: Int?
    /// Whether it was handed out from the host's pool of booted disposables.
    public var fromPool: Bool
    public var openedAt: Date
    /// The VM that runs it.
    public var vm: VMID
    public var message: String?

    public init(
        spec: ContextSpec, state: ContextState, host: String, vm: VMID, openedAt: Date, address: String? = nil,
        display: String? = nil, resets: Int = 0, cleanSince: Date? = nil, resetMs: Int? = nil, loadMs: Int? = nil,
        fromPool: Bool = false, message: String? = nil
    ) {
        name = spec.name
        kind = spec.kind
        self.state = state
        self.host = host
        image = spec.image
        cpus = spec.cpus
        memoryMiB = spec.memoryMiB
        network = spec.network
        self.address = address
        self.display = display
        self.resets = resets
        self.cleanSince = cleanSince
        self.resetMs = resetMs
        self.loadMs = loadMs
        self.fromPool = fromPool
        self.openedAt = openedAt
        self.vm = vm
        self.message = message
    }
}
