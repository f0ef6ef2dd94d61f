import ArgumentParser
import Foundation
import Logging
import Synchronization
import VireoAPI
import VireoClient
import VireoDriver
import VireoDriverQEMU
import VireoImage
import VireoModel
import VireoSecurity

/// Result of `vireo bench migrate`.
struct MigrationBenchResult: Codable, Sendable {
    var accelerator: String
    var runs: Int
    /// The migration parameters the source QEMU was given.
    var downtimeLimitMs: Int
    var bandwidthBytesPerSecond: UInt64
    var throttleInitialPercent: Int?
    var throttleIncrementPercent: Int?
    /// `live` or `paused` (what `--mode` resolved to on this accelerator).
    var mode: String
    var dirtyRateMiBps: Int
    var combinations: [Combination]

    struct Combination: Codable, Sendable {
        var memoryMiB: Int
        var dirtyMiB: Int
        /// Over TLS with per-migration certificates (as `vireo server` migrates by default).
        var tls: Bool = false
        /// Why the combination was not measured.
        var skipped: String?
        var runs: [Run] = []
        /// Over the runs that completed.
        var totalMs: Summary?
        var downtimeMs: Summary?
        var guestDownMs: Summary?
        var transferredMiB: Summary?
        /// Migrations QEMU completed (whether or not the guest survived them).
        var completed: Int { runs.filter { $0.totalMs != nil }.count }
        var keptRunning: Int { runs.filter(\.keptRunning).count }
        /// Dirtying runs in which the guest found every page of its load as it had written it.
        var memoryIntact: Int { runs.filter { $0.lostWrites == 0 }.count }
        var memoryChecked: Int { runs.filter { $0.lostWrites != nil }.count }
    }

    struct Run: Codable, Sendable {
        /// `a→b` or `b→a`: the two in-process hosts.
        var direction: String
        /// QEMU's `total-time`, and the guest's pause: QEMU's `downtime` in a live migration (the
        /// switch-over until the last byte was sent), from the pause to the last byte in a paused one.
        var totalMs: Int?
        var downtimeMs: Int?
        /// A paused migration: from the guest's pause on the source to its resumption on the
        /// destination (QEMU's RESUME event there) — the whole time it ran nowhere, with the end of
        /// the stream still in flight and the destination's load of it. QEMU's figures stop at the
        /// source's last byte.
        var guestDownMs: Int?
        var transferredBytes: UInt64?
        /// QEMU's `setup-time`: from the migrate command to the first page sent (in `totalMs`).
        var setupMs: Int?
        /// The highest dirty rate QEMU reported during the migration. QEMU computes it about once
        /// a second, so a shorter migration has none.
        var peakDirtyMiBps: Double?
        /// Same boot id before and after, and a larger uptime.
        var keptRunning: Bool
        /// The dirtying load was still running on the other side (always true when idle).
        var loadKept: Bool
        /// Pages of the dirtying load that, when the guest next came to rewrite them on the
        /// destination, did not hold what it had last written on the source: writes the migration
        /// lost. Nil when idle or when the guest did not answer.
        var lostWrites: UInt64?
        /// Why the migration failed, or why the guest did not keep running after it.
        var error: String?
    }

    struct Summary: Codable, Sendable {
        var min: Double
        var median: Double
        var max: Double

        init?(_ values: [Double]) {
            guard !values.isEmpty else { return nil }
            let sorted = values.sorted()
            min = sorted[0]
            max = sorted[sorted.count - 1]
            median =
                sorted.count % 2 == 1
                ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
        }
    }
}

