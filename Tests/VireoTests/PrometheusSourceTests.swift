import AsyncHTTPClient
import Foundation
import Testing
import VireoAPI
import VireoDriver
import VireoModel
import VireoProcess

@testable import VireoController
@testable import VireoTelemetry

/// An application whose indicators come from an existing Prometheus server
/// (`telemetry.source.prometheus`) instead of Vireo's own scrapes.
@Suite("Prometheus as the telemetry source")
struct PrometheusSourceTests {
    /// The objectives of both twins: one of each kind, on 10-second windows.
    static let objectives = """
          objectives:
            - { name: latency, sli: http_request_duration_seconds, quantile: 0.9, target: 0.05, window: 10s }
            - { name: throughput, sli: http_requests_total, min: 5, window: 10s }
            - { name: capacity, sli: queue_depth, max: 100, window: 10s }
            - { name: good, good: 'http_requests_total{code="200"}', total: http_requests_total, min: 0.9, window: 10s }
        """

    static func manifest(_ name: String, telemetry: String, extra: String = "") -> String {
        """
        apiVersion: vireo/v1
        kind: Application
        metadata: { name: \(name) }
        spec:
          telemetry:
            \(telemetry)
            metrics:
              - { name: http_request_duration_seconds, type: histogram }
              - { name: http_requests_total, type: counter }
              - { name: queue_depth, type: gauge }
        \(objectives)
        \(extra)
        """
    }

    static func application(_ text: String) throws -> ApplicationSpec {
        try #require(ManifestParser.parse(text).compactMap { if case .application(let a) = $0 { a } else { nil } }.first)
    }

