import Foundation
import VireoModel
import VireoProcess

/// What goes into each image, and the host inputs (kernel, packages) it is built from.
struct ImageRecipe {
    /// Bump when the build steps change in a way the texts below do not show.
    static let version = 2
    static let names = ["tiny", "web"]
    static let readyMarker = "VIREO-READY"
    /// `quiet`: the kernel's own messages on a TCG serial port cost boot time. `panic=-1`: reboot
    /// at once on a panic (a driver running QEMU with `-no-reboot` then sees the process exit).
    /// `no_timer_check`: a TCG guest on a host busy enough to delay its first timer interrupts
    /// otherwise panics at boot ("IO-APIC + timer doesn't work!"; seen in a full test run, where
    /// the guest of a context powered off while booting).
    static let kernelCommandLine = "console=ttyS0 quiet panic=-1 no_timer_check"
    /// Virtio drivers in dependency order, then the ACPI power button and the input event device
    /// busybox acpid reads it from. Each is a module in Debian's cloud kernel; built-in ones are
    /// skipped.
    static let modules = [
        "virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci",
        "failover", "net_failover", "virtio_net", "virtio_blk", "button", "evdev",
    ]
    /// Virtual size of the base disk's empty ext4 filesystem.
    static let baseDiskBytes = Int64(ImageCatalogue.virtualDiskMiB) << 20
    /// Static busybox from the busybox-static package.
    static let busyboxPath = "/bin/busybox"

    let name: String
    var includesWebService: Bool { name == "web" }

    init(named name: String) throws {
        guard Self.names.contains(name) else {
            throw VireoError(
                .notFound, "image '\(name)' is not known; known images: \(Self.names.joined(separator: ", "))")
        }
        self.name = name
    }

    /// `/init` for this image.
    var initScript: String {
        GuestFiles.initScript
            .replacingOccurrences(of: "@MODULES@", with: "$(cat /lib/modules/order)")
            .replacingOccurrences(of: "@SERVICE@", with: includesWebService ? GuestFiles.webServiceStart : "")
    }

    /// Everything the build output depends on, as text; its SHA-256 is the content key.
    func keyMaterial(host: HostInputs) -> String {
        var parts = [
            "recipe=\(Self.version)", "name=\(name)", "kernel=\(host.kernelVersion)",
            "cmdline=\(Self.kernelCommandLine)", "marker=\(Self.readyMarker)",
            "modules=\(Self.modules.joined(separator: ","))", "disk=\(Self.baseDiskBytes)",
        ]
        parts += host.packageVersions.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        parts += ["init:\n\(initScript)", "power:\n\(GuestFiles.powerButtonHandler)"]
        if includesWebService {
            parts += ["work=\(GuestFiles.webWorkIterations)", "web:\n\(GuestFiles.webServiceSource)"]
        }
        return parts.joined(separator: "\n")
    }
}

/// The host's kernel and package versions an image is built from.
struct HostInputs {
    var kernelVersion: String
    var packageVersions: [String: String]
    var vmlinuzPath: String { "/boot/vmlinuz-\(kernelVersion)" }
    var modulesDirectory: String { "/lib/modules/\(kernelVersion)" }

    /// The newest kernel in /boot that has its modules installed, or `kernelVersion` if given.
    static func probe(kernelVersion: String?) async throws -> HostInputs {
        let kernel = try kernelVersion ?? newestKernel()
        guard FileManager.default.fileExists(atPath: "/boot/vmlinuz-\(kernel)") else {
            throw VireoError(.failedPrecondition, "/boot/vmlinuz-\(kernel) is missing: install linux-image-\(kernel)")
        }
        var versions: [String: String] = [:]
        for package in ["linux-image-\(kernel)", "busybox-static"] {
            guard let version = try await HostTool.packageVersion(package) else {
                throw VireoError(.failedPrecondition, "image build needs the Debian package \(package): install it")
            }
            versions[package] = version
        }
        return HostInputs(kernelVersion: kernel, packageVersions: versions)
    }

    private static func newestKernel() throws -> String {
        let prefix = "vmlinuz-"
        let kernels = ((try? FileManager.default.contentsOfDirectory(atPath: "/boot")) ?? [])
            .filter { $0.hasPrefix(prefix) }
            .map { String($0.dropFirst(prefix.count)) }
            .filter { FileManager.default.fileExists(atPath: "/lib/modules/\($0)/modules.dep") }
            .sorted { $0.compare($1, options: .numeric) == .orderedAscending }
        guard let newest = kernels.last else {
            throw VireoError(
                .failedPrecondition,
                "no kernel with modules in /boot: install the Debian package linux-image-cloud-amd64")
        }
        return newest
    }
}
