import Foundation
import Logging
import VireoDriver
import VireoImage
import VireoModel

extension DriverRegistry {
    /// Registers `libvirt`. Settings: `uri` (default `qemu:///system`), `domain-type`
    /// (auto|qemu|kvm), `network` (user|none), `stop-timeout-s`, `ready-timeout-s`, `images` (image cache
    /// directory), `shared-disks` (live migration without copying the disk), `peer-uri`, `migration-timeout-s`,
    /// `migration-mode` (auto|live|paused), `migration-tls-dir` (libvirtd's `migrate_tls_x509_cert_dir`).
    public mutating func registerLibvirt(logger: Logger = Logger(label: "vireo.libvirt")) {
        register("libvirt") { options in
            try options.rejectUnknown(
                driver: "libvirt",
                allowed: [
                    "uri", "domain-type", "network", "stop-timeout-s", "ready-timeout-s", "images", "shared-disks", "peer-uri",
                    "migration-timeout-s", "migration-mode", "migration-tls-dir",
                ])
            let settings = options.settings
            let uri = settings["uri"] ?? "qemu:///system"
            guard uri.contains(":"), !uri.contains(where: \.isWhitespace) else {
                throw VireoError.invalid(field: "uri", value: "'\(uri)'", "expected a libvirt URI such as qemu:///system")
            }
            var configuration = LibvirtDriver.Configuration(uri: uri, stateDirectory: options.stateDirectory)
            switch settings["domain-type"] ?? "auto" {
            case "auto":
                configuration.domainType = LibvirtDriver.Configuration.probeDomainType(
                    uri: uri, cpuinfo: (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? "",
                    kvmUsable: access("/dev/kvm", R_OK | W_OK) == 0)
            case let choice:
                guard let type = LibvirtDriver.DomainType(rawValue: choice) else {
                    throw VireoError.invalid(field: "domain-type", value: "'\(choice)'", "expected auto, qemu or kvm")
                }
                configuration.domainType = type
            }
            switch settings["network"] ?? "user" {
            case "user": configuration.userNetwork = true
            case "none": configuration.userNetwork = false
            case let other: throw VireoError.invalid(field: "network", value: "'\(other)'", "expected user or none")
            }
            if let seconds = try options.int("stop-timeout-s") { configuration.stopTimeout = .seconds(seconds) }
            if let seconds = try options.int("ready-timeout-s") { configuration.readyTimeout = .seconds(seconds) }
            if let seconds = try options.int("migration-timeout-s") { configuration.migrationTimeout = .seconds(seconds) }
            if let mode = settings["migration-mode"] {
                guard let parsed = LibvirtDriver.MigrationMode(rawValue: mode) else {
                    throw VireoError.invalid(field: "migration-mode", value: "'\(mode)'", "expected auto, live or paused")
                }
                configuration.migrationMode = parsed
            }
            if let shared = settings["shared-disks"] {
                guard shared.hasPrefix("/") else {
                    throw VireoError.invalid(field: "shared-disks", value: "'\(shared)'", "expected an absolute directory path")
                }
                configuration.sharedDisks = shared
            }
            if let directory = settings["migration-tls-dir"] {
                guard directory.hasPrefix("/") else {
                    throw VireoError.invalid(
                        field: "migration-tls-dir", value: "'\(directory)'",
                        "expected an absolute directory path (libvirtd's migrate_tls_x509_cert_dir)")
                }
                configuration.migrationTLSDirectory = directory
            }
            if let peer = settings["peer-uri"] {
                guard peer.contains(":"), !peer.contains(where: \.isWhitespace) else {
                    throw VireoError.invalid(
                        field: "peer-uri", value: "'\(peer)'", "expected a libvirt URI such as qemu+tcp://10.0.0.2/system")
                }
                configuration.peerURI = peer
            }
            let builder = ImageBuilder(
                cacheDirectory: settings["images"] ?? (options.stateDirectory as NSString).deletingLastPathComponent
                    + "/images")
            return LibvirtDriver(configuration: configuration, logger: logger) { name in
                try await LibvirtDriver.bootImage(from: builder, name: name, logger: logger)
            }
        }
    }
}

extension LibvirtDriver {
    /// Builds the image on first use (later uses hit the cache) and returns what booting it needs.
    public static func bootImage(from builder: ImageBuilder, name: String, logger: Logger) async throws -> GuestImage {
        let built = try await builder.build(name) { step in
            logger.info("image", metadata: ["image": "\(name)", "step": "\(step)"])
        }
        return GuestImage(
            kernel: built.kernel, initrd: built.initrd, baseDisk: built.baseDisk,
            kernelCommandLine: built.kernelCommandLine, readyMarker: built.readyMarker)
    }
}
