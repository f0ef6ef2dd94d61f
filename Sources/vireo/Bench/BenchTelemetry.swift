import ArgumentParser
import Foundation
import Hummingbird
import Synchronization
import VireoAPI
import VireoAgent
import VireoController
import VireoDriverSimulated
import VireoModel
import VireoStore
import VireoTelemetry
import VireoTelemetryStore

/// A `web` guest's metrics as its service prints them, for `count` requests so far.
func webExposition(count: UInt64) -> String {
    let bounds = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]
    var text = "# HELP vireo_web_requests_total Requests to / (the CPU-bound endpoint) served.\n"
    text += "# TYPE vireo_web_requests_total counter\nvireo_web_requests_total \(count)\n"
    text += "# HELP vireo_web_request_duration_seconds Time to serve a request to /.\n"
    text += "# TYPE vireo_web_request_duration_seconds histogram\n"
    for (i, bound) in bounds.enumerated() {
        text += "vireo_web_request_duration_seconds_bucket{le=\"\(bound)\"} \(count * UInt64(i + 1) / UInt64(bounds.count))\n"
    }
    text += "vireo_web_request_duration_seconds_bucket{le=\"+Inf\"} \(count)\n"
    text += "vireo_web_request_duration_seconds_sum \(Double(count) * 0.004)\nvireo_web_request_duration_seconds_count \(count)\n"
    text += "# HELP vireo_web_inflight_requests Requests to / being served now.\n"
    text += "# TYPE vireo_web_inflight_requests gauge\nvireo_web_inflight_requests 1\n"
    text += "# HELP vireo_web_uptime_seconds Seconds since the service started.\n"
    text += "# TYPE vireo_web_uptime_seconds gauge\nvireo_web_uptime_seconds 12.5\n"
    return text
}

let webMetricDeclarations: [MetricDeclaration] = [
    .init(name: "vireo_web_requests_total", type: .counter), .init(name: "vireo_web_request_duration_seconds", type: .histogram),
    .init(name: "vireo_web_inflight_requests", type: .gauge),
]

/// CPU time of this process (user + system), in seconds.
func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}

func seconds(_ d: Duration) -> Double { d.secondsValue }

struct BenchIngest: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ingest",
        abstract: "Ingest samples into the embedded series store (SQLite file), as scrapes arrive, and report samples/s.")
    @Option(help: "Samples to ingest.") var samples: Int = 2_000_000
    @Option(help: "VMs scraped; each scrape is 16 samples (the web guest's metrics).") var vms: Int = 1_000
    @Option(help: "Directory for telemetry.db (default: a new temporary one).") var dataDir: String?
    @OptionGroup var output: OutputOptions

    struct Result: Codable {
        var samples: Int
        var series: Int
        var seconds: Double
        var samplesPerSecond: Double
        var cpuSeconds: Double
        var storedSamples: Int
    }

    func run() async throws {
        let dir = dataDir ?? NSTemporaryDirectory() + "vireo-bench-ingest-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let store = try SeriesStore(path: dir + "/telemetry.db")
        let engine = TelemetryEngine(store: store)
        await engine.configure([ApplicationSpec(name: "bench", telemetry: TelemetrySpec(metrics: webMetricDeclarations))])
        // Pre-parse one scrape: the benchmark measures ingestion, not the parser.
        let families = try PrometheusText.parse(webExposition(count: 1000))
        let template = families.filter { $0.name != "vireo_web_uptime_seconds" }.flatMap(\.samples)
        let perScrape = template.count
        let scrapes = (samples + perScrape - 1) / perScrape
        let vmLabels = (0..<vms).map { Labels([("vm", String(format: "web-%04d", $0))]) }
        let labelled = vmLabels.map { vm in template.map { s in Labels(s.labels + vm.pairs.map { ($0.name, $0.value) }) } }
        let t0 = Date().timeIntervalSince1970
        let cpu0 = processCPUSeconds()
        let start = ContinuousClock.now
        var batch: [(name: String, labels: Labels, time: Int64, value: Double)] = []
        batch.reserveCapacity(perScrape * 64)
        for k in 0..<scrapes {
            let vm = k % vms
            let time = Int64(t0 * 1000) + Int64(k / vms) * 1_000
            for (i, s) in template.enumerated() {
                batch.append((s.name, labelled[vm][i], time, s.value + Double(k)))
            }
            // An agent's delivery carries many scrapes; 64 here.
            if batch.count >= perScrape * 64 || k == scrapes - 1 {
                try await engine.ingest(app: "bench", batch)
                batch.removeAll(keepingCapacity: true)
            }
            if k % 10_000 == 0 { stderr("ingested \(k * perScrape) samples") }
        }
        try await engine.flush()
        let elapsed = seconds(ContinuousClock.now - start)
        let cpu = processCPUSeconds() - cpu0
        let counts = try await store.counts()
        let total = scrapes * perScrape
        let result = Result(
            samples: total, series: counts.series, seconds: elapsed, samplesPerSecond: Double(total) / elapsed, cpuSeconds: cpu,
            storedSamples: counts.samples)
        if output.output == .json { return try printJSON(result) }
        print(
            "ingested \(total) samples of \(counts.series) series in \(String(format: "%.2f", elapsed)) s: "
                + "\(Int(result.samplesPerSecond)) samples/s (CPU \(String(format: "%.2f", cpu)) s); \(counts.samples) stored")
    }
}

