import Foundation
import VireoModel

/// Sent by an agent when it starts. Hosts are keyed by name: re-registering keeps the host's ID.
public struct AgentRegistration: Sendable, Codable, Equatable {
    public var name: String
    public var fingerprint: HostFingerprint
    public var address: String?
    public init(name: String, fingerprint: HostFingerprint, address: String? = nil) {
        self.name = name
        self.fingerprint = fingerprint
        self.address = address
    }
}

public struct AgentRegistrationResponse: Sendable, Codable, Equatable {
    public var hostID: HostID
    /// How often the controller expects a heartbeat, in milliseconds.
    public var heartbeatIntervalMs: Int
    /// How long the agent may keep the VMs that restart elsewhere (`restartPolicy: always`)
    /// running without an answer from the controller, in milliseconds, counted from the sending of
    /// its last answered heartbeat; then it stops them at once (it fences itself), because the
    /// controller starts them on other hosts soon after. Absent: never (controllers that do not
    /// restart VMs elsewhere).
    public var fenceAfterMs: Int?
    public init(hostID: HostID, heartbeatIntervalMs: Int, fenceAfterMs: Int? = nil) {
        self.hostID = hostID
        self.heartbeatIntervalMs = heartbeatIntervalMs
        self.fenceAfterMs = fenceAfterMs
    }
}

/// `POST /v1/agent/certificate`: an agent that joins a controller with its own certificate
/// authority (`--tls-auto`) asks, with the join token, for a client certificate for its host.
public struct AgentCertificateRequest: Sendable, Codable, Equatable {
    /// The host the certificate names: the agent's `--name`.
    public var host: String
    /// A PEM certificate signing request for the agent's key; its subject is not used.
    public var csr: String

    public init(host: String, csr: String) {
        self.host = host
        self.csr = csr
    }

    /// Largest CSR accepted, in bytes (one for a P-256 key is under 1 KiB).
    public static let maxCSRBytes = 16 * 1024

    /// Validates a request body, naming the field at fault.
    public static func fromAPIBody(_ body: JSONValue) throws(VireoError) -> AgentCertificateRequest {
        let fields = try FieldReader(body, path: "")
        try fields.rejectUnknown(allowed: ["host", "csr"])
        let host = try fields.requiredString("host")
        try ResourceName.validate(host, field: "host")
        let csr = try fields.requiredString("csr")
        guard csr.utf8.count <= maxCSRBytes else {
            throw VireoError.invalid(field: "csr", value: "(\(csr.utf8.count) bytes)", "is longer than \(maxCSRBytes) bytes")
        }
        return AgentCertificateRequest(host: host, csr: csr)
    }
}

/// The answer to `POST /v1/agent/certificate`.
public struct AgentCertificate: Sendable, Codable, Equatable {
    /// The agent's client certificate (PEM), naming its host.
    public var certificate: String
    /// The certificate of the authority that issued it, and the controller's (PEM).
    public var caCertificate: String
    public var expiresAt: Date

    public init(certificate: String, caCertificate: String, expiresAt: Date) {
        self.certificate = certificate
        self.caCertificate = caCertificate
        self.expiresAt = expiresAt
    }
}

/// What an agent reports about one VM it runs.
public struct InstanceReport: Sendable, Codable, Equatable {
    public enum State: String, Sendable, Codable { case stopped, starting, running, stopping, failed }
    public var id: VMID
    public var state: State
    /// The generation of the desired state the agent last acted on.
    public var generation: Int
    public var message: String?
    /// Where the guest's services are reachable from its host, if the driver gives it a network.
    public var address: String?
    /// Launch to ready of the last start, in milliseconds, when the driver measures it.
    public var bootMs: Int?
    /// CPU time its hypervisor process has used, seconds, when the driver can tell: the
    /// controller turns it into the VM's recent CPU use for rebalancing.
    public var cpuSeconds: Double?
    /// Resident memory of its hypervisor process, bytes, when the driver can tell: the
    /// controller records it in the cluster's usage history.
    public var residentBytes: UInt64?
    public init(
        id: VMID, state: State, generation: Int, message: String? = nil, address: String? = nil, bootMs: Int? = nil,
        cpuSeconds: Double? = nil, residentBytes: UInt64? = nil
    ) {
        self.id = id
        self.state = state
        self.generation = generation
        self.message = message
        self.address = address
        self.bootMs = bootMs
        self.cpuSeconds = cpuSeconds
        self.residentBytes = residentBytes
    }
}

