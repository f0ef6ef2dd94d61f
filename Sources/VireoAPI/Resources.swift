import Foundation
import VireoModel
import VireoTelemetry

/// A VM as the API shows it: the record, flattened, with the host's name resolved.
public struct VMView: Sendable, Codable, Equatable {
    public var id: VMID
    public var name: String
    public var image: String
    public var cpus: Int
    public var memoryMiB: Int
    /// The disk size the VM asked for, in MiB; absent: the image's.
    public var diskMiB: Int?
    /// What happens when its host is lost (absent: `never`).
    public var restartPolicy: RestartPolicy?
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
    /// For a running VM whose host can send it live: every other host's verdict on taking it live
    /// (`GET /v1/vms/{vm}` only).
    public var liveMoves: [HostVerdict]?
    public var createdAt: Date
    public var updatedAt: Date
    public var stateChangedAt: Date

    /// `withPlacement: false` leaves out the placement explanation (listings are summaries).
    public init(_ vm: VirtualMachine, hostName: String?, withPlacement: Bool = true, liveMoves: [HostVerdict]? = nil) {
        self.liveMoves = liveMoves
        id = vm.id
        name = vm.spec.name
        image = vm.spec.image
        cpus = vm.spec.cpus
        memoryMiB = vm.spec.memoryMiB
        diskMiB = vm.spec.diskMiB
        restartPolicy = vm.spec.restartPolicy
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
    /// Recent CPU use as a fraction of what the host may use (its agent's measure, or the sum of
    /// its VMs'); absent until measured.
    public var cpuLoad: Double?

    public init(_ host: HostRecord, allocatedCPUs: Int, allocatedMemoryMiB: Int, vms: Int, cpuLoad: Double? = nil) {
        self.cpuLoad = cpuLoad
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
    public enum Action: String, Sendable, Codable { case created, updated, unchanged }
    public struct Item: Sendable, Codable, Equatable {
        public var kind: String
        public var name: String
        public var action: Action
        /// What changed, one line each (`objective latency: target 0.05 → 0.1`).
        public var changes: [String]?
        public init(kind: String, name: String, action: Action, changes: [String]? = nil) {
            self.kind = kind
            self.name = name
            self.action = action
            self.changes = changes
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
        /// An application was created, changed or deleted; `name` is the application.
        case app = "app"
        /// An objective changed state (`from`/`to` are SLO states); `name` is `app/objective`.
        case slo = "slo"
        /// A rebalancing plan was executed or ended (`to` is its state); `name` is the plan ID.
        case plan = "plan"
        /// Something happened to a desktop context on its host (`to`: opened, ready, reset, kept,
        /// closed, failed, repaired, restarted; `message` starts with the host); `name` is the
        /// context. Times are the host's: what it did while the controller was away arrives later.
        case context = "context"
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
    /// `shared` (only memory and devices moved) or `copy` (the disk was copied too).
    public var storage: MigrationStorage
    /// `live`, or `cold` (stopped, disk copied, started again).
    public var kind: MigrationKind

    public init(_ migration: Migration, source: String, destination: String) {
        storage = migration.storage ?? .shared
        kind = migration.kind ?? .live
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

/// An application as the API shows it: its spec, its VMs, and where each objective stands.
public struct AppView: Sendable, Codable, Equatable {
    public struct VM: Sendable, Codable, Equatable {
        public var name: String
        public var state: VMState
        public var host: String?
        public var address: String?
        public init(name: String, state: VMState, host: String?, address: String?) {
            self.name = name
            self.state = state
            self.host = host
            self.address = address
        }
    }
    /// The latest value of a series, as the telemetry engine keeps it.
    public typealias CurrentValue = CurrentSeriesValue

    public var name: String
    public var spec: ApplicationSpec
    public var vms: [VM]
    public var objectives: [ObjectiveStatus]
    /// The worst objective state: breaching over warning over ok over unknown.
    public var state: SLOState
    public var lastSampleAt: Date?
    public var lastError: String?
    /// The latest value of each series (leaving out histogram buckets in listings).
    public var current: [CurrentValue]?
    public var generation: Int
    public var createdAt: Date
    public var updatedAt: Date

    public init(
        app: AppRecord, vms: [VM], objectives: [ObjectiveStatus], lastSampleAt: Date?, lastError: String?,
        current: [CurrentValue]?
    ) {
        name = app.name
        spec = app.spec
        self.vms = vms
        self.objectives = objectives
        state = objectives.map(\.state).max { AppView.rank($0) < AppView.rank($1) } ?? .unknown
        self.lastSampleAt = lastSampleAt
        self.lastError = lastError
        self.current = current
        generation = app.generation
        createdAt = app.createdAt
        updatedAt = app.updatedAt
    }

    static func rank(_ state: SLOState) -> Int {
        switch state {
        case .unknown: 0
        case .ok: 1
        case .warning: 2
        case .breaching: 3
        }
    }
}

public struct AppList: Sendable, Codable, Equatable {
    public var items: [AppView]
    public init(items: [AppView]) { self.items = items }
}

/// What `DELETE /v1/apps/{app}` did.
public struct AppDeletion: Sendable, Codable, Equatable {
    public var name: String
    /// VMs deleted with the application (`vms=delete`).
    public var deletedVMs: [String]
    /// VMs left running, no longer part of an application (`vms=keep`).
    public var keptVMs: [String]
    public init(name: String, deletedVMs: [String], keptVMs: [String]) {
        self.name = name
        self.deletedVMs = deletedVMs
        self.keptVMs = keptVMs
    }
}

/// `GET /v1/apps/{app}/series`.
public struct SeriesResponse: Sendable, Codable, Equatable {
    public var app: String
    public var metric: String
    public var from: Date
    public var to: Date
    public var series: [SeriesData]
    public init(app: String, metric: String, from: Date, to: Date, series: [SeriesData]) {
        self.app = app
        self.metric = metric
        self.from = from
        self.to = to
        self.series = series
    }
}

public struct SeriesData: Sendable, Codable, Equatable {
    public struct Point: Sendable, Codable, Equatable {
        public var t: Date
        public var v: Double
        public var min: Double?
        public var max: Double?
        public var mean: Double?
        public init(t: Date, v: Double, min: Double? = nil, max: Double? = nil, mean: Double? = nil) {
            self.t = t
            self.v = v
            self.min = min
            self.max = max
            self.mean = mean
        }
    }
    public var name: String
    public var labels: [String: String]
    public var resolution: String
    public var points: [Point]
    public init(name: String, labels: [String: String], resolution: String, points: [Point]) {
        self.name = name
        self.labels = labels
        self.resolution = resolution
        self.points = points
    }
}

/// `POST /v1/apps/{app}/samples`: how many samples were taken in.
public struct IngestResult: Sendable, Codable, Equatable {
    public var accepted: Int
    public init(accepted: Int) { self.accepted = accepted }
}

/// `POST /v1/plans`: plan with a policy (the cluster's, else `slo`); `execute` starts the moves
/// and stores the plan, otherwise it is a dry run.
public struct PlanRequest: Sendable, Codable, Equatable {
    public var policy: String?
    public var execute: Bool?

    public init(policy: String? = nil, execute: Bool? = nil) {
        self.policy = policy
        self.execute = execute
    }
}

/// Executed plans, newest first.
public struct PlanList: Sendable, Codable, Equatable {
    public var items: [Plan]
    public init(items: [Plan]) { self.items = items }
}

/// `GET /v1/rebalance`: how the cluster rebalances itself, and what its last automatic plan
/// found (moves or not).
public struct RebalanceStatus: Sendable, Codable, Equatable {
    public var settings: RebalanceSettings
    /// The policies that can be set.
    public var policies: [String]
    public var lastPlan: Plan?

    public init(settings: RebalanceSettings, policies: [String], lastPlan: Plan?) {
        self.settings = settings
        self.policies = policies
        self.lastPlan = lastPlan
    }
}

/// An alert firing now (`GET /v1/alerts`).
public struct ActiveAlert: Sendable, Codable, Equatable {
    public var app: String
    public var objective: String
    /// The alert policy's name.
    public var name: String
    public var severity: String
    public var since: Date
    /// Why the condition holds.
    public var reason: String

    public init(app: String, objective: String, name: String, severity: String, since: Date, reason: String) {
        self.app = app
        self.objective = objective
        self.name = name
        self.severity = severity
        self.since = since
        self.reason = reason
    }
}

/// One notification to one target, and how its delivery went.
public struct AlertDelivery: Sendable, Codable, Equatable {
    public enum State: String, Sendable, Codable { case pending, delivered, failed }
    public var id: Int
    public var time: Date
    public var app: String
    public var objective: String
    public var alert: String
    /// `firing` or `resolved`, as in Alertmanager's format.
    public var status: String
    public var target: String
    public var url: String
    public var state: State
    public var attempts: Int
    /// The receiver's last HTTP status, if it answered.
    public var httpStatus: Int?
    public var error: String?

    public init(
        id: Int, time: Date, app: String, objective: String, alert: String, status: String, target: String, url: String,
        state: State = .pending, attempts: Int = 0, httpStatus: Int? = nil, error: String? = nil
    ) {
        self.id = id
        self.time = time
        self.app = app
        self.objective = objective
        self.alert = alert
        self.status = status
        self.target = target
        self.url = url
        self.state = state
        self.attempts = attempts
        self.httpStatus = httpStatus
        self.error = error
    }
}

/// `GET /v1/alerts`: what fires now, and the latest deliveries, newest first.
public struct AlertList: Sendable, Codable, Equatable {
    public var active: [ActiveAlert]
    public var deliveries: [AlertDelivery]

    public init(active: [ActiveAlert], deliveries: [AlertDelivery]) {
        self.active = active
        self.deliveries = deliveries
    }
}