struct BenchEvaluate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "evaluate", abstract: "Time SLO evaluation: every objective judges one window per round.")
    @Option(help: "Objectives (a quarter of each kind).") var objectives: Int = 10_000
    @Option(help: "Rounds to time.") var rounds: Int = 20
    @Flag(
        help: ArgumentHelp(
            "Every objective a PromQL one: histogram_quantile(Q, sum by (le) (rate(…_bucket[1m]))), Q 0.5, 0.9, 0.99 "
                + "and 0.999 per application."))
    var promql = false
    @OptionGroup var output: OutputOptions

    struct Result: Codable {
        var objectives: Int
        var promql: Bool
        var rounds: Int
        var samplesInMemory: Int
        var p50Ms: Double
        var p99Ms: Double
        var maxMs: Double
        var judged: Int
    }

    func run() async throws {
        let apps = objectives / 4
        let window = 10.0
        let store = try SeriesStore()
        let engine = TelemetryEngine(store: store, flushThreshold: .max, judgeDelayMs: 0)
        var specs: [ApplicationSpec] = []
        let quantiles = [0.5, 0.9, 0.99, 0.999]
        for a in 0..<apps where promql {
            specs.append(
                ApplicationSpec(
                    name: "app-\(a)", telemetry: TelemetrySpec(metrics: webMetricDeclarations),
                    objectives: quantiles.map { q in
                        Objective(
                            name: "p\(Int(q * 1000))", kind: .responseTime,
                            metric: "histogram_quantile(\(q), sum by (le) (rate(vireo_web_request_duration_seconds_bucket[1m])))",
                            target: 0.05, windowSeconds: window, language: .promql)
                    }))
        }
        for a in 0..<apps where !promql {
            specs.append(
                ApplicationSpec(
                    name: "app-\(a)", telemetry: TelemetrySpec(metrics: webMetricDeclarations),
                    objectives: [
                        Objective(
                            name: "latency", kind: .responseTime, metric: "vireo_web_request_duration_seconds", quantile: 0.99,
                            target: 0.05, windowSeconds: window),
                        Objective(
                            name: "throughput", kind: .throughput, metric: "vireo_web_requests_total", target: 10,
                            windowSeconds: window),
                        Objective(
                            name: "capacity", kind: .capacity, metric: "vireo_web_inflight_requests", target: 8,
                            windowSeconds: window),
                        Objective(
                            name: "good", kind: .ratio, metric: "vireo_web_request_duration_seconds_bucket{le=\"0.05\"}",
                            totalMetric: "vireo_web_request_duration_seconds_count", target: 0.9, windowSeconds: window),
                    ]))
        }
        await engine.configure(specs)
        let families = try PrometheusText.parse(webExposition(count: 100))
        let template = families.flatMap(\.samples)
        var ms = Int64(Date().timeIntervalSince1970 / window) * Int64(window * 1000)
        var timings: [Double] = []
        var judged = 0
        // Scrapes every 2 s; each round adds a window's worth and then judges it.
        func feed(_ count: Int) async throws {
            for _ in 0..<count {
                ms += 2_000
                for a in 0..<apps {
                    try await engine.ingest(
                        app: "app-\(a)", template.map { ($0.name, Labels($0.labels), ms, $0.value + Double(ms / 1000)) })
                }
            }
            try await engine.flush()
        }
        // A minute of samples first: what a PromQL objective's rate(…[1m]) reads.
        try await feed(promql ? 30 : 10)
        _ = await engine.evaluate(now: ms)  // starts the trackers' windows
        for round in 0..<rounds {
            try await feed(5)
            let start = ContinuousClock.now
            let changes = await engine.evaluate(now: ms)
            timings.append(seconds(ContinuousClock.now - start) * 1000)
            judged += changes.count
            stderr("round \(round + 1): \(String(format: "%.1f", timings.last!)) ms")
        }
        let status = await engine.status(app: "app-0")
        let sorted = timings.sorted()
        let result = Result(
            objectives: apps * 4, promql: promql, rounds: rounds, samplesInMemory: (status?.current.count ?? 0) * apps,
            p50Ms: sorted[sorted.count / 2], p99Ms: sorted[min(sorted.count - 1, Int(Double(sorted.count) * 0.99))],
            maxMs: sorted.last ?? 0, judged: status?.objectives.reduce(0) { $0 + $1.goodWindows + $1.badWindows } ?? 0)
        if output.output == .json { return try printJSON(result) }
        print(
            "evaluated \(result.objectives)\(promql ? " PromQL" : "") objectives, one window each, \(rounds) rounds: p50 \(String(format: "%.1f", result.p50Ms)) ms, "
                + "p99 \(String(format: "%.1f", result.p99Ms)) ms, max \(String(format: "%.1f", result.maxMs)) ms")
    }
}

