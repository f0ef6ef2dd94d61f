import Foundation
import VireoModel

/// A VM as the API shows it: the record, flattened, with the host's name resolved.
public struct VMView: Sendable, Codable, Equatable {
    public var id: VMID
    public var name: String
    public var image: String
    public var cpus: Int
    public var memoryMiB: Int
    public var state: VMState
    public var intent: PowerIntent
    public var host: String?
    public var pinnedHost: String?
    public var app: String?
    public var message: String?
    public var generation: Int
    /// Where the guest's services are reachable while it runs (see `VirtualMachine.address`).
    public var address: String?
    /// Launch to ready of the last start on its host, in milliseconds (see `VirtualMachine.lastBootMs`).
    public var lastBootMs: Int?
    public var placement: PlacementExplanation?
    public var createdAt: Date
    public var updatedAt: Date
    public var stateChangedAt: Date

    /// `withPlacement: false` leaves out the placement explanation (listings are summaries).
    public init(_ vm: VirtualMachine, hostName: String?, withPlacement: Bool = true) {
        id = vm.id
        name = vm.spec.name
        image = vm.spec.image
        cpus = vm.spec.cpus
        memoryMiB = vm.spec.memoryMiB
        state = vm.state
        intent = vm.intent
        host = hostName
        pinnedHost = vm.spec.host
        app = vm.spec.app
        message = vm.message
        generation = vm.generation
        address = vm.address
        lastBootMs = vm.lastBootMs
        placement = withPlacement ? vm.placement : nil
        createdAt = vm.createdAt
        updatedAt = vm.updatedAt
        stateChangedAt = vm.stateChangedAt
    }
}

/// One page of VMs, ordered by name. `next` is the cursor for the following page, if any.
public struct VMPage: Sendable, Codable, Equatable {
    public var items: [VMView]
    public var next: String?
    public init(items: [VMView], next: String?) {
        self.items = items
        self.next = next
    }
}

/// A host as the API shows it, with what is allocated on it.
public struct HostView: Sendable, Codable, Equatable {
    public var id: HostID
    public var name: String
    public var state: HostState
    public var driver: String
    public var cpus: Int
    public var memoryMiB: Int
    public var allocatedCPUs: Int
    public var allocatedMemoryMiB: Int
    public var vms: Int
    public var capabilities: [Capability]
    public var attributes: [String: String]
    public var address: String?
    public var registeredAt: Date
    public var lastHeartbeatAt: Date
    public var stateChangedAt: Date

    public init(_ host: HostRecord, allocatedCPUs: Int, allocatedMemoryMiB: Int, vms: Int) {
        id = host.id
        name = host.name
        state = host.state
        driver = host.fingerprint.driver
        cpus = host.fingerprint.cpus
        memoryMiB = host.fingerprint.memoryMiB
        self.allocatedCPUs = allocatedCPUs
        self.allocatedMemoryMiB = allocatedMemoryMiB
        self.vms = vms
        capabilities = host.fingerprint.capabilities
        attributes = host.fingerprint.attributes
        address = host.address
        registeredAt = host.registeredAt
        lastHeartbeatAt = host.lastHeartbeatAt
        stateChangedAt = host.stateChangedAt
    }
}

public struct HostList: Sendable, Codable, Equatable {
    public var items: [HostView]
    public init(items: [HostView]) { self.items = items }
}

/// What `POST /v1/apply` did to each document.
public struct ApplyResult: Sendable, Codable, Equatable {
    public enum Action: String, Sendable, Codable { case created, unchanged }
    public struct Item: Sendable, Codable, Equatable {
        public var kind: String
        public var name: String
        public var action: Action
        public init(kind: String, name: String, action: Action) {
            self.kind = kind
            self.name = name
            self.action = action
        }
    }
    public var items: [Item]
    public init(items: [Item]) { self.items = items }
}

/// The error envelope every failed request gets.
public struct ErrorEnvelope: Sendable, Codable, Equatable {
    public struct Body: Sendable, Codable, Equatable {
        public var code: VireoError.Code
        public var message: String
        public var requestId: String
    }
    public var error: Body
    public init(code: VireoError.Code, message: String, requestId: String) {
        error = Body(code: code, message: message, requestId: requestId)
    }
}

/// A state change, as streamed on `/v1/events`.
public struct ClusterEvent: Sendable, Codable, Equatable {
    public enum Kind: String, Sendable, Codable {
        case vmCreated = "vm.created"
        case vmState = "vm.state"
        case vmPlaced = "vm.placed"
        case vmDeleted = "vm.deleted"
        case hostRegistered = "host.registered"
        case hostState = "host.state"
        /// A live migration changed state; `name` is the VM.
        case migration = "migration"
    }
    /// Increases by one per event; clients resume with `Last-Event-ID`.
    public var seq: Int
    public var time: Date
    public var kind: Kind
    /// Name of the VM or host.
    public var name: String
    public var from: String?
    public var to: String?
    public var message: String?

    public init(seq: Int, time: Date, kind: Kind, name: String, from: String? = nil, to: String? = nil, message: String? = nil) {
        self.seq = seq
        self.time = time
        self.kind = kind
        self.name = name
        self.from = from
        self.to = to
        self.message = message
    }
}

public struct Health: Sendable, Codable, Equatable {
    public var status: String
    public var version: String
    public init(status: String, version: String) {
        self.status = status
        self.version = version
    }
}

/// A live migration, as the API shows it.
public struct MigrationView: Sendable, Codable, Equatable {
    public var id: MigrationID
    public var vm: String
    public var vmID: VMID
    public var source: String
    public var destination: String
    public var state: MigrationState
    public var reason: String
    public var message: String?
    public var progress: MigrationProgress?
    public var stats: MigrationStats?
    public var requestedAt: Date
    public var startedAt: Date?
    public var endedAt: Date?

    public init(_ migration: Migration, source: String, destination: String) {
        id = migration.id
        vm = migration.vmName
        vmID = migration.vmID
        self.source = source
        self.destination = destination
        state = migration.state
        reason = migration.reason
        message = migration.message
        progress = migration.progress
        stats = migration.stats
        requestedAt = migration.requestedAt
        startedAt = migration.startedAt
        endedAt = migration.endedAt
    }
}

public struct MigrationList: Sendable, Codable, Equatable {
    public var items: [MigrationView]
    public init(items: [MigrationView]) { self.items = items }
}