/// New serial console output of one VM, read from where the controller said it has it up to.
public struct ConsoleReport: Sendable, Codable, Equatable {
    public var id: VMID
    public var chunk: ConsoleChunk
    public init(id: VMID, chunk: ConsoleChunk) {
        self.id = id
        self.chunk = chunk
    }
}

/// What a host tells the controller about a migration it takes part in.
public struct MigrationReport: Sendable, Codable, Equatable {
    public var id: MigrationID
    /// Destination: `ready` (listening on `incomingURI`) or `failed`. Source: `running` (with
    /// `progress`), `completed` (with `stats`) or `failed`. A cold move turns it round: the source
    /// reports `ready` (the VM stopped, its disk offered at `incomingURI`), the destination
    /// `completed` (with `stats`) once the VM is there; both settle.
    public var state: MigrationState
    public var incomingURI: String?
    public var progress: MigrationProgress?
    public var stats: MigrationStats?
    public var message: String?
    /// Destination: it has taken the VM over (completed) or discarded its copy (failed).
    public var settled: Bool?

    public init(
        id: MigrationID, state: MigrationState, incomingURI: String? = nil, progress: MigrationProgress? = nil,
        stats: MigrationStats? = nil, message: String? = nil, settled: Bool? = nil
    ) {
        self.id = id
        self.state = state
        self.incomingURI = incomingURI
        self.progress = progress
        self.stats = stats
        self.message = message
        self.settled = settled
    }
}

/// A migration the host takes part in, as the controller sees it now.
public struct MigrationOrder: Sendable, Codable, Equatable {
    public enum Role: String, Sendable, Codable { case source, destination }
    public var id: MigrationID
    public var role: Role
    public var state: MigrationState
    public var vm: DesiredVM
    /// The guest's address, which it keeps on the destination.
    public var guestAddress: String?
    /// Where the destination listens, once it is ready.
    public var incomingURI: String?
    /// Shared disk, or a copy made during the move (absent: shared).
    public var storage: MigrationStorage?
    /// Live or cold (absent: live). In a cold move the source gets ready (stops the VM and offers
    /// its disk at `incomingURI`) and the destination copies it and starts the VM.
    public var kind: MigrationKind?
    /// A live move's TLS credentials for this host's end, while it is under way: the destination
    /// admits only the source they name, the source sends only to that destination. Absent: the
    /// controller secures no migrations (`--migration-tls off`), and the move is plain TCP.
    public var credentials: MigrationCredentials?

    public init(
        id: MigrationID, role: Role, state: MigrationState, vm: DesiredVM, guestAddress: String?, incomingURI: String?,
        storage: MigrationStorage? = nil, kind: MigrationKind? = nil, credentials: MigrationCredentials? = nil
    ) {
        self.credentials = credentials
        self.storage = storage
        self.kind = kind
        self.id = id
        self.role = role
        self.state = state
        self.vm = vm
        self.guestAddress = guestAddress
        self.incomingURI = incomingURI
    }
}

/// A heartbeat: the host is alive, and this is every VM its driver knows about.
public struct AgentHeartbeat: Sendable, Codable, Equatable {
    public var hostID: HostID
    public var instances: [InstanceReport]
    /// Console output new since the offsets in the previous answer; absent when there is none.
    public var console: [ConsoleReport]?
    /// Migrations this host takes part in; absent when there are none.
    public var migrations: [MigrationReport]?
    /// The host's own CPU, when its driver measures it (absent: the controller sums its VMs).
    public var hostCPU: HostCPUUsage?
    /// The host's desktop contexts (absent from an agent that keeps none of its own).
    public var contexts: HostContexts?
    /// The `revision` of the desired state the agent holds: if the host's is still that one, the
    /// answer says `unchanged` instead of repeating it.
    public var known: Int?
    public init(
        hostID: HostID, instances: [InstanceReport], console: [ConsoleReport]? = nil,
        migrations: [MigrationReport]? = nil, hostCPU: HostCPUUsage? = nil, contexts: HostContexts? = nil,
        known: Int? = nil
    ) {
        self.known = known
        self.hostID = hostID
        self.instances = instances
        self.console = console
        self.migrations = migrations
        self.hostCPU = hostCPU
        self.contexts = contexts
    }
}

