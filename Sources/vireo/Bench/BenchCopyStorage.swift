import ArgumentParser
import Foundation
import Logging
import VireoDriver
import VireoDriverQEMU
import VireoImage
import VireoModel
import VireoSecurity

/// Result of `vireo bench copy-storage`.
struct CopyStorageBenchResult: Codable, Sendable {
    var accelerator: String
    /// `live` or `paused`: how the memory was copied (auto: live for the bench's new guests).
    var mode: String
    var diskMiB: Int
    var memoryMiB: Int
    /// MiB the guest wrote to its disk, starting just before each move, and how fast (0: at once).
    var writeMiB: Int
    var writeRateMiBps: Int
    /// Memory and disk over TLS with per-migration certificates, as the controller moves them.
    var tls: Bool = false
    var runs: [Run]
    var totalMs: MigrationBenchResult.Summary?
    var downtimeMs: MigrationBenchResult.Summary?
    var guestDownMs: MigrationBenchResult.Summary?
    var diskCopyMs: MigrationBenchResult.Summary?
    var diskCopiedMiB: MigrationBenchResult.Summary?
    var memorySentMiB: MigrationBenchResult.Summary?

    struct Run: Codable, Sendable {
        var totalMs: Int?
        var downtimeMs: Int?
        /// From the guest's pause on the source to its resumption on the destination.
        var guestDownMs: Int?
        /// The disk mirror, until source and destination were in step.
        var diskCopyMs: Int?
        var diskCopiedBytes: UInt64?
        var memorySentBytes: UInt64?
        /// How much of its write the guest had done when the move started, and when it first
        /// answered on the destination: less than `writeMiB` there means the write went on across
        /// the move.
        var writtenMiBAtStart: Int?
        var writtenMiBOnArrival: Int?
        /// The checksum of what the guest wrote equals the checksum of that region read back
        /// from the destination's disk (bypassing the guest's page cache).
        var checksumMatches: Bool
        /// The same boot id on both sides.
        var keptRunning: Bool
        /// The source's copy of the disk is gone once the guest has moved.
        var sourceDiskRemoved: Bool
        var error: String?
    }
}

