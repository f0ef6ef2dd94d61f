import Foundation
import VireoModel

/// What a running Vireo recorded over a window (`GET /v1/history`): its hosts, where each VM ran
/// and what it used, how each application's objectives stood, and the migrations it made — what
/// a simulator needs to replay the cluster through the placement policies and compare.
///
/// The time axis runs from `from` to `to` in steps of `stepSeconds`. Every per-step array has one
/// entry per step: entry `i` covers `[from + i·stepSeconds, from + (i+1)·stepSeconds)`, and is
/// null where nothing was recorded (the VM did not run, the controller was not running). `to` is
/// the end of the last complete step.
public struct ClusterHistory: Sendable, Codable, Equatable {
    public struct Host: Sendable, Codable, Equatable {
        public var name: String
        public var id: HostID
        public var cpus: Int
        public var memoryMiB: Int
        /// The hypervisor driver (`qemu`, `simulated`, `libvirt`), what it can do and its facts
        /// (accelerator, versions), as the host last registered them.
        public var driver: String
        public var capabilities: [Capability]
        public var attributes: [String: String]
        /// Mean busy fraction of the CPUs the host may use, per step, as its agent measured it;
        /// absent when its agent measured none in the window.
        public var cpuLoad: [Double?]?

        public init(
            name: String, id: HostID, cpus: Int, memoryMiB: Int, driver: String, capabilities: [Capability],
            attributes: [String: String], cpuLoad: [Double?]?
        ) {
            self.name = name
            self.id = id
            self.cpus = cpus
            self.memoryMiB = memoryMiB
            self.driver = driver
            self.capabilities = capabilities
            self.attributes = attributes
            self.cpuLoad = cpuLoad
        }
    }

    public struct VM: Sendable, Codable, Equatable {
        public var name: String
        public var id: VMID
        /// Allocated, as last recorded.
        public var cpus: Int
        public var memoryMiB: Int
        public var app: String?
        /// The host it ran on at the end of each step (a name in `hosts`); null where it did not run.
        public var host: [String?]
        /// Mean CPU use per step, cores; null where it did not run or its host could not tell.
        public var cpuCores: [Double?]
        /// Mean resident memory of its hypervisor process per step, MiB; absent when its host
        /// measured none in the window.
        public var residentMiB: [Double?]?

        public init(
            name: String, id: VMID, cpus: Int, memoryMiB: Int, app: String?, host: [String?], cpuCores: [Double?],
            residentMiB: [Double?]?
        ) {
            self.name = name
            self.id = id
            self.cpus = cpus
            self.memoryMiB = memoryMiB
            self.app = app
            self.host = host
            self.cpuCores = cpuCores
            self.residentMiB = residentMiB
        }
    }

    public struct Application: Sendable, Codable, Equatable {
        public var name: String
        /// Its objectives as specified (as last recorded).
        public var objectives: [Objective]
        /// The state of its worst objective per step (`SLOState.worst`; the worst of the step
        /// when a step holds several recorded ones); null where none was recorded.
        public var state: [SLOState?]

        public init(name: String, objectives: [Objective], state: [SLOState?]) {
            self.name = name
            self.objectives = objectives
            self.state = state
        }
    }

    /// A live migration requested in the window.
    public struct Migration: Sendable, Codable, Equatable {
        public var id: MigrationID
        public var vm: String
        public var vmID: VMID
        /// Host names.
        public var from: String
        public var to: String
        public var state: MigrationState
        /// `requested` (a user) or the planner's explanation.
        public var reason: String
        public var requestedAt: Date
        /// When the source began sending; absent if it never did.
        public var startedAt: Date?
        public var endedAt: Date?
        public var downtimeMs: Int?
        /// The rebalancing plan that started it and that plan's policy; absent for a move a user
        /// asked for.
        public var plan: String?
        public var policy: String?

        public init(
            id: MigrationID, vm: String, vmID: VMID, from: String, to: String, state: MigrationState, reason: String,
            requestedAt: Date, startedAt: Date?, endedAt: Date?, downtimeMs: Int?, plan: String?, policy: String?
        ) {
            self.id = id
            self.vm = vm
            self.vmID = vmID
            self.from = from
            self.to = to
            self.state = state
            self.reason = reason
            self.requestedAt = requestedAt
            self.startedAt = startedAt
            self.endedAt = endedAt
            self.downtimeMs = downtimeMs
            self.plan = plan
            self.policy = policy
        }
    }

    public var from: Date
    public var to: Date
    public var stepSeconds: Int
    /// Sorted by name; those recorded at least once in the window.
    public var hosts: [Host]
    public var vms: [VM]
    public var applications: [Application]
    /// Oldest first.
    public var migrations: [Migration]

    public init(
        from: Date, to: Date, stepSeconds: Int, hosts: [Host], vms: [VM], applications: [Application],
        migrations: [Migration]
    ) {
        self.from = from
        self.to = to
        self.stepSeconds = stepSeconds
        self.hosts = hosts
        self.vms = vms
        self.applications = applications
        self.migrations = migrations
    }

    /// How many steps the time axis has.
    public var steps: Int { stepSeconds > 0 ? Int((to.timeIntervalSince(from) / Double(stepSeconds)).rounded()) : 0 }
}

/// The query of `GET /v1/history`, checked at the edge: `since` is how far back (seconds, or a
/// duration such as `24h`; default a day, at most 366 days), `step` the length of a step (seconds
/// or a duration, a multiple of the controller's recording step; default the recording step, at
/// most 7 days), and the window at most `maxSteps` steps.
public struct HistoryQuery: Sendable, Equatable {
    public static let maxSteps = 20_160
    public static let defaultSince = 86_400.0

    public var sinceSeconds: Double
    public var stepSeconds: Int

    /// Refuses a bad value naming the parameter and the value.
    public init(since: String?, step: String?, recordingStepSeconds: Int) throws(VireoError) {
        let recordingStepSeconds = max(1, recordingStepSeconds)
        if let since {
            guard let seconds = DurationText.seconds(since), seconds > 0, seconds <= 366 * 86_400 else {
                throw VireoError.invalid(
                    field: "since", value: "'\(since)'", "must be seconds or a duration (e.g. 86400, 24h, 7d) up to 366d")
            }
            sinceSeconds = seconds
        } else {
            sinceSeconds = Self.defaultSince
        }
        if let step {
            guard let seconds = DurationText.seconds(step), seconds > 0, seconds <= 7 * 86_400,
                seconds.rounded() == seconds, Int(seconds) % recordingStepSeconds == 0
            else {
                throw VireoError.invalid(
                    field: "step", value: "'\(step)'",
                    "must be a multiple of the recording step (\(recordingStepSeconds) s) up to 7d, in seconds or as a duration")
            }
            stepSeconds = Int(seconds)
        } else {
            stepSeconds = recordingStepSeconds
        }
        guard steps <= Self.maxSteps else {
            throw VireoError.invalid(
                field: "since", value: "'\(since ?? DurationText.format(sinceSeconds))'",
                "gives \(steps) steps of \(stepSeconds) s; at most \(Self.maxSteps): ask for a larger step")
        }
    }

    /// Steps in the window: `since` rounded up to whole steps.
    public var steps: Int { Int((sinceSeconds / Double(stepSeconds)).rounded(.up)) }
}