/// What a host says about its desktop contexts on every heartbeat. The host is their authority:
/// it opens, resets, keeps and closes them with or without the controller, so the controller's
/// view of a host's contexts is what the host last said.
public struct HostContexts: Sendable, Codable, Equatable {
    /// Every context on the host, complete.
    public var items: [Context]
    public var pools: [ContextPoolStatus]
    /// Answers to the commands of earlier replies, until the controller stops sending them.
    public var results: [ContextCommandResult]?
    /// What happened to contexts that the controller has not acknowledged yet (for example while
    /// it was unreachable), oldest first.
    public var journal: [ContextJournalEntry]?

    public init(
        items: [Context], pools: [ContextPoolStatus], results: [ContextCommandResult]? = nil,
        journal: [ContextJournalEntry]? = nil
    ) {
        self.items = items
        self.pools = pools
        self.results = results
        self.journal = journal
    }
}

/// A context verb the controller passes to a host (a user called it on the controller's API).
/// Sent in every reply until the host answers it; the host carries out each ID once.
public struct ContextCommand: Sendable, Codable, Equatable {
    public enum Action: String, Sendable, Codable { case open, reset, keep, close, logs }
    public var id: String
    public var action: Action
    public var name: String
    /// For `open`.
    public var open: ContextOpenRequest?
    /// For `reset` of a persistent context.
    public var force: Bool?
    /// For `logs`: the last lines only.
    public var tail: Int?

    public init(
        id: String, action: Action, name: String, open: ContextOpenRequest? = nil, force: Bool? = nil, tail: Int? = nil
    ) {
        self.id = id
        self.action = action
        self.name = name
        self.open = open
        self.force = force
        self.tail = tail
    }
}

/// How a host carried out a `ContextCommand`: the context afterwards, or the error.
public struct ContextCommandResult: Sendable, Codable, Equatable {
    public var id: String
    public var context: Context?
    /// For `logs`: the console output.
    public var logs: String?
    public var error: VireoError?
    public init(id: String, context: Context? = nil, logs: String? = nil, error: VireoError? = nil) {
        self.id = id
        self.context = context
        self.logs = logs
        self.error = error
    }
}

/// One thing that happened to a context on its host, numbered in the host's journal.
public struct ContextJournalEntry: Sendable, Codable, Equatable {
    public enum Action: String, Sendable, Codable {
        case opened, ready, reset, kept, closed, failed, repaired, restarted
    }
    /// Increases by one per entry on the host, across agent restarts.
    public var seq: Int
    public var time: Date
    public var context: String
    public var action: Action
    public var message: String?
    public init(seq: Int, time: Date, context: String, action: Action, message: String? = nil) {
        self.seq = seq
        self.time = time
        self.context = context
        self.action = action
        self.message = message
    }
}

/// One VM the controller wants on a host, with what it should be.
public struct DesiredVM: Sendable, Codable, Equatable {
    public var id: VMID
    public var name: String
    public var image: String
    public var cpus: Int
    public var memoryMiB: Int
    public var intent: PowerIntent
    public var generation: Int
    /// Offset in the VM's console log up to which the controller has its output: the agent sends
    /// what comes after it. Absent means 0.
    public var consoleOffset: UInt64?
    /// The application the VM belongs to and how to read its signals, when it has any.
    public var app: String?
    public var telemetry: TelemetrySpec?
    /// The disk size the VM asked for (absent: the image's).
    public var diskMiB: Int?
    /// True: the controller starts the VM on another host if this one is lost, so this host stops
    /// it once cut off for longer than `AgentRegistrationResponse.fenceAfterMs`.
    public var restartsElsewhere: Bool?
    /// True: restarted here after its host was lost; its disk is in the storage both hosts share,
    /// and this host takes it as it is rather than making a fresh one.
    public var takesSharedDisk: Bool?
    public init(
        id: VMID, name: String, image: String, cpus: Int, memoryMiB: Int, intent: PowerIntent, generation: Int,
        consoleOffset: UInt64? = nil, app: String? = nil, telemetry: TelemetrySpec? = nil, diskMiB: Int? = nil,
        restartsElsewhere: Bool? = nil, takesSharedDisk: Bool? = nil
    ) {
        self.restartsElsewhere = restartsElsewhere
        self.takesSharedDisk = takesSharedDisk
        self.diskMiB = diskMiB
        self.app = app
        self.telemetry = telemetry
        self.id = id
        self.name = name
        self.image = image
        self.cpus = cpus
        self.memoryMiB = memoryMiB
        self.intent = intent
        self.generation = generation
        self.consoleOffset = consoleOffset
    }
}