struct BenchCopyStorage: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "copy-storage",
        abstract: "Move a guest that writes to its disk between two QEMU hosts that share no storage.",
        discussion: """
            Needs no controller: two QEMU drivers run in this process over 127.0.0.1, each keeping its \
            disks in its own directory, as two hosts with local storage would. Each run boots a `web` guest \
            with a --disk disk on host a, has it write --write MiB of a fixed pattern to its disk (past its \
            filesystem, each MiB synced; POST /fill in the guest), and at once moves it to host b with its \
            disk copied (the destination exports an empty disk over NBD, the source mirrors into it while \
            the guest runs, then the memory follows). Once the write has finished on b, the guest reads the \
            region back from the disk itself and the checksums are compared. Prints the total time, the \
            downtime (QEMU's, to the source's last byte, and the guest's, from its pause on the source to its \
            resumption on the destination), the disk copy's time and bytes, and the memory sent. --tls on moves memory and disk \
            over TLS with fresh certificates for each move, as the controller does.
            """)

    @Option(help: ArgumentHelp("The guest's disk size.", valueName: "size")) var disk: String = "1GiB"
    @Option(help: ArgumentHelp("Guest memory.", valueName: "size")) var memory: String = "256MiB"
    @Option(help: ArgumentHelp("MiB the guest writes to its disk during the move.", valueName: "MiB"))
    var write: Int = 64
    @Option(
        help: ArgumentHelp(
            "How fast the guest writes, MiB/s (0: as fast as it can). The default spreads the write over two seconds, longer than a move takes, so it goes on across the switch-over.",
            valueName: "MiB/s"))
    var writeRate: Int = 32
    @Option(help: "Moves (each with a freshly booted guest).") var runs: Int = 3
    @Option(
        help: ArgumentHelp(
            "off (plain TCP) or on (memory and disk over TLS with per-migration certificates).", valueName: "off|on"))
    var tls: String = "off"
    @Option(help: ArgumentHelp("Image cache.", valueName: "dir"))
    var images: String = ServeOptions.defaultDataDirectory() + "/images"
    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard (1...20).contains(runs) else { throw ValidationError("--runs must be 1...20 (got \(runs))") }
        guard ["off", "on"].contains(tls) else { throw ValidationError("--tls must be off or on (got '\(tls)')") }
        guard (1...65_536).contains(write) else { throw ValidationError("--write must be 1...65536 MiB (got \(write))") }
        guard (0...1_048_576).contains(writeRate) else {
            throw ValidationError("--write-rate must be 0...1048576 MiB/s (got \(writeRate))")
        }
    }

    func run() async throws {
        let diskMiB = try ByteSize.parseMiB(disk, field: "--disk")
        let memoryMiB = try ByteSize.parseMiB(memory, field: "--memory")
        guard diskMiB >= ImageCatalogue.virtualDiskMiB + write else {
            throw ValidationError(
                "--disk \(disk) has no room for --write \(write) MiB past the guest's \(ImageCatalogue.virtualDiskMiB) MiB filesystem"
            )
        }
        let accelerator = try Accelerator.resolve("auto")
        stderr("building or finding the web image in \(images)")
        let built = try await ImageBuilder(cacheDirectory: images).build("web")
        let image = GuestImage(
            kernel: built.kernel, initrd: built.initrd, baseDisk: built.baseDisk,
            kernelCommandLine: built.kernelCommandLine, readyMarker: built.readyMarker)
        let directory =
            FileManager.default.temporaryDirectory.path + "/vireo-bench-copy-storage-\(UUID().uuidString.prefix(8))"
        let hosts = ["a", "b"].map { name -> QEMUDriver in
            let configuration = QEMUDriver.Configuration(
                stateDirectory: "\(directory)/\(name)", accelerator: accelerator, cpus: 2, memoryMiB: 4096)
            var logger = Logger(label: "vireo.bench.\(name)")
            logger.logLevel = .warning
            return QEMUDriver(configuration: configuration, logger: logger) { _ in image }
        }
        var result = CopyStorageBenchResult(
            accelerator: accelerator.rawValue,
            mode: QEMUDriver.MigrationMode.auto.resolved(for: accelerator, memoryTrimmed: true).rawValue, diskMiB: diskMiB,
            memoryMiB: memoryMiB, writeMiB: write, writeRateMiBps: writeRate, tls: tls == "on", runs: [])
        let authority = tls == "on" ? MigrationAuthority() : nil
        defer { try? FileManager.default.removeItem(atPath: directory) }
        for number in 1...runs {
            let spec = InstanceSpec(
                id: .generate(), name: "bench-copy-\(number)", image: "web", cpus: 1, memoryMiB: memoryMiB,
                diskMiB: diskMiB)
            var run = CopyStorageBenchResult.Run(checksumMatches: false, keptRunning: false, sourceDiskRemoved: false)
            do {
                run = try await move(spec, from: hosts[0], to: hosts[1], authority: authority)
            } catch {
                run.error = "\(error)"
            }
            await MigrationBench.discard(spec.id, on: hosts)
            result.runs.append(run)
            stderr(Self.describe(run, number: number))
        }
        let done = result.runs.filter { $0.totalMs != nil }
        result.totalMs = .init(done.compactMap { $0.totalMs.map(Double.init) })
        result.downtimeMs = .init(done.compactMap { $0.downtimeMs.map(Double.init) })
        result.guestDownMs = .init(done.compactMap { $0.guestDownMs.map(Double.init) })
        result.diskCopyMs = .init(done.compactMap { $0.diskCopyMs.map(Double.init) })
        result.diskCopiedMiB = .init(done.compactMap { $0.diskCopiedBytes.map { Double($0) / 1_048_576 } })
        result.memorySentMiB = .init(done.compactMap { $0.memorySentBytes.map { Double($0) / 1_048_576 } })
        if output.output == .json { return try printJSON(result) }
        Self.printSummary(result)
    }

    /// Boots the guest on `source`, starts its disk write and moves it with its disk to `destination`.
    func move(
        _ spec: InstanceSpec, from source: QEMUDriver, to destination: QEMUDriver, authority: MigrationAuthority?
    ) async throws -> CopyStorageBenchResult.Run {
        var run = CopyStorageBenchResult.Run(checksumMatches: false, keptRunning: false, sourceDiskRemoved: false)
        try await source.create(spec)
        try await source.start(spec.id)
        let address = try await MigrationBench.waitRunning(source, spec.id)
        let before = try await MigrationBench.status(address)
        let sourceDisk = "\(source.configuration.stateDirectory)/\(spec.id)/disk.qcow2"
        let migration = MigrationID.generate()
        let credentials = try authority.map { try $0.issue(migration: migration, listener: .destination, address: "127.0.0.1") }
        let uri = try await destination.prepareIncoming(
            spec, guestAddress: nil, listenAddress: "127.0.0.1", storage: .copy, credentials: credentials?.destination)
        // The write starts with the move: the destination is ready, the mirror begins at once.
        _ = try await MigrationBench.guest(address, post: true, "/fill?mib=\(write)&rate=\(writeRate)")
        run.writtenMiBAtStart = try await Self.fill(address).writtenMiB
        let stats: MigrationStats
        do {
            stats = try await source.migrate(spec.id, to: uri, credentials: credentials?.source) { _ in }
        } catch {
            try? await destination.abortIncoming(spec.id)
            throw error
        }
        run.totalMs = stats.totalTimeMs
        run.downtimeMs = stats.downtimeMs
        run.diskCopyMs = stats.storageTimeMs
        run.diskCopiedBytes = stats.storageBytes
        run.memorySentBytes = stats.transferredBytes
        let paused = await source.migrationInstants(spec.id).paused
        try await destination.finishIncoming(spec.id)
        let arrived = try await MigrationBench.waitRunning(destination, spec.id)
        run.guestDownMs = MigrationBench.milliseconds(from: paused, to: await destination.migrationInstants(spec.id).resumed)
        try await source.release(spec.id)
        run.sourceDiskRemoved = !FileManager.default.fileExists(atPath: sourceDisk)
        var fill = try await Self.fill(arrived)
        run.writtenMiBOnArrival = fill.writtenMiB
        let after = try await MigrationBench.status(arrived)
        run.keptRunning = after.bootId == before.bootId && after.uptimeSeconds > before.uptimeSeconds
        let deadline = ContinuousClock.now + .seconds(300)
        while fill.running {
            guard ContinuousClock.now < deadline else { throw VireoError(.internal, "the guest's write did not finish") }
            try await Task.sleep(for: .milliseconds(200))
            fill = try await Self.fill(arrived)
        }
        guard fill.error.isEmpty, fill.writtenMiB == write else {
            throw VireoError(.internal, "the guest's write failed after \(fill.writtenMiB) MiB: \(fill.error)")
        }
        let readBack = try await Self.fill(arrived, verify: true)
        guard readBack.error.isEmpty else { throw VireoError(.internal, "reading back failed: \(readBack.error)") }
        run.checksumMatches = readBack.checksum == fill.checksum
        return run
    }

    struct Fill: Decodable {
        var writtenMiB: Int
        var running: Bool
        var checksum: String
        var error: String

        enum CodingKeys: String, CodingKey { case writtenMiB, running, checksum, error }
        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            writtenMiB = try c.decodeIfPresent(Int.self, forKey: .writtenMiB) ?? 0
            running = try c.decodeIfPresent(Bool.self, forKey: .running) ?? false
            checksum = try c.decode(String.self, forKey: .checksum)
            error = try c.decode(String.self, forKey: .error)
        }
    }

    static func fill(_ address: String, verify: Bool = false) async throws -> Fill {
        let data = try await MigrationBench.guest(address, post: false, verify ? "/fill?verify=1" : "/fill")
        do {
            return try JSONDecoder().decode(Fill.self, from: data)
        } catch {
            throw VireoError(.internal, "unexpected /fill from the guest at \(address): \(error)")
        }
    }

    static func describe(_ run: CopyStorageBenchResult.Run, number: Int) -> String {
        guard let total = run.totalMs else { return "run \(number): failed: \(run.error ?? "unknown")" }
        return String(
            format:
                "run %d: total %d ms, downtime %d ms (guest down %d ms), disk %.0f MiB in %d ms, memory %.0f MiB; written %d MiB at the start, %d on arrival; checksum %@%@",
            number, total, run.downtimeMs ?? 0, run.guestDownMs ?? 0, Double(run.diskCopiedBytes ?? 0) / 1_048_576,
            run.diskCopyMs ?? 0,
            Double(run.memorySentBytes ?? 0) / 1_048_576, run.writtenMiBAtStart ?? 0, run.writtenMiBOnArrival ?? 0,
            run.checksumMatches ? "matches" : "DIFFERS", run.error.map { " (\($0))" } ?? "")
    }

    static func printSummary(_ result: CopyStorageBenchResult) {
        func triple(_ summary: MigrationBenchResult.Summary?, _ format: String) -> String {
            guard let summary else { return "-" }
            return [summary.min, summary.median, summary.max].map { String(format: format, $0) }.joined(separator: " / ")
        }
        print(
            "\(result.accelerator), \(result.mode) memory copy, disk \(result.diskMiB) MiB, memory \(result.memoryMiB) MiB, "
                + "\(result.writeMiB) MiB written at \(result.writeRateMiBps == 0 ? "full speed" : "\(result.writeRateMiBps) MiB/s") "
                + "from the start of each move\(result.tls ? ", over TLS" : ""); min / median / max:")
        printTable(
            [
                "RUNS", "TOTAL MS", "DOWNTIME MS", "GUEST DOWN MS", "DISK COPY MS", "DISK MIB", "MEMORY MIB", "CHECKSUM",
                "SOURCE DISK GONE",
            ],
            [
                [
                    "\(result.runs.filter { $0.totalMs != nil }.count)/\(result.runs.count)", triple(result.totalMs, "%.0f"),
                    triple(result.downtimeMs, "%.0f"), triple(result.guestDownMs, "%.0f"), triple(result.diskCopyMs, "%.0f"),
                    triple(result.diskCopiedMiB, "%.0f"), triple(result.memorySentMiB, "%.0f"),
                    "\(result.runs.filter(\.checksumMatches).count)/\(result.runs.count) match",
                    "\(result.runs.filter(\.sourceDiskRemoved).count)/\(result.runs.count)",
                ]
            ])
    }
}
