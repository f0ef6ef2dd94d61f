import Foundation
import VireoModel

/// What the cluster used during one recording step, as the controller saw it: every host, every
/// VM that ran, and every application with the state of its worst objective. What a simulator
/// needs to replay the cluster through the placement policies.
public struct UsageStep: Sendable, Equatable {
    public struct Host: Sendable, Equatable {
        public var id: HostID
        public var name: String
        /// CPUs, memory, driver, capabilities and attributes, as the host registered them.
        public var fingerprint: HostFingerprint
        /// Mean busy fraction of the CPUs the host may use over the step, as its agent measured it;
        /// nil when it did not.
        public var cpuLoad: Double?

        public init(id: HostID, name: String, fingerprint: HostFingerprint, cpuLoad: Double?) {
            self.id = id
            self.name = name
            self.fingerprint = fingerprint
            self.cpuLoad = cpuLoad
        }
    }

    public struct VM: Sendable, Equatable {
        public var id: VMID
        public var name: String
        public var app: String?
        /// Allocated (its spec).
        public var cpus: Int
        public var memoryMiB: Int
        /// Where it ran at the end of the step; one of the step's hosts.
        public var host: HostID
        /// Mean CPU use over the step, cores; nil when its host reported no CPU time for it.
        public var cpuCores: Double?
        /// Mean resident memory of its hypervisor process over the step, MiB; nil when not reported.
        public var residentMiB: Double?

        public init(
            id: VMID, name: String, app: String?, cpus: Int, memoryMiB: Int, host: HostID, cpuCores: Double?,
            residentMiB: Double?
        ) {
            self.id = id
            self.name = name
            self.app = app
            self.cpus = cpus
            self.memoryMiB = memoryMiB
            self.host = host
            self.cpuCores = cpuCores
            self.residentMiB = residentMiB
        }
    }

    public struct Application: Sendable, Equatable {
        public var name: String
        public var objectives: [Objective]
        /// The state of its worst objective at the end of the step (`SLOState.worst`).
        public var state: SLOState

        public init(name: String, objectives: [Objective], state: SLOState) {
            self.name = name
            self.objectives = objectives
            self.state = state
        }
    }

    /// When the step began.
    public var start: Date
    /// How long it lasted, seconds.
    public var seconds: Double
    public var hosts: [Host]
    public var vms: [VM]
    public var applications: [Application]

    public init(start: Date, seconds: Double, hosts: [Host], vms: [VM], applications: [Application]) {
        self.start = start
        self.seconds = seconds
        self.hosts = hosts
        self.vms = vms
        self.applications = applications
    }
}

/// Recorded usage over a window cut into equal steps: entry `i` of every series covers
/// `[from + i·stepSeconds, from + (i+1)·stepSeconds)`, nil where nothing was recorded. Hosts, VMs
/// and applications are those recorded at least once in the window, with what was last recorded
/// about them (a VM deleted since keeps its name and size).
public struct UsageRecording: Sendable, Equatable {
    public struct HostSeries: Sendable, Equatable {
        public var id: HostID
        public var name: String
        public var fingerprint: HostFingerprint
        /// Mean busy fraction per step, where its agent measured it.
        public var cpuLoad: [Double?]
    }

    public struct VMSeries: Sendable, Equatable {
        public var id: VMID
        public var name: String
        public var app: String?
        public var cpus: Int
        public var memoryMiB: Int
        /// Where it ran at the end of each step; nil where it did not run.
        public var host: [HostID?]
        /// Mean CPU use per step, cores.
        public var cpuCores: [Double?]
        /// Mean resident memory per step, MiB.
        public var residentMiB: [Double?]
    }

    public struct ApplicationSeries: Sendable, Equatable {
        public var name: String
        public var objectives: [Objective]
        /// The worst state its worst objective was in during each step.
        public var state: [SLOState?]
    }

    public var from: Date
    public var stepSeconds: Double
    public var count: Int
    /// Sorted by name.
    public var hosts: [HostSeries]
    public var vms: [VMSeries]
    public var applications: [ApplicationSeries]

    public init(
        from: Date, stepSeconds: Double, count: Int, hosts: [HostSeries], vms: [VMSeries], applications: [ApplicationSeries]
    ) {
        self.from = from
        self.stepSeconds = stepSeconds
        self.count = count
        self.hosts = hosts
        self.vms = vms
        self.applications = applications
    }
}

/// The cluster's usage history, kept durably and bounded by age. Separate from the cluster store:
/// it is written once per step by the controller's loop, never inside the writer's group commit,
/// so recording never holds up a decision.
public protocol UsageArchive: Sendable {
    /// Writes `step` in one transaction, and deletes in the same one everything recorded before
    /// `cutoff` (retention). A step already recorded at the same start is replaced. The work
    /// takes at most `share` of one core (`Pacer`), and as much longer as that makes it.
    func record(_ step: UsageStep, deletingBefore cutoff: Date, share: Double) async throws

    /// What was recorded from `from` over `count` steps of `stepSeconds`. Recorded steps are
    /// folded into the step they start in: CPU and memory as the mean weighted by each recorded
    /// step's length, a VM's host as the last one, an application's state as the worst.
    func recording(from: Date, stepSeconds: Double, count: Int) async throws -> UsageRecording
}

extension UsageArchive {
    /// Writes `step` as fast as it can (tests, benchmarks, what-if runs).
    public func record(_ step: UsageStep, deletingBefore cutoff: Date) async throws {
        try await record(step, deletingBefore: cutoff, share: 1)
    }
}
