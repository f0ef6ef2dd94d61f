import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import VireoAPI
import VireoDriver
import VireoModel

/// Reads the applications' signals on this host: scrapes each VM's metrics endpoint, probes its
/// HTTP service from outside the guest (latency and success as a client sees them), and reads
/// the hypervisor process's CPU time and memory, on the intervals the application's manifest
/// gives. What it gathers goes to the controller in batches, about once a second.
///
/// Everything here talks to guests through this host's network (a forwarded loopback port or
/// the guest's address on the host's bridge), never anywhere else.
actor TelemetryCollector {
    struct Target: Sendable, Equatable {
        var id: VMID
        var vm: String
        var app: String
        var telemetry: TelemetrySpec
        var address: String
    }

    /// Upper bounds of the probe latency histogram, in seconds.
    static let probeBuckets: [Double] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
    /// Items kept for the controller while it is unreachable; the oldest go first beyond this.
    static let outboxLimit = 10_000

    private let driver: any HypervisorDriver
    private let logger: Logger
    private let http: HTTPClient
    private var running: [VMID: (target: Target, task: Task<Void, Never>)] = [:]
    private var outbox: [AgentSamples.Item] = []
    private var probes: [VMID: ProbeHistogram] = [:]

    init(driver: any HypervisorDriver, logger: Logger) {
        self.driver = driver
        self.logger = logger
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.connectionPool = .init(idleTimeout: .seconds(30), concurrentHTTP1ConnectionsPerHostSoftLimit: 2)
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    /// Follows exactly `targets`: starts loops for new ones, restarts changed ones, stops the rest.
    func update(_ targets: [Target]) {
        let wanted = Dictionary(targets.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        for (id, entry) in running where wanted[id] != entry.target {
            entry.task.cancel()
            running[id] = nil
            if wanted[id] == nil { probes[id] = nil }
        }
        for (id, target) in wanted where running[id] == nil {
            let task = Task { await self.collect(target) }
            running[id] = (target, task)
        }
    }

    /// Takes what has been gathered since the last call.
    func drain() -> [AgentSamples.Item] {
        defer { outbox.removeAll(keepingCapacity: true) }
        return outbox
    }

    /// Puts back items the controller did not take (it was unreachable), newest kept.
    func requeue(_ items: [AgentSamples.Item]) {
        outbox = items + outbox
        if outbox.count > Self.outboxLimit { outbox.removeFirst(outbox.count - Self.outboxLimit) }
    }

    func shutdown() async {
        for entry in running.values { entry.task.cancel() }
        running = [:]
        try? await http.shutdown()
    }

    private func collect(_ target: Target) async {
        let scrape = target.telemetry.scrape
        let probe = target.telemetry.probe
        let interval = min(scrape?.intervalSeconds ?? .infinity, probe?.intervalSeconds ?? .infinity)
        guard interval.isFinite else { return }
        var nextScrape = ContinuousClock.now
        var nextProbe = ContinuousClock.now
        while !Task.isCancelled {
            let now = ContinuousClock.now
            if let scrape, now >= nextScrape {
                nextScrape = now + .milliseconds(Int64(scrape.intervalSeconds * 1000))
                await self.scrape(target, scrape)
            }
            if let probe, now >= nextProbe {
                nextProbe = now + .milliseconds(Int64(probe.intervalSeconds * 1000))
                await self.probe(target, probe)
            }
            let next = min(scrape == nil ? .now + .seconds(3600) : nextScrape, probe == nil ? .now + .seconds(3600) : nextProbe)
            try? await Task.sleep(until: next, clock: .continuous)
        }
    }

    static func url(_ address: String, port: Int, path: String) throws -> String {
        // A forwarded loopback port (user networking) reaches the guest's port 80 only.
        if address.contains(":") {
            guard port == 80 else {
                throw VireoError(
                    .unsupported, "port \(port) is not forwarded to the guest (user networking forwards port 80 only)")
            }
            return "http://\(address)\(path)"
        }
        return "http://\(address):\(port)\(path)"
    }

    private func scrape(_ target: Target, _ scrape: ScrapeTarget) async {
        let time = Date()
        var usage = ""
        if let u = await driver.usage(target.id) {
            usage =
                "# TYPE \(MetricCatalogue.vmCPUSeconds) counter\n\(MetricCatalogue.vmCPUSeconds) \(u.cpuSeconds)\n"
                + "# TYPE \(MetricCatalogue.vmMemoryBytes) gauge\n\(MetricCatalogue.vmMemoryBytes) \(u.memoryBytes)\n"
        }
        do {
            let url = try Self.url(target.address, port: scrape.port, path: scrape.path)
            let (status, body, _) = try await get(url, timeout: scrape.timeoutSeconds)
            guard status == 200 else { throw VireoError(.unavailable, "HTTP \(status) from \(url)") }
            append(AgentSamples.Item(app: target.app, vm: target.vm, time: time, exposition: body + "\n" + usage))
        } catch {
            append(
                AgentSamples.Item(
                    app: target.app, vm: target.vm, time: time, exposition: usage, error: "scrape: \(describe(error))"))
        }
    }

    private func probe(_ target: Target, _ probe: ProbeTarget) async {
        let time = Date()
        var histogram = probes[target.id] ?? ProbeHistogram(bounds: Self.probeBuckets)
        var failure: String?
        do {
            let url = try Self.url(target.address, port: probe.port, path: probe.path)
            let (status, _, seconds) = try await get(url, timeout: probe.timeoutSeconds)
            let ok = (200..<300).contains(status)
            histogram.observe(seconds, success: ok)
            if !ok { failure = "probe: HTTP \(status) from \(url)" }
        } catch {
            // A probe that timed out took at least its timeout: it counts as that slow, and failed.
            histogram.observe(probe.timeoutSeconds, success: false)
            failure = "probe: \(describe(error))"
        }
        probes[target.id] = histogram
        append(AgentSamples.Item(app: target.app, vm: target.vm, time: time, exposition: histogram.exposition(), error: failure))
    }

    private func append(_ item: AgentSamples.Item) {
        outbox.append(item)
        if outbox.count > Self.outboxLimit { outbox.removeFirst(outbox.count - Self.outboxLimit) }
    }

    /// GET with a deadline; returns the status, the body (up to 1 MiB) and the seconds it took.
    private func get(_ url: String, timeout: Double) async throws -> (Int, String, Double) {
        let start = ContinuousClock.now
        var request = HTTPClientRequest(url: url)
        request.method = .GET
        let response = try await http.execute(request, timeout: .milliseconds(Int64(timeout * 1000)))
        let body = try await response.body.collect(upTo: 1 << 20)
        let elapsed = ContinuousClock.now - start
        let seconds = elapsed.secondsValue
        return (Int(response.status.code), String(buffer: body), seconds)
    }

    private func describe(_ error: any Error) -> String {
        if let error = error as? VireoError { return error.message }
        if let error = error as? HTTPClientError, error == .deadlineExceeded { return "timed out" }
        return String(describing: error)
    }
}

/// The agent's own latency histogram of its probes to one VM, cumulative like a Prometheus
/// histogram, plus counts of probes and of successful ones.
struct ProbeHistogram: Sendable, Equatable {
    let bounds: [Double]
    var counts: [UInt64]
    var sum = 0.0
    var total: UInt64 = 0
    var successes: UInt64 = 0

    init(bounds: [Double]) {
        self.bounds = bounds
        counts = Array(repeating: 0, count: bounds.count + 1)
    }

    mutating func observe(_ seconds: Double, success: Bool) {
        let i = bounds.firstIndex { seconds <= $0 } ?? bounds.count
        counts[i] += 1
        sum += seconds
        total += 1
        if success { successes += 1 }
    }

    func exposition() -> String {
        let name = MetricCatalogue.probeDuration
        var text = "# TYPE \(name) histogram\n"
        var cumulative: UInt64 = 0
        for (i, bound) in bounds.enumerated() {
            cumulative += counts[i]
            text += "\(name)_bucket{le=\"\(bound)\"} \(cumulative)\n"
        }
        text += "\(name)_bucket{le=\"+Inf\"} \(total)\n\(name)_sum \(sum)\n\(name)_count \(total)\n"
        text += "# TYPE \(MetricCatalogue.probeTotal) counter\n\(MetricCatalogue.probeTotal) \(total)\n"
        text += "# TYPE \(MetricCatalogue.probeSuccess) counter\n\(MetricCatalogue.probeSuccess) \(successes)\n"
        return text
    }
}

/// The agent's collector on its own, pointed at given targets: `vireo bench scrape` measures what
/// scraping costs with it.
public final class CollectorHarness: Sendable {
    public struct Target: Sendable {
        public var id: VMID
        public var vm: String
        public var app: String
        public var telemetry: TelemetrySpec
        public var address: String
        public init(id: VMID, vm: String, app: String, telemetry: TelemetrySpec, address: String) {
            self.id = id
            self.vm = vm
            self.app = app
            self.telemetry = telemetry
            self.address = address
        }
    }

    let collector: TelemetryCollector

    public init(driver: any HypervisorDriver) {
        collector = TelemetryCollector(driver: driver, logger: Logger(label: "vireo.bench"))
    }

    public func start(_ targets: [Target]) async {
        await collector.update(
            targets.map { .init(id: $0.id, vm: $0.vm, app: $0.app, telemetry: $0.telemetry, address: $0.address) })
    }

    public func drain() async -> [AgentSamples.Item] { await collector.drain() }

    public func stop() async { await collector.shutdown() }
}