struct BenchScrape: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scrape",
        abstract:
            "Scrape many targets with the agent's collector and take the results in as the controller does; report the CPU used.",
        discussion: """
            The targets are served by a separate process (`vireo bench metrics-server`, started here) on loopback, so \
            its CPU is not counted. Counted: the agent's scraping (HTTP, one task per target), the controller's parsing, \
            SLO bookkeeping in memory and writing every sample to the SQLite series store.
            """)
    @Option(help: "Targets (VMs) to scrape.") var targets: Int = 1_000
    @Option(help: "Scrape interval in seconds.") var interval: Double = 5
    @Option(help: "How long to measure, in seconds.") var duration: Double = 30
    @OptionGroup var output: OutputOptions

    struct Result: Codable {
        var targets: Int
        var intervalSeconds: Double
        var seconds: Double
        var scrapes: Int
        var failedScrapes: Int
        var samples: Int
        var cpuSeconds: Double
        var cores: Double
    }

    func run() async throws {
        let server = Process()
        server.executableURL = URL(fileURLWithPath: CommandLine.arguments[0])
        server.arguments = ["bench", "metrics-server"]
        let pipe = Pipe()
        server.standardOutput = pipe
        try server.run()
        defer { server.terminate() }
        guard let line = String(data: pipe.fileHandleForReading.availableDataLine(), encoding: .utf8),
            let port = Int(line.trimmingCharacters(in: .whitespacesAndNewlines))
        else { throw VireoError(.internal, "metrics server did not say its port") }

        let store = try SQLiteStore()
        let dir = NSTemporaryDirectory() + "vireo-bench-scrape-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let controller = try await Controller.open(
            store: store, telemetry: TelemetryEngine(store: SeriesStore(path: dir + "/telemetry.db")))
        let telemetry = TelemetrySpec(
            scrape: ScrapeTarget(port: 80, path: "/metrics", intervalSeconds: interval, timeoutSeconds: min(2, interval)),
            metrics: webMetricDeclarations)
        let vmSpecs = (0..<targets).map {
            VMSpec(name: String(format: "web-%04d", $0), image: "tiny", cpus: 1, memoryMiB: 128, app: "bench")
        }
        _ = try await controller.apply([.application(ApplicationSpec(name: "bench", vms: vmSpecs, telemetry: telemetry))])
        let host = try await controller.register(
            AgentRegistration(
                name: "bench", fingerprint: HostFingerprint(cpus: 1, memoryMiB: 1, driver: "simulated", capabilities: [])))

        let harness = CollectorHarness(driver: SimulatedDriver())
        let cpu0 = processCPUSeconds()
        let start = ContinuousClock.now
        await harness.start(
            vmSpecs.map { .init(id: .generate(), vm: $0.name, app: "bench", telemetry: telemetry, address: "127.0.0.1:\(port)") })
        var scrapes = 0
        var failed = 0
        var samples = 0
        while ContinuousClock.now - start < .seconds(duration) {
            try await Task.sleep(for: .seconds(1))
            let items = await harness.drain()
            scrapes += items.count
            failed += items.filter { $0.error != nil }.count
            samples += try await controller.ingest(AgentSamples(hostID: host.hostID, items: items)).accepted
            await controller.evaluateSLOs()
            try await controller.telemetry.flush()
            stderr("\(Int(seconds(ContinuousClock.now - start))) s: \(scrapes) scrapes, \(failed) failed, \(samples) samples")
        }
        let elapsed = seconds(ContinuousClock.now - start)
        let cpu = processCPUSeconds() - cpu0
        await harness.stop()
        let result = Result(
            targets: targets, intervalSeconds: interval, seconds: elapsed, scrapes: scrapes, failedScrapes: failed,
            samples: samples,
            cpuSeconds: cpu, cores: cpu / elapsed)
        if output.output == .json { return try printJSON(result) }
        print(
            "\(targets) targets every \(interval) s for \(String(format: "%.1f", elapsed)) s: \(scrapes) scrapes (\(failed) failed), "
                + "\(samples) samples; CPU \(String(format: "%.2f", cpu)) s = \(String(format: "%.3f", result.cores)) cores")
    }
}

struct BenchMetricsServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "metrics-server", abstract: "Serve a web guest's /metrics on loopback (the targets of `bench scrape`).",
        shouldDisplay: false)

    func run() async throws {
        let count = Mutex<UInt64>(0)
        let router = Router()
        router.get("/metrics") { _, _ in
            let n = count.withLock { c in
                c += 7
                return c
            }
            return webExposition(count: n)
        }
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in
                print(channel.localAddress?.port ?? 0)
                fflush(nil)
            })
        try await app.runService()
    }
}

extension FileHandle {
    /// Reads up to the first newline.
    func availableDataLine() -> Data {
        var data = Data()
        while true {
            let byte = readData(ofLength: 1)
            if byte.isEmpty || byte == Data([0x0A]) { return data }
            data.append(byte)
        }
    }
}
