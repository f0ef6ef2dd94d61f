import ArgumentParser
import Foundation
import VireoAPI
import VireoImage
import VireoModel

struct ImageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image", abstract: "Guest images Vireo builds on this host (no server needed).",
        subcommands: [ImageBuildCommand.self, ImageList.self])
}

/// Where images are cached: the same directory `vireo up` and the qemu driver use.
struct ImageCacheOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "Data directory, as for `vireo up`; images are cached in its images/ directory "
                + "(default: $XDG_DATA_HOME/vireo, as root /var/lib/vireo, else ~/.local/share/vireo).",
            valueName: "dir"))
    var dataDir: String?

    @Option(
        help: ArgumentHelp(
            "Image cache directory, overriding <data-dir>/images (as --driver-opt images=DIR does for the qemu driver).",
            valueName: "dir"))
    var images: String?

    var builder: ImageBuilder {
        ImageBuilder(cacheDirectory: images ?? (dataDir ?? ServeOptions.defaultDataDirectory()) + "/images")
    }
}

struct ImageBuildCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "build", abstract: "Build guest images from this host's kernel and packages, or find them cached.",
        discussion: """
            Needs the Debian packages of a kernel (linux-image-cloud-amd64), busybox-static, gcc, qemu-utils and \
            e2fsprogs; downloads nothing. An image is rebuilt only when its inputs change. Progress goes to \
            standard error, the summary to standard output.
            """)

    @Argument(help: ArgumentHelp("Images to build (see `vireo image list`).", valueName: "name")) var names: [String] = []
    @Flag(help: "Build every image of the catalogue.") var all = false
    @OptionGroup var cache: ImageCacheOptions
    @OptionGroup var output: OutputOptions

    /// What `build` reports per image.
    struct Summary: Codable {
        var name: String
        var key: String
        var kernelVersion: String
        var sizes: BuiltImage.Sizes
        var directory: String
        /// Seconds the build (or the cache lookup) took.
        var seconds: Double
        /// True when the image was already built for these inputs.
        var cached: Bool
    }

    func validate() throws {
        if names.isEmpty && !all { throw ValidationError("name the images to build, or pass --all") }
    }

    func run() async throws {
        let known = ImageBuilder.knownImages
        for name in names where !known.contains(name) {
            throw VireoError(.invalidArgument, "unknown image '\(name)'; known images: \(known.joined(separator: ", "))")
        }
        var wanted = all ? known : []
        for name in names where !wanted.contains(name) { wanted.append(name) }
        let builder = cache.builder
        var summaries: [Summary] = []
        for name in wanted {
            let started = ContinuousClock.now
            let cached = try await builder.image(named: name) != nil
            let image = try await builder.build(name) { stderr($0) }
            summaries.append(
                Summary(
                    name: image.name, key: image.key, kernelVersion: image.kernelVersion, sizes: image.sizes,
                    directory: image.directory, seconds: (ContinuousClock.now - started).secondsValue, cached: cached))
        }
        if output.output == .json { return try printJSON(summaries) }
        printTable(
            ["NAME", "KEY", "KERNEL", "KERNEL-SIZE", "INITRD", "DISK", "TIME", "PATH"],
            summaries.map {
                [
                    $0.name, String($0.key.prefix(12)), $0.kernelVersion, formatBytes($0.sizes.kernelBytes),
                    formatBytes($0.sizes.initrdBytes), formatBytes($0.sizes.baseDiskBytes),
                    $0.cached ? "cached" : String(format: "%.1f s", $0.seconds), $0.directory,
                ]
            })
    }
}

struct ImageList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List the image catalogue, and which images are built here.")
    @OptionGroup var cache: ImageCacheOptions
    @OptionGroup var output: OutputOptions

    /// A catalogue entry with what the cache holds for it.
    struct Entry: Codable {
        var name: String
        var description: String
        var diskMiB: Int
        var minimumMemoryMiB: Int
        /// `built` (current for this host's inputs), `outdated` (built from other inputs; the next
        /// build or VM start rebuilds it), or `missing`.
        var status: String
        /// The newest built image of this name, if any.
        var built: Built?
    }

    struct Built: Codable {
        var key: String
        var kernelVersion: String
        var directory: String
        /// Kernel, initramfs and base disk together, in bytes.
        var bytes: Int64
        var createdAt: Date
    }

    func run() async throws {
        let builder = cache.builder
        let cached = try builder.built()
        var entries: [Entry] = []
        for info in ImageCatalogue.builtIn {
            // The current image needs the host's inputs; without them (no kernel installed), the
            // newest image in the cache is shown as it is.
            let current = try? await builder.image(named: info.name)
            let image = current ?? cached.first { $0.name == info.name }
            entries.append(
                Entry(
                    name: info.name, description: info.description, diskMiB: info.diskMiB,
                    minimumMemoryMiB: info.minimumMemoryMiB,
                    status: current != nil ? "built" : image != nil ? "outdated" : "missing",
                    built: image.map {
                        Built(
                            key: $0.key, kernelVersion: $0.kernelVersion, directory: $0.directory,
                            bytes: $0.sizes.kernelBytes + $0.sizes.initrdBytes + $0.sizes.baseDiskBytes,
                            createdAt: $0.createdAt)
                    }))
        }
        if output.output == .json { return try printJSON(entries) }
        printTable(
            ["NAME", "MIN-MEMORY", "DISK", "STATUS", "SIZE", "PATH", "DESCRIPTION"],
            entries.map {
                [
                    $0.name, ByteSize.format(mib: $0.minimumMemoryMiB), ByteSize.format(mib: $0.diskMiB), $0.status,
                    $0.built.map { formatBytes($0.bytes) } ?? "-", $0.built?.directory ?? "-", $0.description,
                ]
            })
    }
}

/// "1.2 MiB", "640 KiB", "512 B": file sizes for tables.
func formatBytes(_ bytes: Int64) -> String {
    if bytes < 1024 { return "\(bytes) B" }
    if bytes < 1 << 20 { return String(format: "%.0f KiB", Double(bytes) / 1024) }
    if bytes < 1 << 30 { return String(format: "%.1f MiB", Double(bytes) / 1_048_576) }
    return String(format: "%.1f GiB", Double(bytes) / 1_073_741_824)
}