struct BenchMigrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Migrate a `web` guest back and forth between two QEMU hosts in this process.",
        discussion: """
            Needs no controller: two QEMU drivers run in this process over 127.0.0.1, sharing a disk \
            directory, as two hosts with shared storage would. For each memory size and dirty size one guest \
            is booted and migrated --runs times, alternating a→b and b→a. With a dirty size D the guest writes \
            one word in every page of D MiB, in a loop, during the migrations (POST /dirty in the guest); \
            combinations with D ≥ memory − 64 MiB are skipped (the guest needs the rest). Each run checks \
            that the guest kept running (the same boot id and a larger uptime on the other side) and, with a \
            load, that its memory arrived intact (the load found every page as it had last written it). \
            --mode picks live pre-copy or a paused copy (docs/migration.md). --tls on sends each migration \
            over TLS with fresh certificates from an in-memory authority, as the controller does; --tls both \
            measures each combination both ways, plain first. DOWNTIME is QEMU's figure, which ends with the \
            source's last byte; GUEST DOWN (paused copies) runs from the guest's pause on the source to its \
            resumption on the destination, the stream's tail and the destination's load included.
            """)

    @Option(help: ArgumentHelp("Guest memory sizes, comma-separated.", valueName: "sizes"))
    var memory: String = "128MiB,512MiB"
    @Option(help: ArgumentHelp("MiB the guest dirties during migration, comma-separated (0: idle).", valueName: "sizes"))
    var dirty: String = "0,256"
    @Option(
        help: ArgumentHelp("How fast the guest dirties, in MiB/s of pages written (0: as fast as it can).", valueName: "MiB/s"))
    var rate: Int = 0
    @Option(help: "Migrations per combination.") var runs: Int = 3
    @Option(help: ArgumentHelp("Downtime QEMU may take for the switch-over.", valueName: "ms"))
    var downtimeLimit: Int = 300
    @Option(help: ArgumentHelp("Migration bandwidth cap per second.", valueName: "size"))
    var bandwidth: String = "8GiB"
    @Option(help: ArgumentHelp("auto-converge: first vCPU throttle (QEMU default 20).", valueName: "percent"))
    var throttleInitial: Int?
    @Option(help: ArgumentHelp("auto-converge: throttle step (QEMU default 10).", valueName: "percent"))
    var throttleIncrement: Int?
    @Option(
        help: ArgumentHelp(
            "live (pre-copy while the guest runs), paused (guest paused for the whole copy), or auto (live; the bench's guests are new, their RAM trimmed under TCG: docs/migration.md).",
            valueName: "mode"))
    var mode: String = "auto"
    @Option(
        help: ArgumentHelp(
            "off (plain TCP), on (TLS with per-migration certificates, as the controller migrates), or both.",
            valueName: "off|on|both"))
    var tls: String = "off"
    @Option(help: ArgumentHelp("Cancel a migration after this long.", valueName: "seconds"))
    var timeout: Int = 60
    @Option(help: ArgumentHelp("Image cache.", valueName: "dir"))
    var images: String = ServeOptions.defaultDataDirectory() + "/images"
    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard (1...100).contains(runs) else { throw ValidationError("--runs must be 1...100 (got \(runs))") }
        guard (1...60_000).contains(downtimeLimit) else {
            throw ValidationError("--downtime-limit must be 1...60000 ms (got \(downtimeLimit))")
        }
        guard (0...1_048_576).contains(rate) else { throw ValidationError("--rate must be 0...1048576 MiB/s (got \(rate))") }
        guard (1...3600).contains(timeout) else { throw ValidationError("--timeout must be 1...3600 s (got \(timeout))") }
        guard ["off", "on", "both"].contains(tls) else { throw ValidationError("--tls must be off, on or both (got '\(tls)')") }
        for (name, value) in [("--throttle-initial", throttleInitial), ("--throttle-increment", throttleIncrement)] {
            if let value, !(1...99).contains(value) { throw ValidationError("\(name) must be 1...99 percent (got \(value))") }
        }
    }

    func run() async throws {
        let memories = try Self.sizes(memory, field: "--memory", allowZero: false)
        let dirties = try Self.sizes(dirty, field: "--dirty", allowZero: true)
        var tuning = MigrationTuning(
            downtimeLimitMs: downtimeLimit, bandwidth: UInt64(try ByteSize.parseMiB(bandwidth, field: "--bandwidth")) << 20,
            timeout: .seconds(timeout))
        tuning.throttleInitial = throttleInitial
        tuning.throttleIncrement = throttleIncrement
        let accelerator = try Accelerator.resolve("auto")
        tuning.mode = try QEMUDriver.MigrationMode.parse(mode, field: "--mode")
        stderr("building or finding the web image in \(images)")
        let built = try await ImageBuilder(cacheDirectory: images).build("web")
        let guest = GuestImage(
            kernel: built.kernel, initrd: built.initrd, baseDisk: built.baseDisk,
            kernelCommandLine: built.kernelCommandLine, readyMarker: built.readyMarker)
        let bench = MigrationBench(
            accelerator: accelerator, image: guest, tuning: tuning, runs: runs, dirtyRateMiBps: rate,
            tls: tls == "both" ? [false, true] : [tls == "on"], authority: tls == "off" ? nil : MigrationAuthority())

        // Ctrl-C or SIGTERM cancel the runs; the VMs are still deleted.
        let result = try await cancellableBySignals { try await bench.measure(memories: memories, dirties: dirties) }
        if output.output == .json { return try printJSON(result) }
        Self.printSummary(result)
    }

    /// "128MiB,512MiB" or "0,256" (plain numbers are MiB).
    static func sizes(_ text: String, field: String, allowZero: Bool) throws -> [Int] {
        try text.split(separator: ",").map { item in
            let trimmed = item.trimmingCharacters(in: .whitespaces)
            if let mib = Int(trimmed) {
                guard mib > 0 || (allowZero && mib == 0) else {
                    throw VireoError.invalid(
                        field: field, value: "'\(trimmed)'", allowZero ? "must be 0 or more MiB" : "must be positive")
                }
                return mib
            }
            return try ByteSize.parseMiB(trimmed, field: field)
        }
    }

    static func printSummary(_ result: MigrationBenchResult) {
        func triple(_ summary: MigrationBenchResult.Summary?, _ format: String) -> String {
            guard let summary else { return "-" }
            return [summary.min, summary.median, summary.max].map { String(format: format, $0) }.joined(separator: " / ")
        }
        print(
            "\(result.accelerator), \(result.mode) migration, \(result.runs) runs each, downtime-limit \(result.downtimeLimitMs) ms, "
                + "max-bandwidth \(result.bandwidthBytesPerSecond >> 20) MiB/s; min / median / max:")
        printTable(
            [
                "MEMORY", "DIRTY", "TLS", "COMPLETED", "TOTAL MS", "DOWNTIME MS", "GUEST DOWN MS", "SENT MIB", "KEPT RUNNING",
                "MEMORY INTACT",
            ],
            result.combinations.map { c in
                let tls = c.tls ? "on" : "off"
                if c.skipped != nil { return ["\(c.memoryMiB)MiB", "\(c.dirtyMiB)MiB", tls, "skipped"] }
                return [
                    "\(c.memoryMiB)MiB", "\(c.dirtyMiB)MiB", tls, "\(c.completed)/\(c.runs.count)", triple(c.totalMs, "%.0f"),
                    triple(c.downtimeMs, "%.0f"), triple(c.guestDownMs, "%.0f"), triple(c.transferredMiB, "%.1f"),
                    "\(c.keptRunning)/\(c.runs.count)",
                    c.dirtyMiB == 0 ? "-" : "\(c.memoryIntact)/\(c.memoryChecked)",
                ]
            })
        for c in result.combinations {
            let tls = c.tls ? " tls" : ""
            if let skipped = c.skipped { print("\(c.memoryMiB)MiB dirty \(c.dirtyMiB)MiB\(tls) skipped: \(skipped)") }
            for (i, run) in c.runs.enumerated() where run.error != nil {
                print("\(c.memoryMiB)MiB dirty \(c.dirtyMiB)MiB\(tls) run \(i + 1): \(run.error!)")
            }
        }
    }
}

