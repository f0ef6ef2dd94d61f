import Foundation

/// A guest image built on this host: a kernel, an initramfs and an empty base disk, plus what a
/// driver needs to boot it. Stored as `image.json` next to the files.
public struct BuiltImage: Sendable, Codable, Equatable {
    /// How the kernel file boots.
    public enum KernelFormat: String, Sendable, Codable {
        /// Uncompressed ELF `vmlinux`; QEMU `-kernel` boots it through the PVH entry point.
        case elf
        /// A compressed bzImage, as shipped in /boot.
        case bzImage
    }

    /// File sizes, in bytes.
    public struct Sizes: Sendable, Codable, Equatable {
        public var kernelBytes: Int64
        public var initrdBytes: Int64
        /// Bytes the qcow2 file takes on the host.
        public var baseDiskBytes: Int64
        /// Size the guest sees (`/dev/vda`).
        public var baseDiskVirtualBytes: Int64
    }

    /// Image name (`tiny`, `web`).
    public var name: String
    /// SHA-256 (hex) of everything the build depends on; a new key means a new build.
    public var key: String
    /// Absolute path of the directory holding the files below.
    public var directory: String
    public var kernel: String
    public var kernelFormat: KernelFormat
    public var initrd: String
    /// qcow2 with an empty ext4 filesystem; use it read-only, as the backing file of per-VM overlays.
    public var baseDisk: String
    /// The complete kernel command line to pass (`-append`); append `vireo.name=NAME`,
    /// `vireo.ip=ADDR/PREFIX` and `vireo.gw=GW` as needed.
    public var kernelCommandLine: String
    /// The guest prints one line `<readyMarker> name=<NAME> ip=<ADDR/PREFIX or none>` on the
    /// first serial port when it is up (for `web`: when the service listens).
    public var readyMarker: String
    /// Kernel release, as in /lib/modules (e.g. `6.1.0-56-cloud-amd64`).
    public var kernelVersion: String
    /// Kernel modules in the initramfs, in the order init loads them.
    public var modules: [String]
    /// Debian package -> version the image was built from.
    public var packageVersions: [String: String]
    public var recipeVersion: Int
    public var sizes: Sizes
    public var createdAt: Date
}

extension BuiltImage {
    static let manifestName = "image.json"

    static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }

    /// Reads `directory/image.json`. Paths are re-rooted at `directory`, so a cache directory
    /// that was moved or mounted elsewhere still works.
    static func load(directory: String) throws -> BuiltImage {
        let data = try Data(contentsOf: URL(fileURLWithPath: "\(directory)/\(manifestName)"))
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(BuiltImage.self, from: data).rerooted(at: directory)
    }

    /// The same image with its file paths in `directory`.
    func rerooted(at directory: String) -> BuiltImage {
        var image = self
        image.directory = directory
        image.kernel = "\(directory)/\((kernel as NSString).lastPathComponent)"
        image.initrd = "\(directory)/\((initrd as NSString).lastPathComponent)"
        image.baseDisk = "\(directory)/\((baseDisk as NSString).lastPathComponent)"
        return image
    }
}