    @Test("the source is read from the manifest; PromQL beyond Vireo's own is taken only with it, its kind from its form")
    func manifest() throws {
        let source = "source: { prometheus: { url: 'http://127.0.0.1:9090', timeout: 2s } }"
        let extra = """
                - { name: peak, sli: 'max(max_over_time(queue_depth[10s]))', max: 100, window: 10s }
                - { name: slow, sli: 'histogram_quantile(0.9, sum by (le) (rate(x_bucket[1m] offset 1m)))', max: 0.1 }
                - { name: share, sli: 'sum(rate(a_total{code=~"2.."}[1m])) / on() sum(rate(a_total[1m]))', min: 0.9 }
                - { name: served, sli: 'sum(irate(a_total[1m]) or vector(0))', min: 1 }
            """
        let app = try Self.application(Self.manifest("shop", telemetry: source, extra: extra))
        #expect(
            app.telemetry.source == TelemetrySource(prometheus: PrometheusServer(url: "http://127.0.0.1:9090", timeoutSeconds: 2))
        )
        #expect(
            app.objectives.map(\.kind) == [
                .responseTime, .throughput, .capacity, .ratio, .capacity, .responseTime, .ratio, .throughput,
            ])
        #expect(app.objectives[4...].allSatisfy { $0.language == .promql })
        // Selector objectives become the PromQL of what Vireo computes itself.
        let queries = try app.objectives.prefix(4).map {
            try #require(ObjectiveTracker($0, source: app.telemetry.source).prometheusQuery)
        }
        #expect(
            queries == [
                "histogram_quantile(0.9, sum by (le) (increase(http_request_duration_seconds_bucket[10000ms])))",
                "sum(rate(http_requests_total[10000ms]))", "max(max_over_time(queue_depth[10000ms]))",
                #"clamp_max(sum(increase(http_requests_total{code="200"}[10000ms])) / sum(increase(http_requests_total[10000ms])), 1)"#,
            ])
        #expect(
            try ObjectiveTracker(app.objectives[4], source: app.telemetry.source).prometheusQuery
                == "max(max_over_time(queue_depth[10s]))")

        // Without the source, what Vireo cannot evaluate itself is refused, naming the field.
        let scraped = "scrape: { port: 80 }"
        let error = #expect(throws: VireoError.self) {
            try ManifestParser.parse(Self.manifest("shop", telemetry: scraped, extra: extra))
        }
        #expect(
            error?.message.contains("spec.objectives[4].sli") == true && error?.message.contains("max_over_time") == true,
            "\(String(describing: error))")
    }

    static let invalid: [(telemetry: String, mentions: [String])] = [
        ("source: { prometheus: { url: 'ftp://127.0.0.1:9090' } }", ["spec.telemetry.source.prometheus.url", "ftp://"]),
        ("source: { prometheus: { url: 'http://' } }", ["spec.telemetry.source.prometheus.url", "http://"]),
        ("source: { prometheus: { url: 'http://h:9090/?x=1' } }", ["spec.telemetry.source.prometheus.url", "no query"]),
        ("source: { prometheus: { url: 'http://h:9090', timeout: 2m } }", ["spec.telemetry.source.prometheus.timeout", "2m"]),
        ("source: { prometheus: { address: 'http://h:9090' } }", ["spec.telemetry.source.prometheus.address"]),
        ("source: { graphite: { url: 'http://h' } }", ["spec.telemetry.source.graphite"]),
        ("source: {}", ["spec.telemetry.source.prometheus", "required"]),
        (
            "scrape: { port: 80 }\n    source: { prometheus: { url: 'http://h:9090' } }",
            ["spec.telemetry.scrape", "source"]
        ),
    ]

    @Test("a bad source is refused, naming the field and the value", arguments: invalid)
    func rejects(telemetry: String, mentions: [String]) {
        do {
            _ = try ManifestParser.parse(Self.manifest("shop", telemetry: telemetry))
            Issue.record("accepted: \(telemetry)")
        } catch {
            #expect(error.code == .invalidArgument)
            for word in mentions { #expect(error.message.contains(word), "\(error.message)") }
        }
    }

    @Test(
        "Prometheus with the same samples judges every window as Vireo does; its refusals and absence are the app's error",
        .enabled(
            if: FileManager.default.isExecutableFile(atPath: "/usr/bin/prometheus")
                && FileManager.default.isExecutableFile(atPath: "/usr/bin/promtool"),
            "needs prometheus and promtool (Debian's prometheus package; scripts/install-deps.sh installs it)"))
    func judgedAlike() async throws {
        let dir = temporaryDirectory()
        // A day ago, on a minute: Prometheus keeps the samples as history.
        let start = (Int64(Date().timeIntervalSince1970) / 60 - 24 * 60) * 60_000
        let clock = ManualClock(Date(timeIntervalSince1970: Double(start) / 1000))
        let steps = 130
        // One scrape a second, half a second after each second: 20 requests, slow (200 ms) from 40 s
        // to 70 s; a quarter failing from 20 s to 30 s; none from 100 s to 110 s; the queue at 150
        // once, at 85 s.
        var expositions: [String] = []
        var counts = HistogramCounts()
        for step in 0..<steps {
            let requests = (100..<110).contains(step) ? 0 : 20
            counts.observe(requests, latency: (40..<70).contains(step) ? 0.2 : 0.02, failed: (20..<30).contains(step) ? 5 : 0)
            expositions.append(counts.exposition(queue: step == 85 ? 150 : 3, at: start + Int64(step) * 1_000 + 500))
        }
        // The same samples, as history, into a Prometheus server of the test's own on loopback.
        var openMetrics: [(key: String, line: String)] = []
        for text in expositions {
            for family in try PrometheusText.parse(text) {
                for s in family.samples {
                    let series = s.name + Labels(s.labels).description
                    openMetrics.append((series, "\(series) \(s.value) \(Double(s.timestampMs!) / 1000)"))
                }
            }
        }
        // Each series' samples together, in time order (OpenMetrics wants a family's lines together).
        let lines = openMetrics.enumerated().sorted { ($0.element.key, $0.offset) < ($1.element.key, $1.offset) }.map(
            \.element.line)
        try (lines.joined(separator: "\n") + "\n# EOF\n").write(toFile: dir + "/history.om", atomically: true, encoding: .utf8)
        _ = try await HostTool.run("promtool", ["tsdb", "create-blocks-from", "openmetrics", dir + "/history.om", dir + "/data"])
        let prometheus = try await TestPrometheus.start(dir: dir, config: "global: { scrape_interval: 15s }\n")
        try await prometheus.daemon.running {

            let plane = try await TestControlPlane.make(now: { clock.now })
            let url = prometheus.url
            let peak = "    - { name: peak, sli: 'max(max_over_time(queue_depth[10s]))', max: 100, window: 10s }"
            let documents =
                Self.manifest("native", telemetry: "scrape: { port: 80 }") + "\n---\n"
                + Self.manifest("prom", telemetry: "source: { prometheus: { url: '\(url)' } }", extra: peak) + "\n---\n"
                + Self.manifest(
                    "refused", telemetry: "source: { prometheus: { url: '\(url)' } }",
                    extra: "    - { name: odd, sli: 'max(no_such_function(queue_depth))', max: 100, window: 10s }") + "\n---\n"
                + Self.manifest(
                    "away", telemetry: "source: { prometheus: { url: 'http://127.0.0.1:\(try LoopbackPort.free())' } }")
            let parsed = try ManifestParser.parse(documents)
            let specs = Dictionary(
                uniqueKeysWithValues: parsed.compactMap { if case .application(let a) = $0 { (a.name, a) } else { nil } })
            _ = try await plane.controller.apply(parsed)
            for text in expositions {
                _ = try await plane.controller.ingest(app: "native", exposition: text, at: clock.now)
                clock.advance(1)
                await plane.controller.evaluateSLOs()
                await plane.controller.sourcesAnswered()
            }
            try await plane.controller.telemetry.flush()

            var compared = 0
            for (objective, twin) in [
                ("latency", "latency"), ("throughput", "throughput"), ("capacity", "capacity"), ("good", "good"),
                ("capacity", "peak"),
            ] {
                let spec = try #require(specs["native"]?.objective(named: objective))
                let native = try await verdicts(plane, "native", spec)
                let prom = try await verdicts(plane, "prom", try #require(specs["prom"]?.objective(named: twin)))
                #expect(native.count >= 10, "\(objective): \(native.count) windows")
                #expect(native.map(\.end) == prom.map(\.end), "\(twin): the same windows")
                for (a, b) in zip(native, prom) {
                    let same =
                        a.sli.flatMap { x in b.sli.map { y in abs(x - y) <= 1e-9 * max(1, abs(x)) } }
                        ?? (a.sli == nil && b.sli == nil)
                    #expect(
                        same,
                        "\(twin) window ending \(a.end - start) ms: Vireo \(String(describing: a.sli)), Prometheus \(String(describing: b.sli))"
                    )
                    compared += 1
                }
                // Each objective has both good and bad windows: the comparison says something.
                let bad = native.filter { $0.sli.map { !Indicator.isGood(spec, $0) } ?? false }
                #expect(!bad.isEmpty && bad.count < native.count, "\(objective): \(bad.count) bad of \(native.count)")
            }
            print("Prometheus and Vireo compared on \(compared) windows")

            let refused = try #require(await plane.controller.telemetry.status(app: "refused"))
            #expect(
                refused.lastError?.contains("odd: Prometheus at \(url) refused") == true,
                "\(String(describing: refused.lastError))")
            #expect(refused.lastError?.contains("no_such_function") == true)
            // The other objectives of that application are judged all the same.
            #expect(refused.objectives.first { $0.name == "latency" }.map { $0.goodWindows + $0.badWindows } ?? 0 >= 10)
            let away = try #require(await plane.controller.telemetry.status(app: "away"))
            #expect(away.lastError?.contains("cannot ask Prometheus") == true, "\(String(describing: away.lastError))")
            #expect(away.objectives.allSatisfy { $0.goodWindows + $0.badWindows == 0 })
        }
    }

    func verdicts(_ plane: TestControlPlane, _ app: String, _ objective: Objective) async throws -> [WindowVerdict] {
        try await plane.controller.telemetry.store.verdicts(
            app: app, objective: objective.name, fingerprint: ObjectiveTracker.fingerprint(of: objective), since: 0)
    }
}