/// How the source QEMU is told to migrate.
struct MigrationTuning: Sendable {
    var downtimeLimitMs: Int
    /// Bytes per second.
    var bandwidth: UInt64
    var timeout: Duration
    var throttleInitial: Int?
    var throttleIncrement: Int?
    var mode: QEMUDriver.MigrationMode = .auto
}

/// Runs the migrations: two QEMU drivers ("hosts" a and b) with their own state directories and one
/// shared disk directory, all under a temporary directory that is removed at the end.
struct MigrationBench: Sendable {
    let accelerator: Accelerator
    let image: GuestImage
    let tuning: MigrationTuning
    let runs: Int
    let dirtyRateMiBps: Int
    /// Each combination is measured once per entry: plain (false), over TLS (true).
    var tls: [Bool] = [false]
    /// Issues each TLS migration's credentials.
    var authority: MigrationAuthority?

    /// What the `web` guest's `GET /status` says.
    struct GuestStatus: Decodable {
        var uptimeSeconds: Double
        var bootId: String
        var dirtyMiB: Int?
        var dirtiedPages: UInt64?
        var lostWrites: UInt64?
    }

    func measure(memories: [Int], dirties: [Int]) async throws -> MigrationBenchResult {
        let directory = FileManager.default.temporaryDirectory.path + "/vireo-bench-migrate-\(UUID().uuidString.prefix(8))"
        let hosts = ["a", "b"].map { host(directory: directory, name: $0) }
        var result = MigrationBenchResult(
            accelerator: accelerator.rawValue, runs: runs, downtimeLimitMs: tuning.downtimeLimitMs,
            bandwidthBytesPerSecond: tuning.bandwidth, throttleInitialPercent: tuning.throttleInitial,
            throttleIncrementPercent: tuning.throttleIncrement,
            mode: tuning.mode.resolved(for: accelerator, memoryTrimmed: true).rawValue,
            dirtyRateMiBps: dirtyRateMiBps, combinations: [])
        do {
            for memory in memories {
                for dirty in dirties {
                    try Task.checkCancellation()
                    if dirty > 0, dirty >= memory - 64 {
                        let reason = "dirty \(dirty) MiB ≥ memory \(memory) MiB − 64 MiB"
                        stderr("\(memory) MiB, dirty \(dirty) MiB: skipped (\(reason))")
                        for secured in tls {
                            result.combinations.append(
                                .init(memoryMiB: memory, dirtyMiB: dirty, tls: secured, skipped: reason))
                        }
                        continue
                    }
                    for secured in tls {
                        result.combinations.append(
                            try await combination(memory: memory, dirty: dirty, tls: secured, hosts: hosts))
                    }
                }
            }
        } catch {
            await Self.discardAll(hosts)
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
        await Self.discardAll(hosts)
        try? FileManager.default.removeItem(atPath: directory)
        return result
    }

    func host(directory: String, name: String) -> QEMUDriver {
        var configuration = QEMUDriver.Configuration(
            stateDirectory: "\(directory)/\(name)", accelerator: accelerator, cpus: 2, memoryMiB: 4096)
        configuration.sharedDisks = directory + "/disks"
        configuration.migrationDowntimeLimitMs = tuning.downtimeLimitMs
        configuration.migrationBandwidth = tuning.bandwidth
        configuration.migrationTimeout = tuning.timeout
        configuration.migrationThrottleInitialPercent = tuning.throttleInitial
        configuration.migrationThrottleIncrementPercent = tuning.throttleIncrement
        configuration.migrationMode = tuning.mode
        let image = self.image
        var logger = Logger(label: "vireo.bench.\(name)")
        logger.logLevel = .warning  // the progress lines say what happens
        return QEMUDriver(configuration: configuration, logger: logger) { _ in image }
    }

    /// Boots one guest on a, starts its load, and migrates it `runs` times back and forth.
    func combination(memory: Int, dirty: Int, tls: Bool, hosts: [QEMUDriver]) async throws
        -> MigrationBenchResult.Combination
    {
        let label = "\(memory) MiB, dirty \(dirty) MiB" + (tls ? ", TLS" : "")
        let spec = InstanceSpec(
            id: .generate(), name: "bench-migrate-\(memory)-\(dirty)", image: "web", cpus: 1, memoryMiB: memory)
        var combination = MigrationBenchResult.Combination(memoryMiB: memory, dirtyMiB: dirty, tls: tls)
        var here = 0
        do {
            try await hosts[0].create(spec)
            try await hosts[0].start(spec.id)
            var address = try await Self.waitRunning(hosts[0], spec.id)
            if dirty > 0 {
                do {
                    _ = try await Self.guest(address, post: true, "/dirty?mib=\(dirty)&rate=\(dirtyRateMiBps)")
                } catch let error as VireoError where error.message.contains("HTTP 400") {
                    // The guest refuses a load it has no memory for (it keeps 16 MiB).
                    stderr("\(label): skipped (the guest refused: \(error))")
                    combination.skipped = "the guest refused to dirty \(dirty) MiB: \(error)"
                    await Self.discard(spec.id, on: hosts)
                    return combination
                }
                // One full pass, so every page of the load has been written before the first run.
                _ = try await Self.afterOnePass(
                    address, from: try await Self.status(address), pages: UInt64(dirty) * 256, within: .seconds(60))
            }
            for run in 1...runs {
                let (source, destination) = (hosts[here], hosts[1 - here])
                let direction = here == 0 ? "a→b" : "b→a"
                let before = try await Self.status(address)
                let peak = Mutex<UInt64>(0)
                var record = MigrationBenchResult.Run(direction: direction, keptRunning: false, loadKept: false)
                // Fresh credentials for every migration, as the controller issues them (issuing
                // is not timed: the controller does it when the move is requested).
                let migration = MigrationID.generate()
                let credentials =
                    try authority.map { authority in
                        tls ? try authority.issue(migration: migration, listener: .destination, address: "127.0.0.1") : nil
                    } ?? nil
                let uri = try await destination.prepareIncoming(
                    spec, guestAddress: nil, listenAddress: "127.0.0.1", storage: .shared,
                    credentials: credentials?.destination)
                do {
                    let stats = try await source.migrate(spec.id, to: uri, credentials: credentials?.source) { progress in
                        peak.withLock { $0 = max($0, progress.dirtyPagesPerSecond) }
                    }
                    record.totalMs = stats.totalTimeMs
                    record.downtimeMs = stats.downtimeMs
                    record.transferredBytes = stats.transferredBytes
                    record.setupMs = stats.setupTimeMs
                    let paused = await source.migrationInstants(spec.id).paused
                    // The source is let go only once the guest runs on the destination, which has
                    // then read the whole stream.
                    try await destination.finishIncoming(spec.id)
                    here = 1 - here
                    address = try await Self.waitRunning(destination, spec.id)
                    record.guestDownMs = Self.milliseconds(
                        from: paused, to: await destination.migrationInstants(spec.id).resumed)
                    try await source.release(spec.id)
                } catch {
                    if Task.isCancelled { throw error }
                    // A failed migration leaves the guest on the source and the destination is
                    // discarded; after a completed one the guest is on the destination.
                    if record.totalMs == nil { try? await destination.abortIncoming(spec.id) }
                    record.error = "\(error)"
                }
                let peakPages = peak.withLock { $0 }
                record.peakDirtyMiBps = peakPages > 0 ? Double(peakPages) * 4096 / 1_048_576 : nil
                let after: GuestStatus
                do {
                    after = try await Self.status(address)
                } catch {
                    if Task.isCancelled { throw error }
                    // The guest died (on either side): this run says so, and the combination ends.
                    let reason = await Self.consoleReason(spec.id, on: hosts[here])
                    record.error = [record.error, "the guest stopped answering (\(reason))"].compactMap { $0 }
                        .joined(separator: "; ")
                    combination.runs.append(record)
                    stderr(Self.describe(record, label: label, run: run))
                    await Self.report(spec.id, on: hosts, label: label)
                    break
                }
                record.keptRunning = after.bootId == before.bootId && after.uptimeSeconds > before.uptimeSeconds
                record.loadKept =
                    dirty == 0 || (after.dirtyMiB == dirty && (after.dirtiedPages ?? 0) > (before.dirtiedPages ?? 0))
                if dirty > 0, record.keptRunning, record.loadKept,
                    let checked = try? await Self.afterOnePass(
                        address, from: after, pages: UInt64(dirty) * 256, within: .seconds(30))
                {
                    // Every page has been checked on this side once the load has made a full pass.
                    record.lostWrites = (checked.lostWrites ?? 0) - (before.lostWrites ?? 0)
                }
                combination.runs.append(record)
                stderr(Self.describe(record, label: label, run: run))
            }
        } catch {
            if !Task.isCancelled { await Self.report(spec.id, on: hosts, label: label) }
            await Self.discard(spec.id, on: hosts)
            throw error
        }
        await Self.discard(spec.id, on: hosts)
        let done = combination.runs.filter { $0.totalMs != nil }
        combination.totalMs = .init(done.compactMap { $0.totalMs.map(Double.init) })
        combination.downtimeMs = .init(done.compactMap { $0.downtimeMs.map(Double.init) })
        combination.guestDownMs = .init(done.compactMap { $0.guestDownMs.map(Double.init) })
        combination.transferredMiB = .init(done.compactMap { $0.transferredBytes.map { Double($0) / 1_048_576 } })
        return combination
    }

    /// How long the guest ran nowhere: from its pause on the source to its resumption on the
    /// destination (both drivers in this process, on one clock).
    static func milliseconds(from paused: ContinuousClock.Instant?, to resumed: ContinuousClock.Instant?) -> Int? {
        guard let paused, let resumed else { return nil }
        return Int(((resumed - paused) / .milliseconds(1)).rounded())
    }

    static func describe(_ run: MigrationBenchResult.Run, label: String, run number: Int) -> String {
        var outcome =
            run.totalMs == nil
            ? "migration failed"
            : String(
                format: "total %d ms (setup %d), downtime %d ms, ", run.totalMs ?? 0, run.setupMs ?? 0, run.downtimeMs ?? 0)
                + (run.guestDownMs.map { "guest down \($0) ms, " } ?? "")
                + String(format: "%.1f MiB sent", Double(run.transferredBytes ?? 0) / 1_048_576)
        if let error = run.error { outcome += " (\(error))" }
        let peak = run.peakDirtyMiBps.map { String(format: ", peak dirty rate %.0f MiB/s", $0) } ?? ""
        let lost = run.lostWrites.map { $0 == 0 ? "; memory intact" : "; \($0) LOST WRITES" } ?? ""
        return "\(label), run \(number) (\(run.direction)): \(outcome)\(peak); guest "
            + (run.keptRunning ? "kept running" : "DID NOT keep running") + (run.loadKept ? "" : "; load NOT kept") + lost
    }

    // MARK: Guest and host helpers

    static func waitRunning(_ driver: QEMUDriver, _ id: VMID) async throws -> String {
        let deadline = ContinuousClock.now + .seconds(120)
        while ContinuousClock.now < deadline {
            if let status = try await driver.status().first(where: { $0.id == id }) {
                if status.state == .running, let address = status.address { return address }
                if status.state == .failed || status.state == .stopped {
                    throw VireoError(
                        .internal, "VM \(status.name) is \(status.state): \(status.message ?? "the guest shut down or panicked")")
                }
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw VireoError(.internal, "VM \(id) was not running within 120 s")
    }

    /// The guest's status once its load has written `pages` more pages than in `start`.
    static func afterOnePass(
        _ address: String, from start: GuestStatus, pages: UInt64, within timeout: Duration
    ) async throws -> GuestStatus {
        let deadline = ContinuousClock.now + timeout
        while true {
            let status = try await Self.status(address)
            if (status.dirtiedPages ?? 0) >= (start.dirtiedPages ?? 0) + pages { return status }
            guard ContinuousClock.now < deadline else {
                throw VireoError(.internal, "the guest at \(address) did not dirty \(pages) pages within \(timeout)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    static func status(_ address: String) async throws -> GuestStatus {
        let data = try await guest(address, post: false, "/status")
        do {
            return try JSONDecoder().decode(GuestStatus.self, from: data)
        } catch {
            throw VireoError(.internal, "unexpected /status from the guest at \(address): \(error)")
        }
    }

    /// One request to the guest's service, which answers 2xx or fails.
    static func guest(_ address: String, post: Bool, _ path: String) async throws -> Data {
        do {
            return try await VireoClient(server: "http://\(address)", timeout: .seconds(10)).raw(post ? .POST : .GET, path).1
        } catch {
            throw VireoError(.unavailable, "the guest at \(address) did not answer \(post ? "POST" : "GET") \(path): \(error)")
        }
    }

    /// The console line that explains a dead guest: a kernel panic if there is one, else the last line.
    static func consoleReason(_ id: VMID, on host: QEMUDriver) async -> String {
        let lines = ((try? await host.consoleLog(id, limit: 16384)) ?? "").split(whereSeparator: \.isNewline)
        let line = lines.last { $0.contains("Kernel panic") } ?? lines.last { $0.contains("RIP:") } ?? lines.last
        return line.map { "console: \($0.trimmingCharacters(in: .whitespaces))" } ?? "no console output"
    }

    /// What the hosts know of a VM that failed the bench: state, message, the console's last lines.
    static func report(_ id: VMID, on hosts: [QEMUDriver], label: String) async {
        for (name, host) in zip(["a", "b"], hosts) {
            guard let status = try? await host.status().first(where: { $0.id == id }) else { continue }
            let console = ((try? await host.consoleLog(id, limit: 4096)) ?? "").split(whereSeparator: \.isNewline).suffix(15)
            stderr(
                "\(label): on \(name) the VM is \(status.state)\(status.message.map { " (\($0))" } ?? ""); console:\n  "
                    + console.joined(separator: "\n  "))
        }
    }

    static func discard(_ id: VMID, on hosts: [QEMUDriver]) async {
        for host in hosts { try? await host.delete(id) }
    }

    static func discardAll(_ hosts: [QEMUDriver]) async {
        for host in hosts {
            for status in (try? await host.status()) ?? [] { try? await host.delete(status.id) }
        }
    }
}
