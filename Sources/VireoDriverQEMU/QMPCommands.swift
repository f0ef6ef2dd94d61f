import Foundation

/// The QMP commands the QEMU driver sends, and what it reads of their replies. Each type mirrors
/// QEMU's QAPI schema for the fields it declares and ignores the rest of the reply.
public enum QMP {
    /// Sent as no `arguments` member at all.
    public struct NoArguments: Encodable, Sendable, Equatable {
        public init() {}
    }

    /// A reply whose content is not read (QEMU answers `{}`).
    public struct Empty: Decodable, Sendable, Equatable {
        public init() {}
        public init(from decoder: any Decoder) throws {}
    }

    // MARK: Session

    /// Leaves capabilities negotiation mode; the first command of every session.
    public struct Capabilities: QMPCommand {
        public static let name = "qmp_capabilities"
        public init() {}
    }

    /// The VM's `-name`.
    public struct QueryName: QMPCommand {
        public static let name = "query-name"
        public struct Response: Decodable, Sendable, Equatable {
            /// Nil when QEMU was started without `-name`.
            public var name: String?
        }
        public init() {}
    }

    // MARK: Run state

    /// Whether the vCPUs run, and why not.
    public struct QueryStatus: QMPCommand {
        public static let name = "query-status"
        public struct Response: Decodable, Sendable, Equatable {
            public var status: RunState
            /// True exactly when the vCPUs are running.
            public var running: Bool
        }
        public init() {}
    }

    /// QEMU's `RunState`. A state this QEMU adds later decodes to `.unknown`.
    public enum RunState: String, Decodable, Sendable, CaseIterable {
        case debug, inmigrate, paused, postmigrate, prelaunch, running, shutdown, suspended, watchdog, colo
        case internalError = "internal-error"
        case ioError = "io-error"
        case finishMigrate = "finish-migrate"
        case restoreVM = "restore-vm"
        case saveVM = "save-vm"
        case guestPanicked = "guest-panicked"
        case unknown

        public init(from decoder: any Decoder) throws {
            self = RunState(rawValue: try decoder.singleValueContainer().decode(String.self)) ?? .unknown
        }
    }

    /// Pauses the vCPUs.
    public struct Stop: QMPCommand {
        public static let name = "stop"
        public init() {}
    }

    /// Resumes paused vCPUs.
    public struct Cont: QMPCommand {
        public static let name = "cont"
        public init() {}
    }

    /// Presses the ACPI power button; the guest decides whether to power off.
    public struct SystemPowerdown: QMPCommand {
        public static let name = "system_powerdown"
        public init() {}
    }

    /// Makes QEMU exit at once, without asking the guest.
    public struct Quit: QMPCommand {
        public static let name = "quit"
        public init() {}
    }

    // MARK: Migration

    /// Turns migration capabilities on or off; they apply to the next migration.
    public struct MigrateSetCapabilities: QMPCommand {
        public static let name = "migrate-set-capabilities"
        public struct Arguments: Encodable, Sendable, Equatable {
            public var capabilities: [CapabilityState]
        }
        public struct CapabilityState: Encodable, Sendable, Equatable {
            public var capability: MigrationCapability
            public var state: Bool
        }
        public var arguments: Arguments

        public init(_ capabilities: [MigrationCapability: Bool]) {
            arguments = Arguments(
                capabilities: capabilities.sorted { $0.key.rawValue < $1.key.rawValue }
                    .map { CapabilityState(capability: $0.key, state: $0.value) })
        }
    }

    /// The migration capabilities the driver sets.
    public enum MigrationCapability: String, Encodable, Sendable {
        /// `MIGRATION` events on every status change (the destination learns the guest arrived).
        case events
        /// Throttle the vCPUs when the guest dirties memory faster than it is sent.
        case autoConverge = "auto-converge"
        /// Stop in `pre-switchover` once the vCPUs are paused, before the last state is sent, until
        /// `migrate-continue`: a copy-storage move finishes its disk mirror there.
        case pauseBeforeSwitchover = "pause-before-switchover"
    }

    /// Lets a migration paused in `pre-switchover` (`pauseBeforeSwitchover`) go on.
    public struct MigrateContinue: QMPCommand {
        public static let name = "migrate-continue"
        public struct Arguments: Encodable, Sendable, Equatable {
            public var state: String
        }
        public var arguments = Arguments(state: MigrationStatus.preSwitchover.rawValue)
        public init() {}
    }

    /// Tunes the next migration; a parameter left nil keeps its current value.
    public struct MigrateSetParameters: QMPCommand {
        public static let name = "migrate-set-parameters"
        public struct Arguments: Encodable, Sendable, Equatable {
            /// Bytes per second.
            public var maxBandwidth: UInt64?
            /// The longest pause the final switch-over may take, in milliseconds.
            public var downtimeLimitMs: Int?
            /// auto-converge's first vCPU throttle and its step per pass, in percent.
            public var cpuThrottleInitialPercent: Int?
            public var cpuThrottleIncrementPercent: Int?
            /// The id of a `tls-creds-x509` object: the stream goes over TLS with it; "" for plain TCP.
            public var tlsCreds: String?
            /// Destination: the id of an `authz-simple` object naming the only source accepted; "" for any.
            public var tlsAuthz: String?

            enum CodingKeys: String, CodingKey {
                case maxBandwidth = "max-bandwidth"
                case downtimeLimitMs = "downtime-limit"
                case cpuThrottleInitialPercent = "cpu-throttle-initial"
                case cpuThrottleIncrementPercent = "cpu-throttle-increment"
                case tlsCreds = "tls-creds"
                case tlsAuthz = "tls-authz"
            }
        }
        public var arguments: Arguments

