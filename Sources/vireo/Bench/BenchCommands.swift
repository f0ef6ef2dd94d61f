import ArgumentParser
import Foundation
import VireoAPI
import VireoClient
import VireoModel

struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract:
            "Measure Vireo: the API, VM boot, live migration, telemetry, contexts, the web console, control-plane scale (results go to docs/benchmarks.md).",
        subcommands: [
            BenchCreate.self, BenchBoot.self, BenchMigrate.self, BenchCopyStorage.self, BenchIngest.self, BenchEvaluate.self,
            BenchScrape.self,
            BenchMetricsServer.self, BenchContext.self, BenchConsole.self, BenchCluster.self, BenchFailover.self,
            BenchStandby.self,
        ])
}

/// Result of `vireo bench create`.
struct CreateBenchResult: Codable {
    var requested: Int
    var created: Int
    var failed: [String: Int]
    var concurrency: Int
    var seconds: Double
    var createsPerSecond: Double
    var latencyP50Ms: Double
    var latencyP99Ms: Double
    var latencyMaxMs: Double
    /// VMs found afterwards with the names that were created (must equal `created`).
    var verified: Int
}

struct BenchCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Create many VMs through the API as fast as it takes them, then check that none was lost.")

    @Option(help: "How many VMs to create.") var count: Int = 10_000
    @Option(help: "Requests in flight at once.") var concurrency: Int = 16
    @Option(help: "Name prefix; names are PREFIX-00000 and up.") var prefix: String = "bench"
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard count > 0 else { throw ValidationError("--count must be positive (got \(count))") }
        guard (1...1024).contains(concurrency) else {
            throw ValidationError("--concurrency must be 1...1024 (got \(concurrency))")
        }
    }

    func run() async throws {
        let api = client.client()
        let names = (0..<count).map { String(format: "%@-%05d", prefix, $0) }
        let start = ContinuousClock.now
        let next = NextIndex()
        let results = try await withThrowingTaskGroup(of: [(Double, String?)].self) { group in
            for _ in 0..<concurrency {
                group.addTask {
                    var local: [(Double, String?)] = []
                    while let i = await next.take(below: names.count) {
                        let t0 = ContinuousClock.now
                        var failure: String?
                        do {
                            _ = try await api.createVM([
                                "name": .string(names[i]), "image": .string("tiny"), "memory": .string("80MiB"),
                            ])
                        } catch let error as VireoError {
                            failure = error.code.rawValue
                        }
                        local.append(((ContinuousClock.now - t0).secondsValue * 1000, failure))
                        if i % 1000 == 999 { stderr("created \(i + 1)/\(names.count)") }
                    }
                    return local
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        let seconds = (ContinuousClock.now - start).secondsValue
        let latencies = results.map(\.0).sorted()
        var failed: [String: Int] = [:]
        for case (_, let code?) in results { failed[code, default: 0] += 1 }
        let created = results.count - failed.values.reduce(0, +)
        let present = Set(try await api.allVMs().map(\.name))
        let result = CreateBenchResult(
            requested: count, created: created, failed: failed, concurrency: concurrency, seconds: seconds,
            createsPerSecond: Double(created) / seconds, latencyP50Ms: percentile(latencies, 0.5),
            latencyP99Ms: percentile(latencies, 0.99),
            latencyMaxMs: latencies.last ?? 0, verified: names.filter(present.contains).count)
        if output.output == .json { return try printJSON(result) }
        print(
            String(
                format:
                    "created %d of %d in %.2f s: %.0f creates/s (concurrency %d); latency p50 %.2f ms, p99 %.2f ms, max %.2f ms; %d found afterwards",
                created, count, seconds, result.createsPerSecond, concurrency, result.latencyP50Ms, result.latencyP99Ms,
                result.latencyMaxMs, result.verified))
        if !failed.isEmpty { print("failures: \(failed)") }
        if result.verified != created { throw VireoError(.internal, "lost \(created - result.verified) VMs") }
    }
}

/// The value at fraction `p` of `sorted` (ascending; 0 when empty).
func percentile(_ sorted: [Double], _ p: Double) -> Double {
    sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
}

/// Returns once `condition` holds, asking every `pause`; throws naming `what` after `seconds`.
func benchWait(
    _ what: String, within seconds: Double, every pause: Duration = .milliseconds(50),
    _ condition: () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while try await !condition() {
        guard ContinuousClock.now < deadline else { throw VireoError(.unavailable, "\(what): not within \(seconds) s") }
        try await Task.sleep(for: pause)
    }
}

/// Hands out indexes to the workers, once each.
actor NextIndex {
    private var value = 0
    func take(below limit: Int) -> Int? {
        guard value < limit else { return nil }
        defer { value += 1 }
        return value
    }
}

/// Runs `work` in a task that Ctrl-C or SIGTERM cancel, so that its own cleanup still runs
/// (deleting its VMs, stopping its private PostgreSQL server: `pg_ctl` puts the server in a
/// session of its own, out of reach of the terminal's Ctrl-C).
func cancellableBySignals<T: Sendable>(_ work: @escaping @Sendable () async throws -> T) async throws -> T {
    let task = Task { try await work() }
    let sources = [SIGINT, SIGTERM].map { number in
        signal(number, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: number)
        source.setEventHandler { task.cancel() }
        source.resume()
        return source
    }
    defer { for source in sources { source.cancel() } }
    do {
        return try await task.value
    } catch is CancellationError where task.isCancelled {
        stderr("interrupted")
        throw ExitCode(130)
    }
}

/// Runs `cleanup` to its end even when the current task was cancelled (a Ctrl-C): a cancelled
/// task's child processes would be stopped before they finished.
/// Runs `work` with a private PostgreSQL server (Debian's postgresql) in a fresh temporary
/// directory `vireo-bench-<name>-<pid>`, given the directory and the database's URL; Ctrl-C or
/// SIGTERM stop it. Whatever happens the server is stopped and the directory removed, after
/// `finally` (which stops what `work` started).
func withPrivatePostgres<T: Sendable>(
    _ name: String, finally: @escaping @Sendable () -> Void = {},
    _ work: @escaping @Sendable (_ directory: String, _ url: String) async throws -> T
) async throws -> T {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vireo-bench-\(name)-\(getpid())").path
    try? FileManager.default.removeItem(atPath: directory)
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let database = try await BenchCluster.database("postgres", in: directory)
    let result: T
    do {
        result = try await cancellableBySignals { try await work(directory, database.url!) }
    } catch {
        finally()
        await uncancelled { try? await database.server?.stop() }
        throw error
    }
    finally()
    try await database.server?.stop()
    return result
}

func uncancelled(_ cleanup: @escaping @Sendable () async -> Void) async {
    await Task.detached { await cleanup() }.value
}
