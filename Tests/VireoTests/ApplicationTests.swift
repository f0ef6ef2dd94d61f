import Foundation
import Testing
import VireoAPI
import VireoController
import VireoModel
import VireoStore
import VireoTelemetry
import VireoTelemetryStore

/// An application with one objective of each kind, on 10-second windows.
let shopManifest = """
    apiVersion: vireo/v1
    kind: Application
    metadata: { name: shop }
    spec:
      vms: [{ name: shop-1, image: tiny, cpus: 1, memory: 128MiB }]
      telemetry:
        scrape: { port: 80, path: /metrics, interval: 2s }
        metrics:
          - { name: http_request_duration_seconds, type: histogram }
          - { name: http_requests_total, type: counter }
          - { name: queue_depth, type: gauge }
      objectives:
        - { name: latency, sli: http_request_duration_seconds, quantile: 0.99, target: 0.05, window: 10s, goal: 0.9, burnRates: [{ long: 40s, short: 10s, factor: 2 }] }
        - { name: throughput, sli: "rate(http_requests_total)", min: 5, window: 10s }
        - { name: capacity, sli: queue_depth, max: 100 }
    """

@Suite("Application manifests")
struct ApplicationManifestTests {
    @Test("an Application manifest becomes the SLO model: one objective of each kind")
    func parses() throws {
        let documents = try ManifestParser.parse(shopManifest)
        guard case .application(let app) = documents.first else {
            Issue.record("not an application: \(documents)")
            return
        }
        #expect(app.vms.map(\.name) == ["shop-1"] && app.vms[0].app == "shop")
        #expect(app.telemetry.scrape == ScrapeTarget(port: 80, path: "/metrics", intervalSeconds: 2, timeoutSeconds: 2))
        #expect(app.objectives.map(\.kind) == [.responseTime, .throughput, .capacity])
        let latency = app.objectives[0]
        #expect(latency.quantile == 0.99 && latency.target == 0.05 && latency.windowSeconds == 10 && latency.goal == 0.9)
        #expect(latency.burnRateAlerts == [BurnRateAlert(longSeconds: 40, shortSeconds: 10, factor: 2)])
        #expect(app.objectives[1].metric == "http_requests_total" && app.objectives[1].target == 5)
        #expect(app.objectives[2].burnRateAlerts == BurnRateAlert.defaults)
        #expect(app.objectives[2].periodSeconds == 30 * 86_400)
    }

    static let invalid: [(replace: String, with: String, mentions: [String])] = [
        ("kind: Application", "kind: Applikation", ["kind", "Applikation", "Application"]),
        ("window: 10s, goal", "window: 5x, goal", ["spec.objectives[0].window", "5x"]),
        ("quantile: 0.99", "quantile: 1.5", ["spec.objectives[0].quantile", "1.5"]),
        ("target: 0.05", "target: -0.05", ["spec.objectives[0].target", "-0.05"]),
        (
            "sli: http_request_duration_seconds", "sli: nope_seconds",
            ["spec.objectives[0].sli", "nope_seconds", "unknown metric"]
        ),
        ("sli: queue_depth", "sli: http_request_duration_seconds", ["spec.objectives[2].sli", "histogram", "gauge"]),
        ("goal: 0.9", "goal: 1", ["spec.objectives[0].goal", "1"]),
        ("cpus: 1, memory: 128MiB", "cpus: 0, memory: 128MiB", ["spec.vms[0].cpus", "0"]),
        ("interval: 2s", "interval: 2s, timeout: 3s", ["spec.telemetry.scrape.timeout", "3s"]),
        ("port: 80", "port: 0", ["spec.telemetry.scrape.port", "0"]),
        ("type: gauge", "type: meter", ["spec.telemetry.metrics[2].type", "meter"]),
        ("min: 5, window", "min: -5, window", ["spec.objectives[1].min", "-5"]),
        ("max: 100", "max: 100, colour: red", ["spec.objectives[2].colour"]),
        ("max: 100", "max: 100, kind: throughput", ["spec.objectives[2].kind", "capacity by its fields"]),
        ("max: 100", "max: 100, kind: fast", ["spec.objectives[2].kind", "fast", "response-time"]),
        ("{ long: 40s, short: 10s", "{ long: 5s, short: 10s", ["burnRates[0].long", "5s"]),
    ]

