/// A guest image Vireo knows how to provide.
public struct ImageInfo: Sendable, Codable, Equatable {
    public var name: String
    public var description: String
    /// Size of the image's base disk, in MiB (what a simulated host accounts for).
    public var diskMiB: Int
    /// Smallest memory the guest boots with, in MiB.
    public var minimumMemoryMiB: Int

    public init(name: String, description: String, diskMiB: Int, minimumMemoryMiB: Int) {
        self.name = name
        self.description = description
        self.diskMiB = diskMiB
        self.minimumMemoryMiB = minimumMemoryMiB
    }
}

/// The images Vireo offers. Real drivers build them on the host from Debian packages under the
/// same names; for the simulated driver an image is a name and a size.
public enum ImageCatalogue {
    public static let builtIn: [ImageInfo] = [
        ImageInfo(
            name: "tiny", description: "Linux kernel + busybox initramfs; boots to a ready marker, brings up virtio-net",
            diskMiB: 16, minimumMemoryMiB: 80),
        ImageInfo(
            name: "web",
            description: "tiny + an HTTP service whose latency depends on its CPU, with Prometheus metrics",
            diskMiB: 24, minimumMemoryMiB: 96),
    ]

    /// The size of every built image's disk as a guest sees it (an ext4 filesystem of this size),
    /// and the smallest disk a VM may ask for.
    public static let virtualDiskMiB = 64

    public static func image(named name: String) -> ImageInfo? {
        builtIn.first { $0.name == name }
    }
}