/// A histogram's cumulative buckets and a request counter, as a service would export them.
struct HistogramCounts {
    static let bounds = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]
    var buckets = [Int](repeating: 0, count: bounds.count)
    var count = 0
    var failed = 0

    mutating func observe(_ requests: Int, latency: Double, failed: Int) {
        for (i, bound) in Self.bounds.enumerated() where latency <= bound { buckets[i] += requests }
        count += requests
        self.failed += failed
    }

    func exposition(queue: Double, at ms: Int64) -> String {
        var text = "# TYPE http_request_duration_seconds histogram\n"
        for (bound, n) in zip(Self.bounds, buckets) {
            text += "http_request_duration_seconds_bucket{le=\"\(bound)\"} \(n) \(ms)\n"
        }
        text += "http_request_duration_seconds_bucket{le=\"+Inf\"} \(count) \(ms)\n"
        text += "http_request_duration_seconds_count \(count) \(ms)\n"
        text += "# TYPE http_requests_total counter\nhttp_requests_total{code=\"200\"} \(count - failed) \(ms)\n"
        text += "http_requests_total{code=\"500\"} \(failed) \(ms)\n"
        text += "# TYPE queue_depth gauge\nqueue_depth \(queue) \(ms)\n"
        return text
    }
}

/// Debian's Prometheus server, on a loopback port of its own, with its data under `dir`.
struct TestPrometheus {
    let daemon: Daemons
    let url: String

    static func start(dir: String, config: String) async throws -> TestPrometheus {
        try config.write(toFile: dir + "/prometheus.yml", atomically: true, encoding: .utf8)
        let port = try LoopbackPort.free()
        let daemon = Daemons(dir: dir)
        try daemon.start(
            "/usr/bin/prometheus",
            ["--config.file=\(dir)/prometheus.yml", "--storage.tsdb.path=\(dir)/data", "--web.listen-address=127.0.0.1:\(port)"])
        let prometheus = TestPrometheus(daemon: daemon, url: "http://127.0.0.1:\(port)")
        do {
            try await eventually("Prometheus ready on port \(port) (log: \(dir)/prometheus-0.log)", within: 30) {
                let response = try? await HTTPClient.shared.execute(
                    HTTPClientRequest(url: prometheus.url + "/-/ready"), timeout: .seconds(2))
                return response?.status == .ok
            }
        } catch {
            await prometheus.stop()
            throw error
        }
        return prometheus
    }

    func stop() async { await daemon.stop() }
}