    @Test("a bad manifest names the path and the value", arguments: invalid)
    func rejects(replace: String, with: String, mentions: [String]) throws {
        let text = shopManifest.replacingOccurrences(of: replace, with: with)
        #expect(text != shopManifest, "the test's replacement did not apply")
        do {
            _ = try ManifestParser.parse(text)
            Issue.record("accepted: \(with)")
        } catch {
            #expect(error.code == .invalidArgument)
            for word in mentions { #expect(error.message.contains(word), "\(error.message)") }
        }
    }

    @Test("OpenSLO v1 SLOs map onto objectives: ratio, latency quantile, throughput")
    func openSLO() throws {
        let text = """
            apiVersion: openslo/v1
            kind: SLO
            metadata: { name: availability, displayName: Requests that succeed }
            spec:
              service: shop
              budgetingMethod: Timeslices
              timeWindow: [{ duration: 7d, isRolling: true }]
              indicator:
                metadata: { name: good-requests }
                spec:
                  ratioMetric:
                    counter: true
                    good: { metricSource: { type: Prometheus, spec: { query: 'http_requests_total{code="200"}' } } }
                    total: { metricSource: { type: Prometheus, spec: { query: http_requests_total } } }
              objectives:
                - { displayName: mostly fine, target: 0.95, timeSliceTarget: 0.99, timeSliceWindow: 1m }
            ---
            apiVersion: openslo/v1
            kind: SLO
            metadata: { name: fast }
            spec:
              service: shop
              indicator:
                spec:
                  thresholdMetric: { metricSource: { type: Prometheus, spec: { query: 'histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))' } } }
              objectives: [{ op: lte, value: 0.2, target: 0.99 }]
            """
        let documents = try ManifestParser.parse(text)
        guard case .slo(let ratio) = documents[0], case .slo(let fast) = documents[1] else {
            Issue.record("not SLOs: \(documents)")
            return
        }
        #expect(ratio.service == "shop")
        let r = try #require(ratio.objectives.first)
        #expect(r.kind == .ratio && r.metric == #"http_requests_total{code="200"}"# && r.totalMetric == "http_requests_total")
        #expect(r.target == 0.99 && r.goal == 0.95 && r.windowSeconds == 60 && r.periodSeconds == 7 * 86_400)
        let f = try #require(fast.objectives.first)
        // A query that is no plain selector is judged as written, at each window's end.
        #expect(f.kind == .responseTime && f.language == .promql && f.target == 0.2)
        #expect(f.metric == "histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))")
        #expect(f.goal == 0.99 && f.periodSeconds == 28 * 86_400)

        let bad = text.replacingOccurrences(of: "op: lte", with: "op: gte")
        #expect(throws: VireoError.self) { try ManifestParser.parse(bad) }
    }

    @Test("the examples parse")
    func examples() throws {
        let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../examples")
            .standardized
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".yaml") }
        #expect(files.count >= 2)
        for file in files {
            let text = try String(contentsOf: directory.appendingPathComponent(file), encoding: .utf8)
            #expect(throws: Never.self, "\(file)") { _ = try ManifestParser.parse(text) }
        }
    }

    @Test("durations parse and print")
    func durations() {
        #expect(DurationText.seconds("5m") == 300)
        #expect(DurationText.seconds("1h30m") == 5_400)
        #expect(DurationText.seconds("250ms") == 0.25)
        #expect(DurationText.seconds("7") == 7)
        #expect(DurationText.seconds("0.5") == 0.5)
        #expect(DurationText.seconds("1.5m") == 90)
        // Only what the schema's Duration pattern allows: no sign, exponent, bare point or "inf".
        for bad in ["5x", "", "m", "1.2.3s", "-5s", "5 m", "+5", "1e3", ".5s", "5.s", "inf", "nan", "٣s", "5s "] {
            #expect(DurationText.seconds(bad) == nil, "\(bad)")
        }
        #expect(DurationText.format(5_400) == "1h30m" && DurationText.format(0.25) == "250ms")
    }
}

