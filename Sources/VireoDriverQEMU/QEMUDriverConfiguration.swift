import VireoModel

extension QEMUDriver {
    public struct Configuration: Sendable {
        public var stateDirectory: String
        public var binary = "qemu-system-x86_64"
        public var accelerator: Accelerator
        /// Capacity advertised to placement.
        public var cpus: Int
        public var memoryMiB: Int
        /// How long a guest may take to power off after the ACPI button before QEMU is told to quit.
        public var stopTimeout: Duration = .seconds(10)
        /// How long a guest may take to print its ready marker before the start counts as failed.
        public var readyTimeout: Duration = .seconds(120)
        public var network: NetworkMode = .user
        /// How long a snapshot save, load or delete may take before the driver stops waiting for it
        /// (QEMU carries on; the next snapshot operation waits for it to end).
        public var snapshotTimeout: Duration = .seconds(120)
        /// Live migration: bandwidth cap (bytes/s), the pause the final switch-over may take, and
        /// how long a migration may run before it is cancelled.
        public var migrationBandwidth: UInt64 = 8 << 30
        public var migrationDowntimeLimitMs = 300
        public var migrationTimeout: Duration = .seconds(120)
        /// auto-converge's first vCPU throttle and its step per pass, in percent; nil leaves QEMU's
        /// defaults (20 and 10).
        public var migrationThrottleInitialPercent: Int?
        public var migrationThrottleIncrementPercent: Int?
        /// Whether the guest runs while its memory is copied (see `MigrationMode`).
        public var migrationMode: MigrationMode = .auto
        /// A directory all hosts see at the same path (NFS, or one machine's disk in the testbed).
        /// VM disks kept there can be live-migrated: the destination opens the same file.
        public var sharedDisks: String?

        public init(stateDirectory: String, accelerator: Accelerator, cpus: Int, memoryMiB: Int) {
            self.stateDirectory = stateDirectory
            self.accelerator = accelerator
            self.cpus = cpus
            self.memoryMiB = memoryMiB
        }
    }

    /// How this host moves VMs.
    public enum MigrationMode: String, Sendable, CaseIterable {
        /// Pre-copy while the guest runs, then a short pause for what it dirtied meanwhile.
        case live
        /// Pause the guest, copy its memory, resume it on the destination: downtime is the whole
        /// transfer, but nothing depends on the hypervisor tracking the pages the guest writes.
        case paused
        /// `live` where QEMU sees every page the guest writes: under KVM, and under TCG for a VM
        /// whose RAM is trimmed (`QEMUInvocation.memoryTrimKiB(on:)`, every VM made since); `paused`
        /// for a VM made before under TCG, whose writes QEMU 7.2 can miss (docs/migration.md).
        case auto

        public static func parse(_ text: String, field: String) throws -> MigrationMode {
            guard let mode = MigrationMode(rawValue: text) else {
                throw VireoError.invalid(field: field, value: "'\(text)'", "expected auto, live or paused")
            }
            return mode
        }

        /// How memory is copied on `accelerator` for a VM whose RAM is `memoryTrimmed` or not.
        public func resolved(for accelerator: Accelerator, memoryTrimmed: Bool) -> MigrationCopyMode {
            switch self {
            case .live: .live
            case .paused: .paused
            case .auto: accelerator == .tcg && !memoryTrimmed ? .paused : .live
            }
        }
    }

    public enum NetworkMode: Sendable, Equatable {
        /// No network card.
        case none
        /// QEMU user networking; the guest's port 80 is forwarded to a loopback port.
        case user
        /// A tap device on a bridge, with an address from the pool.
        case tap(TapNetwork)
    }
}
