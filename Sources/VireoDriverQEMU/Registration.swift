import Foundation
import Logging
import VireoDriver
import VireoImage
import VireoModel

extension DriverRegistry {
    /// Registers `qemu`. Settings: `accel` (auto|kvm|tcg), `cpus`, `memory`, `stop-timeout-s`,
    /// `ready-timeout-s`, `network` (user|none|tap), `bridge`, `pool`, `guest-prefix`, `gateway` (tap),
    /// `images` (image cache directory), `shared-disks` (shared storage, enables live migration),
    /// `migration-mode` (auto|live|paused), `binary`.
    public mutating func registerQEMU(logger: Logger = Logger(label: "vireo.qemu")) {
        register("qemu") { options in
            try options.rejectUnknown(
                driver: "qemu",
                allowed: [
                    "accel", "cpus", "memory", "stop-timeout-s", "ready-timeout-s", "network", "bridge", "pool",
                    "guest-prefix", "gateway", "images", "shared-disks", "migration-mode", "binary",
                ])
            let settings = options.settings
            let accelerator = try Accelerator.resolve(settings["accel"] ?? "auto")
            var configuration = QEMUDriver.Configuration(
                stateDirectory: options.stateDirectory, accelerator: accelerator,
                cpus: try options.int("cpus") ?? ProcessInfo.processInfo.activeProcessorCount,
                memoryMiB: try settings["memory"].map { try ByteSize.parseMiB($0, field: "memory") }
                    ?? QEMUDriver.defaultGuestMemoryMiB())
            if let seconds = try options.int("stop-timeout-s") { configuration.stopTimeout = .seconds(seconds) }
            if let seconds = try options.int("ready-timeout-s") { configuration.readyTimeout = .seconds(seconds) }
            if let binary = settings["binary"] { configuration.binary = binary }
            if let mode = settings["migration-mode"] {
                configuration.migrationMode = try QEMUDriver.MigrationMode.parse(mode, field: "migration-mode")
            }
            switch settings["network"] ?? "user" {
            case "user": configuration.network = .user
            case "none": configuration.network = .none
            case "tap":
                guard let pool = settings["pool"] else {
                    throw VireoError(.invalidArgument, "pool: network=tap needs pool=CIDR, e.g. pool=198.18.1.0/24")
                }
                let prefix = try options.int("guest-prefix") ?? 16
                guard (8...30).contains(prefix) else {
                    throw VireoError.invalid(field: "guest-prefix", value: "'\(prefix)'", "must be in 8...30")
                }
                configuration.network = .tap(
                    TapNetwork(
                        bridge: settings["bridge"] ?? "br0", pool: try IPv4Network(pool, field: "pool"),
                        guestPrefix: prefix, gateway: settings["gateway"]))
            case let other:
                throw VireoError.invalid(field: "network", value: "'\(other)'", "expected user, none or tap")
            }
            configuration.sharedDisks = settings["shared-disks"]
            let builder = ImageBuilder(
                cacheDirectory: settings["images"] ?? (options.stateDirectory as NSString).deletingLastPathComponent
                    + "/images")
            return QEMUDriver(configuration: configuration, logger: logger) { name in
                try await QEMUDriver.guestImage(from: builder, name: name, logger: logger)
            }
        }
    }

    /// True when QEMU is installed, so that `qemu` can be the default driver.
    public static var qemuInstalled: Bool {
        (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":").contains {
            FileManager.default.isExecutableFile(atPath: "\($0)/qemu-system-x86_64")
        }
    }
}

extension QEMUDriver {
    /// Memory offered to guests: 80% of the machine's, leaving room for QEMU and the host.
    static func defaultGuestMemoryMiB() -> Int {
        Int(ProcessInfo.processInfo.physicalMemory / 1_048_576) * 4 / 5
    }

    /// Builds the image on first use (later uses hit the cache) and returns what booting it needs.
    static func guestImage(from builder: ImageBuilder, name: String, logger: Logger) async throws -> GuestImage {
        let built = try await builder.build(name) { step in
            logger.info("image", metadata: ["image": "\(name)", "step": "\(step)"])
        }
        return GuestImage(
            kernel: built.kernel, initrd: built.initrd, baseDisk: built.baseDisk,
            kernelCommandLine: built.kernelCommandLine, readyMarker: built.readyMarker)
    }
}