        public init(
            maxBandwidth: UInt64? = nil, downtimeLimitMs: Int? = nil, cpuThrottleInitialPercent: Int? = nil,
            cpuThrottleIncrementPercent: Int? = nil, tlsCreds: String? = nil, tlsAuthz: String? = nil
        ) {
            arguments = Arguments(
                maxBandwidth: maxBandwidth, downtimeLimitMs: downtimeLimitMs,
                cpuThrottleInitialPercent: cpuThrottleInitialPercent,
                cpuThrottleIncrementPercent: cpuThrottleIncrementPercent, tlsCreds: tlsCreds, tlsAuthz: tlsAuthz)
        }
    }

    /// Starts sending the VM to `uri` (`tcp:host:port`); returns at once, progress is polled with
    /// `QueryMigrate`.
    public struct Migrate: QMPCommand {
        public static let name = "migrate"
        public struct Arguments: Encodable, Sendable, Equatable {
            public var uri: String
        }
        public var arguments: Arguments

        public init(uri: String) { arguments = Arguments(uri: uri) }
    }

    /// Cancels the running outgoing migration; the source keeps the VM.
    public struct MigrateCancel: QMPCommand {
        public static let name = "migrate_cancel"
        public init() {}
    }

    /// The state of the current (or last) migration.
    public struct QueryMigrate: QMPCommand {
        public static let name = "query-migrate"
        public typealias Response = MigrationInfo
        public init() {}
    }

    /// What `query-migrate` says; every member but `status` is there only in some states.
    public struct MigrationInfo: Decodable, Sendable, Equatable {
        /// `.none` before the first migration.
        public var status: MigrationStatus
        /// Present once memory is being sent, and after it was.
        public var ram: RAMStats?
        /// Milliseconds since the migration started (until it ended, once it has).
        public var totalTimeMs: Int?
        /// The pause of the final switch-over, in milliseconds; once completed.
        public var downtimeMs: Int?
        /// Milliseconds spent setting up before memory was sent.
        public var setupTimeMs: Int?
        /// Why it failed.
        public var errorDescription: String?

        enum CodingKeys: String, CodingKey {
            case status, ram
            case totalTimeMs = "total-time"
            case downtimeMs = "downtime"
            case setupTimeMs = "setup-time"
            case errorDescription = "error-desc"
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            status = try container.decodeIfPresent(MigrationStatus.self, forKey: .status) ?? MigrationStatus.none
            ram = try container.decodeIfPresent(RAMStats.self, forKey: .ram)
            totalTimeMs = try container.decodeIfPresent(Int.self, forKey: .totalTimeMs)
            downtimeMs = try container.decodeIfPresent(Int.self, forKey: .downtimeMs)
            setupTimeMs = try container.decodeIfPresent(Int.self, forKey: .setupTimeMs)
            errorDescription = try container.decodeIfPresent(String.self, forKey: .errorDescription)
        }
    }

    /// Guest memory sent so far, in bytes.
    public struct RAMStats: Decodable, Sendable, Equatable {
        public var transferred: UInt64
        public var remaining: UInt64
        public var total: UInt64
        /// Pages the guest dirtied per second in the last pass.
        public var dirtyPagesRate: UInt64

        enum CodingKeys: String, CodingKey {
            case transferred, remaining, total
            case dirtyPagesRate = "dirty-pages-rate"
        }
    }

    /// QEMU's `MigrationStatus`. A status this QEMU adds later decodes to `.unknown`.
    public enum MigrationStatus: String, Decodable, Sendable, CaseIterable {
        case none, setup, cancelling, cancelled, active, completed, failed, colo, device
        case postcopyActive = "postcopy-active"
        case postcopyPaused = "postcopy-paused"
        case postcopyRecoverSetup = "postcopy-recover-setup"
        case postcopyRecover = "postcopy-recover"
        case preSwitchover = "pre-switchover"
        case waitUnplug = "wait-unplug"
        case unknown

        public init(from decoder: any Decoder) throws {
            self = MigrationStatus(rawValue: try decoder.singleValueContainer().decode(String.self)) ?? .unknown
        }
    }
}

extension QMP {
    /// The asynchronous events the driver acts on, decoded; any other is `.other` with its name.
    public enum Event: Sendable, Equatable {
        /// The guest or QEMU shut down; `guest` when the guest asked (it powered itself off).
        case shutdown(guest: Bool)
        case stop
        case resume
        /// A migration changed status (sent on both sides when `events` is on).
        case migration(MigrationStatus)
        /// A job (a snapshot save, load or delete) changed status.
        case jobStatusChange(id: String, status: JobStatus)
        case other(String)

        public init(_ event: QMPEvent) {
            switch event.name {
            case "SHUTDOWN": self = .shutdown(guest: event.data["guest"] == .bool(true))
            case "STOP": self = .stop
            case "RESUME": self = .resume
            case "MIGRATION":
                self = .migration(event.data["status"]?.stringValue.flatMap(MigrationStatus.init(rawValue:)) ?? .unknown)
            case "JOB_STATUS_CHANGE":
                self = .jobStatusChange(
                    id: event.data["id"]?.stringValue ?? "",
                    status: event.data["status"]?.stringValue.flatMap(JobStatus.init(rawValue:)) ?? .unknown)
            default: self = .other(event.name)
            }
        }
    }
}