/// Prometheus text for the shop: `count` requests so far, all taking about `latency` seconds.
func shopExposition(requests count: Int, latency: Double, queue: Double, at ms: Int64) -> String {
    let bounds = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]
    var text = "# TYPE http_request_duration_seconds histogram\n"
    for bound in bounds {
        text += "http_request_duration_seconds_bucket{le=\"\(bound)\"} \(latency <= bound ? count : 0) \(ms)\n"
    }
    text += "http_request_duration_seconds_bucket{le=\"+Inf\"} \(count) \(ms)\n"
    text += "http_request_duration_seconds_count \(count) \(ms)\n"
    text += "# TYPE http_requests_total counter\nhttp_requests_total{code=\"200\"} \(count) \(ms)\n"
    text += "# TYPE queue_depth gauge\nqueue_depth \(queue) \(ms)\n"
    text += "# TYPE not_declared gauge\nnot_declared 1 \(ms)\n"
    return text
}

@Suite("SLO evaluation")
struct SLOEvaluationTests {
    @Test("windows are judged good or bad; burn-rate alerts make it breaching, and a good window makes it ok")
    func breachAndRecover() throws {
        let app = try #require(
            ManifestParser.parse(shopManifest).compactMap { if case .application(let a) = $0 { a } else { nil } }.first)
        var tracker = try ObjectiveTracker(app.objectives[0])
        var samples = RecentSamples()
        var requests = 0
        var ms: Int64 = 1_800_000_000_000
        func scrape(latency: Double) throws {
            requests += 20
            for family in try PrometheusText.parse(shopExposition(requests: requests, latency: latency, queue: 3, at: ms)) {
                for s in family.samples {
                    samples.append(name: s.name, labels: Labels(s.labels), at: s.timestampMs!, value: s.value)
                }
            }
        }
        var states: [SLOState] = []
        // 60 s fast (20 ms), 30 s slow (200 ms), 30 s fast; a scrape every 2 s.
        for step in 0..<60 {
            try scrape(latency: (30..<45).contains(step) ? 0.2 : 0.02)
            ms += 2_000
            tracker.evaluate(samples, now: ms, delayMs: 0)
            states.append(tracker.state)
        }
        let status = tracker.status()
        #expect(states[10] == .ok)
        #expect(states[34...38].contains(.breaching), "\(states)")
        #expect(states.last == .ok)
        #expect(status.badWindows >= 2 && status.badWindows <= 4, "\(status)")
        #expect(status.goodWindows >= 6)
        // 30 days of 10 s windows allow 10% bad: a few bad windows spend almost nothing.
        #expect(status.errorBudgetRemaining > 0.99 && status.errorBudgetRemaining < 1)
        #expect(status.burnRates.map(\.lookbackSeconds) == [10, 40])
        #expect(status.sli.map { $0 < 0.05 } == true)
    }

    @Test("throughput is a counter's rate; capacity a gauge's maximum; no data is no verdict")
    func otherKinds() throws {
        let app = try #require(
            ManifestParser.parse(shopManifest).compactMap { if case .application(let a) = $0 { a } else { nil } }.first)
        var samples = RecentSamples()
        let start: Int64 = 1_800_000_000_000
        for i in 0...10 {
            samples.append(
                name: "http_requests_total", labels: Labels([("code", "200")]), at: start + Int64(i) * 1_000, value: Double(i * 3)
            )
            samples.append(name: "queue_depth", labels: Labels(), at: start + Int64(i) * 1_000, value: i == 4 ? 150 : 10)
        }
        let throughput = app.objectives[1]
        let rate = Indicator.value(
            throughput, try SeriesSelector(parsing: throughput.metric), total: nil, in: samples, from: start, to: start + 10_000)
        #expect(rate == 3)
        let capacity = app.objectives[2]
        let peak = Indicator.value(
            capacity, try SeriesSelector(parsing: capacity.metric), total: nil, in: samples, from: start, to: start + 10_000)
        #expect(peak == 150 && !Indicator.isGood(capacity, 150))
        let empty = Indicator.value(
            throughput, try SeriesSelector(parsing: throughput.metric), total: nil, in: samples, from: start + 20_000,
            to: start + 30_000)
        #expect(empty == nil)
    }

    @Test("many applications are judged on every core alike: each as alone, changes in application order")
    func manyApplications() async throws {
        let shop = try #require(
            ManifestParser.parse(shopManifest).compactMap { if case .application(let a) = $0 { a } else { nil } }.first)
        // 100 applications (past the threshold for judging in parallel): odd ones slow.
        let names = (0..<100).map { String(format: "shop-%03d", $0) }
        let engine = TelemetryEngine(store: try SeriesStore(), judgeDelayMs: 0)
        await engine.configure(
            names.map {
                var app = shop; app.name = $0; return app
            })
        var alone = try shop.objectives.map { try ObjectiveTracker($0) }
        var aloneSamples = RecentSamples()
        var changes: [SLOChange] = []
        var ms: Int64 = 1_800_000_000_000
        for step in 0..<40 {
            for (k, name) in names.enumerated() {
                let text = shopExposition(requests: 20 * (step + 1), latency: k % 2 == 1 ? 0.2 : 0.02, queue: 3, at: ms)
                let samples = try PrometheusText.parse(text).flatMap(\.samples).map {
                    ($0.name, Labels($0.labels), $0.timestampMs!, $0.value)
                }
                try await engine.ingest(app: name, samples)
                if k == 1 { for s in samples { aloneSamples.append(name: s.0, labels: s.1, at: s.2, value: s.3) } }
            }
            ms += 2_000
            changes += await engine.evaluate(now: ms)
            for i in alone.indices { alone[i].evaluate(aloneSamples, now: ms, delayMs: 0) }
        }
        let breached = Set(changes.filter { $0.to == .breaching }.map(\.app))
        #expect(breached == Set(names.enumerated().filter { $0.offset % 2 == 1 }.map(\.element)))
        // Within one evaluation, changes come in the applications' order.
        let firstRound = changes.filter { $0.from == .unknown }
        #expect(firstRound.map(\.app) == firstRound.map(\.app).sorted())
        let odd = try #require(await engine.status(app: names[1]))
        #expect(odd.objectives == alone.map { $0.status() })
        #expect(await engine.status(app: names[0])?.objectives.first?.state == .ok)
    }

    @Test("counter resets count as growth from zero")
    func counterReset() {
        var samples = RecentSamples()
        for (t, v) in [(0, 10.0), (1_000, 15), (2_000, 3), (3_000, 8)] {
            samples.append(name: "c_total", labels: Labels(), at: Int64(t), value: v)
        }
        #expect(samples.increase(0, from: 0, to: 3_000) == 13.0)
    }

    @Test("selectors parse, match labels, and reject what is not one")
    func selectors() throws {
        let s = try SeriesSelector(parsing: #"http_requests_total{code="200", path!="/metrics"}"#)
        #expect(s.matches(Labels([("code", "200"), ("path", "/")])))
        #expect(!s.matches(Labels([("code", "200"), ("path", "/metrics")])))
        #expect(!s.matches(Labels([("code", "500")])))
        for bad in ["", "9lives", "x{code=200}", "x{code=\"200\"", "x{=\"1\"}"] {
            #expect(throws: SelectorError.self, "\(bad)") { try SeriesSelector(parsing: bad) }
        }
    }
}

