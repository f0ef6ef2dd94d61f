import Foundation
import Glibc
import VireoModel
import VireoProcess

/// Builds guest images on this host from installed Debian packages (kernel, busybox-static, gcc,
/// qemu-utils, e2fsprogs), with no downloads, and keeps them in a cache keyed by content.
///
/// Layout: `<cacheDirectory>/<name>-<key prefix>/` holding `vmlinux`, `initramfs.cpio.gz`,
/// `base.qcow2` and `image.json`. A build happens in a hidden temporary directory that is renamed
/// into place at the end, so a directory with that name is always complete.
public struct ImageBuilder: Sendable {
    /// Absolute: a disk made from an image names the image's file as its backing file, and
    /// `qemu-img` reads a relative backing name against the disk's directory, not the cwd.
    public let cacheDirectory: String
    /// Kernel release to build with; nil picks the newest kernel in /boot that has modules.
    public let kernelVersion: String?

    /// Names of the images this builder can make.
    public static var knownImages: [String] { ImageRecipe.names }

    public init(cacheDirectory: String, kernelVersion: String? = nil) {
        self.cacheDirectory = URL(fileURLWithPath: cacheDirectory).standardizedFileURL.path
        self.kernelVersion = kernelVersion
    }

    /// Returns the cached image for the current inputs, building it first if needed.
    /// Takes tens of seconds when it builds, milliseconds when cached.
    public func build(_ name: String, progress: @escaping @Sendable (String) -> Void = { _ in }) async throws -> BuiltImage {
        let recipe = try ImageRecipe(named: name)
        let host = try await HostInputs.probe(kernelVersion: kernelVersion)
        let key = try await contentKey(recipe, host)
        let finalDirectory = directory(for: name, key: key)
        if let cached = try? BuiltImage.load(directory: finalDirectory) {
            progress("\(name): cached at \(finalDirectory)")
            return cached
        }
        try FileManager.default.createDirectory(atPath: cacheDirectory, withIntermediateDirectories: true)
        let workDirectory = "\(cacheDirectory)/.building-\(name)-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: workDirectory, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: workDirectory) }

        let started = Date()
        let image = try await ImageBuild(recipe: recipe, host: host, directory: workDirectory, progress: progress)
            .run(key: key)
        // The manifest names the files where they will be once the directory is in place.
        let manifest = try BuiltImage.encoder().encode(image.rerooted(at: finalDirectory))
        try manifest.write(to: URL(fileURLWithPath: "\(workDirectory)/\(BuiltImage.manifestName)"))

        // rename(2) is atomic and refuses to replace a non-empty directory: if a concurrent build
        // of the same key won, use its result.
        if rename(workDirectory, finalDirectory) != 0 {
            if let other = try? BuiltImage.load(directory: finalDirectory) { return other }
            throw VireoError(.internal, "cannot move \(workDirectory) to \(finalDirectory): errno \(errno)")
        }
        let seconds = String(format: "%.1f", Date().timeIntervalSince(started))
        progress("\(name): built in \(seconds) s at \(finalDirectory)")
        return try BuiltImage.load(directory: finalDirectory)
    }

    /// Every complete image in the cache, newest first.
    public func built() throws -> [BuiltImage] {
        guard FileManager.default.fileExists(atPath: cacheDirectory) else { return [] }
        return try FileManager.default.contentsOfDirectory(atPath: cacheDirectory)
            .filter { !$0.hasPrefix(".") }
            .compactMap { try? BuiltImage.load(directory: "\(cacheDirectory)/\($0)") }
            .sorted { $0.createdAt > $1.createdAt }
    }

    /// The cached image for the current inputs (kernel, packages, recipe), or nil if it has not
    /// been built yet. Throws for an unknown name.
    public func image(named name: String) async throws -> BuiltImage? {
        let recipe = try ImageRecipe(named: name)
        let key = try await contentKey(recipe, try await HostInputs.probe(kernelVersion: kernelVersion))
        return try? BuiltImage.load(directory: directory(for: name, key: key))
    }

    /// The content key `name` would be built under now (SHA-256, hex).
    public func contentKey(for name: String) async throws -> String {
        try await contentKey(ImageRecipe(named: name), HostInputs.probe(kernelVersion: kernelVersion))
    }

    private func contentKey(_ recipe: ImageRecipe, _ host: HostInputs) async throws -> String {
        try await HostTool.sha256(Data(recipe.keyMaterial(host: host).utf8))
    }

    private func directory(for name: String, key: String) -> String {
        "\(cacheDirectory)/\(name)-\(key.prefix(16))"
    }
}