/// The reply to a heartbeat: the complete desired state for the host (level-triggered).
public struct DesiredHostState: Sendable, Codable, Equatable {
    public var vms: [DesiredVM]
    /// Migrations this host takes part in; absent when there are none.
    public var migrations: [MigrationOrder]?
    /// Context verbs to carry out; absent when there are none.
    public var contextCommands: [ContextCommand]?
    /// The last journal entry the controller has recorded: the host may forget it and those before.
    public var contextJournalAck: Int?
    /// The host's generation this answer reflects: the agent waits for it to move
    /// (`ControllerLink.watch`) between heartbeats. Absent from controllers without watches.
    public var generation: Int?
    /// Names this desired state's content; the agent sends it back as `AgentHeartbeat.known`.
    public var revision: Int?
    /// True: the desired state is still the one the agent holds (`known`), and the rest of this
    /// answer is empty. A heartbeat that changes nothing costs no encoding of the host's VMs.
    public var unchanged: Bool?
    /// VMs the host reported that the cluster has since started on another host (this one was
    /// lost): stop each at once, as pulling its power would, and forget it, leaving its disk —
    /// before anything else. Absent when there are none.
    public var release: [VMID]?
    public init(
        vms: [DesiredVM], migrations: [MigrationOrder]? = nil, contextCommands: [ContextCommand]? = nil,
        contextJournalAck: Int? = nil, generation: Int? = nil, revision: Int? = nil, unchanged: Bool? = nil,
        release: [VMID]? = nil
    ) {
        self.release = release
        self.revision = revision
        self.unchanged = unchanged
        self.generation = generation
        self.vms = vms
        self.migrations = migrations
        self.contextCommands = contextCommands
        self.contextJournalAck = contextJournalAck
    }
}

/// How an agent reaches its controller: over HTTP, or directly when both run in one process
/// (`vireo up`). The agent cannot tell the difference. Console output travels with heartbeats, so
/// it needs nothing more from a link.
public protocol ControllerLink: Sendable {
    func register(_ registration: AgentRegistration) async throws -> AgentRegistrationResponse
    func heartbeat(_ heartbeat: AgentHeartbeat) async throws -> DesiredHostState
    /// Application samples gathered on the host.
    func deliver(_ samples: AgentSamples) async throws
    /// Returns the host's generation once it differs from `known` (what the host should do has
    /// changed: heartbeat now), or after about `timeout` (then it may equal `known`).
    func watch(host: HostID, after known: Int, timeout: Duration) async throws -> Int
}

/// The answer to `GET /v1/agent/watch`.
public struct AgentWatch: Sendable, Codable, Equatable {
    public var generation: Int
    public init(generation: Int) { self.generation = generation }

    /// The longest wait a watch may ask for.
    public static let maximumWaitMs = 60_000
}

/// Application samples an agent scraped or measured on its host: `POST /v1/agent/samples`.
public struct AgentSamples: Sendable, Codable, Equatable {
    public struct Item: Sendable, Codable, Equatable {
        public var app: String
        public var vm: String
        public var time: Date
        /// Prometheus text: the VM's own metrics, or what the agent measured (probes, usage).
        public var exposition: String
        /// Set when the scrape failed: why.
        public var error: String?
        public init(app: String, vm: String, time: Date, exposition: String, error: String? = nil) {
            self.app = app
            self.vm = vm
            self.time = time
            self.exposition = exposition
            self.error = error
        }
    }
    public var hostID: HostID
    public var items: [Item]
    public init(hostID: HostID, items: [Item]) {
        self.hostID = hostID
        self.items = items
    }
}