@Suite("Series store")
struct SeriesStoreTests {
    @Test("samples are stored, queried by selector, rolled up per step, and dropped after retention")
    func retention() async throws {
        let store = try SeriesStore(
            path: temporaryDirectory() + "/telemetry.db",
            retention: Retention(rawSeconds: 120, rollupSeconds: 600, stepSeconds: 60))
        let start: Int64 = 1_800_000_000_000 - 1_800_000_000_000 % 60_000
        var batch: [IngestSample] = []
        for i in 0..<600 {  // 10 minutes, one sample a second, two series
            for code in ["200", "500"] {
                batch.append(
                    IngestSample(
                        app: "shop", name: "req_total", labels: Labels([("code", code)]), time: start + Int64(i) * 1_000,
                        value: Double(i)))
            }
        }
        try await store.ingest(batch)
        try await store.ingest(Array(batch.prefix(10)))  // a retried push changes nothing
        #expect(try await store.counts().samples == 1_200)
        let ok = try await store.query(
            app: "shop", name: "req_total", selector: try SeriesSelector(parsing: #"req_total{code="200"}"#), from: start,
            to: start + 599_000)
        #expect(ok.count == 1 && ok[0].points.count == 600 && ok[0].resolution == "raw")

        let (rolled, deleted) = try await store.compact(now: start + 600_000)
        #expect(rolled == 2 * 10, "every complete step of both series")
        #expect(deleted == 2 * 480)
        let mixed = try await store.query(
            app: "shop", name: "req_total", selector: try SeriesSelector(parsing: #"req_total{code="200"}"#), from: start,
            to: start + 599_000)
        #expect(mixed[0].resolution == "mixed")
        #expect(mixed[0].points.count == 8 + 120)
        let firstStep = try #require(mixed[0].points.first)
        #expect(firstStep.min == 0 && firstStep.max == 59 && firstStep.v == 59 && firstStep.mean == 29.5)

        try await store.compact(now: start + 2_000_000)
        let counts = try await store.counts()
        #expect(counts.rollups == 0 && counts.samples == 0)
    }
}

@Suite("Applications through the API")
struct ApplicationAPITests {
    @Test("apply creates, re-applying changes nothing, a change is listed; a rejected apply changes nothing")
    func applyAndDiff() async throws {
        // No hosts: a deleted VM is gone at once (no agent has to remove it).
        let plane = try await TestControlPlane.make(hosts: [])
        try await plane.test { client in
            let created = try decodeJSON(ApplyResult.self, try await client.request(.post, "/v1/apply", body: shopManifest).body)
            #expect(created.items.map(\.action) == [.created])
            let again = try decodeJSON(ApplyResult.self, try await client.request(.post, "/v1/apply", body: shopManifest).body)
            #expect(again.items.map(\.action) == [.unchanged])
            let changed = shopManifest.replacingOccurrences(of: "target: 0.05", with: "target: 0.08")
            let updated = try decodeJSON(ApplyResult.self, try await client.request(.post, "/v1/apply", body: changed).body)
            #expect(updated.items.first?.action == .updated)
            #expect(updated.items.first?.changes == ["objective latency: target 0.05 → 0.08"])

            let bad = changed.replacingOccurrences(of: "quantile: 0.99", with: "quantile: 0")
            let rejected = try await client.request(.post, "/v1/apply", body: bad)
            #expect(rejected.status == 400)
            #expect(expectEnvelope(rejected.body, code: .invalidArgument).contains("spec.objectives[0].quantile"))
            let dropVM = changed.replacingOccurrences(
                of: "vms: [{ name: shop-1, image: tiny, cpus: 1, memory: 128MiB }]", with: "vms: []")
            #expect(try await client.request(.post, "/v1/apply", body: dropVM).status == 409)

            // A listed VM deleted since is made again by the next apply.
            try await client.request(.delete, "/v1/vms/shop-1")
            let again2 = try decodeJSON(ApplyResult.self, try await client.request(.post, "/v1/apply", body: changed).body)
            #expect(again2.items.first?.changes == ["vm shop-1: created again (it had been deleted)"])

            let app = try decodeJSON(AppView.self, try await client.request(.get, "/v1/apps/shop").body)
            #expect(app.spec.objectives[0].target == 0.08 && app.generation == 3)
            #expect(app.vms.map(\.name) == ["shop-1"])
            #expect(app.objectives.map(\.state) == [.unknown, .unknown, .unknown])
            let vm = try decodeJSON(VMView.self, try await client.request(.get, "/v1/vms/shop-1").body)
            #expect(vm.app == "shop")
        }
        #expect(try await plane.store.load().apps.map(\.spec.objectives[0].target) == [0.08])
    }

    @Test("deleting an application asks what to do with its VMs")
    func delete() async throws {
        let plane = try await TestControlPlane.make()
        try await plane.test { client in
            try await client.request(.post, "/v1/apply", body: shopManifest)
            let unasked = try await client.request(.delete, "/v1/apps/shop")
            #expect(unasked.status == 400)
            #expect(expectEnvelope(unasked.body, code: .invalidArgument).contains("vms=keep or vms=delete"))
            #expect(try await client.request(.delete, "/v1/apps/shop?vms=maybe").status == 400)
            let kept = try decodeJSON(AppDeletion.self, try await client.request(.delete, "/v1/apps/shop?vms=keep").body)
            #expect(kept.keptVMs == ["shop-1"])
            #expect(try await client.request(.get, "/v1/apps/shop").status == 404)
            let vm = try decodeJSON(VMView.self, try await client.request(.get, "/v1/vms/shop-1").body)
            #expect(vm.app == nil && vm.intent == .running)
        }
        #expect(try await plane.store.load().apps.isEmpty)
    }

    @Test("pushed samples are evaluated: breaching and ok are events, gauges and app show; series are kept")
    func pushEvaluate() async throws {
        let clock = ManualClock()
        let plane = try await TestControlPlane.make(now: { clock.now })
        try await plane.test { client in
            try await client.request(.post, "/v1/apply", body: shopManifest)
            let bad = try await client.request(.post, "/v1/apps/shop/samples", body: "this is { not prometheus")
            #expect(bad.status == 400)
            #expect(expectEnvelope(bad.body, code: .invalidArgument).contains("line 1"))
            #expect(try await client.request(.post, "/v1/apps/nope/samples", body: "x 1\n").status == 404)

            var requests = 0
            for step in 0..<45 {  // 90 s: slow from 30 s to 60 s
                requests += 20
                let text = shopExposition(
                    requests: requests, latency: (15..<30).contains(step) ? 0.2 : 0.02, queue: 3, at: clock.ms)
                let pushed = try decodeJSON(
                    IngestResult.self, try await client.request(.post, "/v1/apps/shop/samples", body: text).body)
                #expect(pushed.accepted == 11, "declared metrics only")
                clock.advance(2)
                await plane.controller.evaluateSLOs()
            }
            let events = plane.controller.events.events(after: 0).filter { $0.kind == .slo && $0.name == "shop/latency" }
            #expect(events.map { $0.to }.contains("breaching"), "\(events)")
            #expect(events.last?.to == "ok")

            let app = try decodeJSON(AppView.self, try await client.request(.get, "/v1/apps/shop").body)
            #expect(app.objectives.first { $0.name == "latency" }?.state == .ok)
            #expect(app.objectives.first { $0.name == "throughput" }?.state == .ok)
            #expect(app.objectives.first { $0.name == "latency" }.map { $0.badWindows >= 2 } == true)
            #expect(app.current?.contains { $0.name == "queue_depth" && $0.value == 3 } == true)
            #expect(app.current?.contains { $0.name == "not_declared" } == false)

            let metrics = try await client.request(.get, "/metrics").body
            #expect(metrics.contains(#"vireo_slo_error_budget_remaining{app="shop",objective="latency"}"#))
            #expect(metrics.contains(#"vireo_slo_burn_rate{app="shop",objective="latency",window="40s"}"#))

            let from = Int(clock.now.timeIntervalSince1970) - 120
            let series = try decodeJSON(
                SeriesResponse.self,
                try await client.request(.get, "/v1/apps/shop/series?metric=http_requests_total&from=\(from)&to=\(from + 200)")
                    .body)
            #expect(series.series.count == 1 && series.series[0].points.count == 45)
            #expect(series.series[0].points.last?.v == 900)
            let badQuery = try await client.request(.get, "/v1/apps/shop/series?metric=x&from=yesterday")
            #expect(expectEnvelope(badQuery.body, code: .invalidArgument).contains("from"))
        }
    }

    @Test("a restarted controller keeps every objective's judged windows, budget and state")
    func restartKeepsVerdicts() async throws {
        let clock = ManualClock()
        let dir = temporaryDirectory()
        func open() async throws -> Controller {
            try await Controller.open(
                store: try SQLiteStore(path: dir + "/vireo.db"), now: { clock.now },
                telemetry: TelemetryEngine(store: try SeriesStore(path: dir + "/telemetry.db")))
        }
        let first = try await open()
        _ = try await first.apply(try ManifestParser.parse(shopManifest))
        var requests = 0
        for step in 0..<30 {  // 60 s, slow from 20 s to 40 s
            requests += 20
            let text = shopExposition(requests: requests, latency: (10..<20).contains(step) ? 0.2 : 0.02, queue: 3, at: clock.ms)
            _ = try await first.ingest(app: "shop", exposition: text, at: clock.now)
            clock.advance(2)
            await first.evaluateSLOs()
        }
        try await first.telemetry.flush()
        let before = try #require(try await first.app("shop").objectives.first)
        #expect(before.badWindows >= 2 && before.goodWindows >= 2, "\(before)")

        let second = try await open()
        let after = try #require(try await second.app("shop").objectives.first)
        #expect(after.goodWindows == before.goodWindows && after.badWindows == before.badWindows)
        #expect(after.emptyWindows == before.emptyWindows)
        #expect(after.state == before.state && after.errorBudgetRemaining == before.errorBudgetRemaining)
        #expect(after.burnRates == before.burnRates)
        #expect(after.stateChangedAt != nil)
        // Evaluation goes on from where it stopped: the next window is judged once, not again.
        clock.advance(10)
        await second.evaluateSLOs()
        let next = try #require(try await second.app("shop").objectives.first)
        #expect(
            next.goodWindows + next.badWindows + next.emptyWindows == after.goodWindows + after.badWindows + after.emptyWindows
                + 1)
    }

    @Test("deleting an application whose VM is migrating is refused, and leaves the controller usable")
    func deleteWhileMigrating() async throws {
        let plane = try await TestControlPlane.make(hosts: ["h1", "h2"])
        let controller = plane.controller
        _ = try await controller.apply(try ManifestParser.parse(shopManifest))
        let vm = try await controller.vm("shop-1")
        let host = try await controller.host(try #require(vm.host)).id
        _ = try await controller.heartbeat(
            AgentHeartbeat(hostID: host, instances: [InstanceReport(id: vm.id, state: .running, generation: vm.generation)]))
        _ = try await controller.migrateVM("shop-1", to: vm.host == "h1" ? "h2" : "h1")
        await #expect(throws: VireoError.self) { _ = try await controller.deleteApp("shop", vms: .delete) }
        // The lock was given back: other changes go through, and the application is still there.
        _ = try await controller.createVM(VMSpec(name: "other", image: "tiny", cpus: 1, memoryMiB: 128))
        #expect(try await controller.app("shop").vms.map(\.name) == ["shop-1"])
        #expect(try await plane.store.load().apps.count == 1)
    }
}
