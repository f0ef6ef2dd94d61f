import Foundation
import VireoModel
import VireoProcess

/// One image build into an empty directory: kernel, initramfs, base disk.
struct ImageBuild {
    let recipe: ImageRecipe
    let host: HostInputs
    let directory: String
    let progress: @Sendable (String) -> Void

    func run(key: String) async throws -> BuiltImage {
        let kernelPath = "\(directory)/vmlinux"
        let initrdPath = "\(directory)/initramfs.cpio.gz"
        let diskPath = "\(directory)/base.qcow2"

        progress("\(recipe.name): extracting vmlinux from \(host.vmlinuzPath)")
        try await KernelExtraction.extractELF(from: host.vmlinuzPath, to: kernelPath)

        progress("\(recipe.name): initramfs (busybox, modules\(recipe.includesWebService ? ", vireo-web" : ""))")
        let modules = try await moduleFiles()
        try await writeInitramfs(to: initrdPath, modules: modules)

        progress("\(recipe.name): base disk (\(ImageRecipe.baseDiskBytes >> 20) MiB ext4)")
        try await writeBaseDisk(to: diskPath)

        return BuiltImage(
            name: recipe.name, key: key, directory: directory, kernel: kernelPath, kernelFormat: .elf,
            initrd: initrdPath, baseDisk: diskPath, kernelCommandLine: ImageRecipe.kernelCommandLine,
            readyMarker: ImageRecipe.readyMarker, kernelVersion: host.kernelVersion, modules: modules.map(\.name),
            packageVersions: host.packageVersions, recipeVersion: ImageRecipe.version,
            sizes: .init(
                kernelBytes: try fileSize(kernelPath), initrdBytes: try fileSize(initrdPath),
                baseDiskBytes: try fileSize(diskPath), baseDiskVirtualBytes: ImageRecipe.baseDiskBytes),
            createdAt: Date())
    }

    // MARK: Kernel modules

    /// The recipe's modules that are loadable (.ko) in this kernel, decompressed, in load order.
    private func moduleFiles() async throws -> [(name: String, contents: Data)] {
        let base = host.modulesDirectory
        let builtin = (try? String(contentsOfFile: "\(base)/modules.builtin", encoding: .utf8)) ?? ""
        let builtinNames = Set(builtin.split(separator: "\n").map { moduleName(of: $0) })
        let dep = try String(contentsOfFile: "\(base)/modules.dep", encoding: .utf8)
        var paths: [String: String] = [:]
        for line in dep.split(separator: "\n") {
            let path = String(line.prefix { $0 != ":" })
            paths[moduleName(of: Substring(path))] = path
        }
        var result: [(name: String, contents: Data)] = []
        for name in ImageRecipe.modules where !builtinNames.contains(name) {
            guard let path = paths[name] else {
                throw VireoError(.failedPrecondition, "kernel \(host.kernelVersion) has no module \(name)")
            }
            result.append((name, try await moduleContents("\(base)/\(path)")))
        }
        return result
    }

    /// "kernel/drivers/virtio/virtio_ring.ko.xz" -> "virtio_ring"
    private func moduleName(of path: Substring) -> String {
        let file = path.split(separator: "/").last.map(String.init) ?? ""
        return String(file.prefix { $0 != "." }).replacingOccurrences(of: "-", with: "_")
    }

    /// busybox insmod cannot read compressed modules: decompress them here.
    private func moduleContents(_ path: String) async throws -> Data {
        let decompressors = [".ko.xz": "xz", ".ko.zst": "zstd"]
        if let tool = decompressors.first(where: { path.hasSuffix($0.key) })?.value {
            return try await HostTool.run(tool, ["-dc", path])
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw VireoError(.failedPrecondition, "cannot read \(path)")
        }
        return path.hasSuffix(".ko.gz") ? try Gzip.decompress(data, name: path) : data
    }

    // MARK: Initramfs

    private func writeInitramfs(to path: String, modules: [(name: String, contents: Data)]) async throws {
        guard let busybox = FileManager.default.contents(atPath: ImageRecipe.busyboxPath) else {
            throw VireoError(.failedPrecondition, "\(ImageRecipe.busyboxPath) is missing: install busybox-static")
        }
        var archive = CPIOArchive()
        for directory in [
            "bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "run", "tmp", "data", "root", "etc",
            "etc/acpi", "etc/acpi/PWRF", "lib", "lib/modules",
        ] {
            archive.directory(directory)
        }
        // The kernel opens /dev/console for init before init can mount devtmpfs.
        archive.characterDevice("dev/console", major: 5, minor: 1)
        archive.file("bin/busybox", contents: busybox, mode: 0o755)
        let applets = String(decoding: try await HostTool.run(ImageRecipe.busyboxPath, ["--list-full"]), as: UTF8.self)
        for applet in applets.split(separator: "\n").map(String.init) where applet != "bin/busybox" {
            archive.symlink(applet, target: "/bin/busybox")
        }
        archive.file("init", contents: Data(recipe.initScript.utf8), mode: 0o755)
        // busybox acpid runs <confdir>/PWRF/00000080 for the power button.
        archive.file("etc/acpi/PWRF/00000080", contents: Data(GuestFiles.powerButtonHandler.utf8), mode: 0o755)
        for module in modules {
            archive.file("lib/modules/\(module.name).ko", contents: module.contents)
        }
        archive.file("lib/modules/order", contents: Data(modules.map(\.name).joined(separator: "\n").utf8))
        if recipe.includesWebService {
            archive.file("usr/bin/vireo-web", contents: try await compileWebService(), mode: 0o755)
        }
        try Gzip.compress(archive.finish()).write(to: URL(fileURLWithPath: path))
    }

    private func compileWebService() async throws -> Data {
        let source = "\(directory)/vireo-web.c"
        let binary = "\(directory)/vireo-web"
        try Data(GuestFiles.webServiceSource.utf8).write(to: URL(fileURLWithPath: source))
        defer {
            try? FileManager.default.removeItem(atPath: source)
            try? FileManager.default.removeItem(atPath: binary)
        }
        do {
            try await HostTool.run(
                "cc",
                [
                    "-O2", "-static", "-pthread", "-s", "-DWORK_ITERATIONS=\(GuestFiles.webWorkIterations)",
                    "-o", binary, source,
                ])
        } catch let error as VireoError where error.code == .internal {
            // The usual cause: gcc without the static C library.
            throw VireoError(
                .failedPrecondition, "\(error.message) (static linking needs the Debian package libc6-dev)")
        }
        guard let data = FileManager.default.contents(atPath: binary) else {
            throw VireoError(.internal, "cc produced no \(binary)")
        }
        return data
    }

    // MARK: Base disk

    /// An empty ext4 filesystem in a qcow2 file; mkfs works on a plain file, so no root needed.
    private func writeBaseDisk(to path: String) async throws {
        let raw = "\(directory)/base.raw"
        defer { try? FileManager.default.removeItem(atPath: raw) }
        guard FileManager.default.createFile(atPath: raw, contents: nil),
            let handle = FileHandle(forWritingAtPath: raw)
        else { throw VireoError(.internal, "cannot create \(raw)") }
        try handle.truncate(atOffset: UInt64(ImageRecipe.baseDiskBytes))
        try handle.close()
        try await HostTool.run("mkfs.ext4", ["-F", "-q", "-L", "vireo-data", raw])
        try await HostTool.run("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", raw, path])
    }

    private func fileSize(_ path: String) throws -> Int64 {
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        return (attributes[.size] as? NSNumber)?.int64Value ?? 0
    }
}
