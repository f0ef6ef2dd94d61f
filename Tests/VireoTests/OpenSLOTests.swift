import Foundation
import Testing
import VireoAPI
import VireoController
import VireoModel

/// OpenSLO v1 documents as their users write them: every kind, references between documents,
/// lists of documents, PromQL queries.
@Suite("OpenSLO v1")
struct OpenSLOTests {
    /// In the style of OpenSLO's own examples: a YAML list, with a Service, an SLI and a
    /// DataSource that SLOs name.
    static let documents = """
        - apiVersion: openslo/v1
          kind: Service
          metadata: { name: shop, displayName: The shop }
          spec: { description: Sells things }
        - apiVersion: openslo/v1
          kind: DataSource
          metadata: { name: prom }
          spec: { type: Prometheus, connectionDetails: { url: 'http://127.0.0.1:9090' } }
        - apiVersion: openslo/v1
          kind: SLI
          metadata: { name: served-well }
          spec:
            ratioMetric:
              counter: true
              good: { metricSource: { metricSourceRef: prom, spec: { query: 'sum(http_requests_total{code=~"2.."})' } } }
              total: { metricSource: { metricSourceRef: prom, spec: { query: 'sum(http_requests_total)' } } }
        - apiVersion: openslo/v1
          kind: SLO
          metadata: { name: availability }
          spec:
            service: shop
            indicatorRef: served-well
            budgetingMethod: RatioTimeslices
            timeWindow: [{ duration: 1M, isRolling: false, calendar: { startTime: '2026-01-01 00:00:00', timeZone: UTC } }]
            objectives: [{ target: 0.99, timeSliceWindow: 30s }]
        - apiVersion: openslo/v1
          kind: SLO
          metadata: { name: errors }
          spec:
            service: shop
            indicator:
              metadata: { name: few-errors }
              spec:
                ratioMetric:
                  counter: true
                  bad: { metricSource: { type: Prometheus, spec: { query: 'http_requests_total{code="500"}' } } }
                  total: { metricSource: { type: Prometheus, spec: { query: http_requests_total } } }
            budgetingMethod: Timeslices
            timeWindow: [{ duration: 1w, isRolling: true }]
            objectives: [{ target: 0.9, timeSliceTarget: 0.95, timeSliceWindow: 1m }]
        - apiVersion: openslo/v1
          kind: SLO
          metadata: { name: latency }
          spec:
            service: shop
            indicator:
              spec:
                thresholdMetric:
                  metricSource: { type: Prometheus, spec: { query: 'histogram_quantile(0.9, sum by (le) (rate(http_request_duration_seconds_bucket[1m])))' } }
            budgetingMethod: Timeslices
            objectives:
              - { op: lte, value: 0.25, target: 0.99, timeSliceWindow: 10s }
              - { op: lte, value: 0.5, targetPercent: 99.9, timeSliceWindow: 10s }
        """

    static let shop = """
        apiVersion: vireo/v1
        kind: Application
        metadata: { name: shop }
        spec:
          telemetry:
            metrics:
              - { name: http_request_duration_seconds, type: histogram }
              - { name: http_requests_total, type: counter }
        """

    @Test("a list of documents with a Service, an SLI and a DataSource they name becomes objectives")
    func everyKind() throws {
        let documents = try ManifestParser.parse(Self.documents)
        #expect(documents.map(\.kind) == ["Service", "SLO", "SLO", "SLO"], "SLI and DataSource live in the SLOs")
        let slos = documents.compactMap { if case .slo(let slo) = $0 { slo } else { nil } }
        let availability = try #require(slos.first?.objectives.first)
        // counter: true — each selector read as its growth in the window, summed.
        #expect(availability.language == .promql && availability.kind == .ratio)
        #expect(
            availability.metric
                == #"(sum(sum(increase(http_requests_total{code=~"2.."}[30s]))) / sum(sum(increase(http_requests_total[30s]))))"#
                || availability.metric
                    == #"sum(sum(increase(http_requests_total{code=~"2.."}[30s]))) / sum(sum(increase(http_requests_total[30s])))"#,
            "\(availability.metric)")
        #expect(availability.target == 0.99 && availability.goal == 0.99 && availability.windowSeconds == 30)
        #expect(availability.periodSeconds == 30 * 86_400, "a calendar month as 30 rolling days")
        let errors = try #require(slos[1].objectives.first)
        #expect(errors.metric.hasPrefix("1 - ") && errors.metric.contains(#"increase(http_requests_total{code="500"}[1m])"#))
        #expect(errors.target == 0.95 && errors.goal == 0.9 && errors.periodSeconds == 7 * 86_400)
        let latency = slos[2].objectives
        #expect(latency.map(\.name) == ["latency-1", "latency-2"])
        #expect(latency.map(\.kind) == [.responseTime, .responseTime] && latency.map(\.target) == [0.25, 0.5])
        #expect(
            zip(latency.map(\.goal), [0.99, 0.999]).allSatisfy { abs($0 - $1) < 1e-12 }
                && latency.allSatisfy { $0.windowSeconds == 10 })
    }

    static let refused: [(replace: String, with: String, mentions: [String])] = [
        ("indicatorRef: served-well", "indicatorRef: served-badly", ["spec.indicatorRef", "served-badly", "no SLI"]),
        (
            "metricSourceRef: prom, spec: { query: 'sum(http_requests_total)'",
            "metricSourceRef: thanos, spec: { query: 'sum(http_requests_total)'", ["metricSourceRef", "thanos"]
        ),
        ("type: Prometheus, connectionDetails", "type: Datadog, connectionDetails", ["spec.type", "Datadog", "Prometheus"]),
        ("kind: Service", "kind: AlertPolicy", ["AlertPolicy 'shop' is used by no SLO"]),
        ("kind: Service", "kind: Dashboard", ["kind", "Dashboard", "AlertNotificationTarget"]),
        (
            "budgetingMethod: Timeslices\n    objectives:\n      - { op: lte",
            "budgetingMethod: RatioTimeslices\n    objectives:\n      - { op: lte", ["RatioTimeslices", "ratioMetric"]
        ),
        ("op: lte, value: 0.25", "op: gte, value: 0.25", ["op", "gte", "latency quantile"]),
        ("duration: 1w", "duration: 1fortnight", ["timeWindow[0].duration", "1fortnight"]),
        (
            "bad: { metricSource",
            "good: { metricSource: { type: Prometheus, spec: { query: x_total } } }\n          bad: { metricSource",
            ["good or bad"]
        ),
        (
            "query: 'sum(http_requests_total)'", "query: 'sum(http_requests_total offset 1h)'",
            ["total.metricSource.spec.query", "counter: false"]
        ),
    ]

    @Test("what cannot be evaluated is refused, naming the field", arguments: refused)
    func refuses(replace: String, with: String, mentions: [String]) {
        let text = Self.documents.replacingOccurrences(of: replace, with: with)
        #expect(text != Self.documents, "the test's replacement did not apply")
        let error = #expect(throws: VireoError.self) { try ManifestParser.parse(text) }
        #expect(error?.code == .invalidArgument)
        for word in mentions { #expect(error?.message.contains(word) == true, "\(String(describing: error?.message))") }
    }

    @Test("an SLI no SLO uses is refused: Vireo keeps it only within SLOs")
    func unusedSLI() {
        let text =
            Self.documents.replacingOccurrences(of: "indicatorRef: served-well", with: "indicatorRef: served-well2")
            .replacingOccurrences(of: "metadata: { name: served-well }", with: "metadata: { name: served-well2 }")
            + "\n- { apiVersion: openslo/v1, kind: SLI, metadata: { name: spare }, spec: { thresholdMetric: { metricSource: { type: Prometheus, spec: { query: x } } } } }"
        let error = #expect(throws: VireoError.self) { try ManifestParser.parse(text) }
        #expect(error?.message.contains("document 7: SLI 'spare' is used by no SLO") == true, "\(String(describing: error))")
    }

    @Test("applied with their application, the SLOs are its objectives; a Service must name an application")
    func applied() async throws {
        let clock = ManualClock()
        let plane = try await TestControlPlane.make(now: { clock.now })
        let alone = try ManifestParser.parse(Self.documents)
        let error = await #expect(throws: VireoError.self) { try await plane.controller.apply(alone) }
        #expect(error?.message.contains("Service 'shop'") == true, "\(String(describing: error))")
        let result = try await plane.controller.apply(try ManifestParser.parse(Self.shop + "\n---\n" + Self.documents))
        #expect(result.items.map { "\($0.kind)/\($0.name)" } == ["Application/shop", "Service/shop"])
        let app = try await plane.controller.app("shop")
        #expect(app.objectives.map(\.name) == ["availability", "errors", "latency-1", "latency-2"])
        // A metric the application does not declare is refused, and nothing changes.
        let undeclared = Self.documents.replacingOccurrences(
            of: "rate(http_request_duration_seconds_bucket[1m])", with: "rate(checkout_seconds_bucket[1m])")
        let refused = await #expect(throws: VireoError.self) {
            try await plane.controller.apply(try ManifestParser.parse(undeclared))
        }
        #expect(refused?.message.contains("checkout_seconds_bucket") == true, "\(String(describing: refused))")
        #expect(try await plane.controller.app("shop").objectives.count == 4)

        // Judged from the samples: 10 requests a second succeed and 1 fails, so 10/11 are good.
        for step in 1...200 {
            let text = """
                # TYPE http_requests_total counter
                http_requests_total{code="200"} \(10 * step)
                http_requests_total{code="500"} \(step)
                """
            _ = try await plane.controller.ingest(app: "shop", exposition: text + "\n", at: clock.now)
            clock.advance(1)
            await plane.controller.evaluateSLOs()
        }
        let judged = try await plane.controller.app("shop").objectives
        for name in ["availability", "errors"] {
            let objective = try #require(judged.first { $0.name == name })
            #expect(objective.badWindows >= 1 && objective.goodWindows == 0, "\(objective)")
            #expect(objective.sli.map { abs($0 - 10.0 / 11) < 1e-9 } == true, "\(name): \(String(describing: objective.sli))")
        }
    }

    @Test("slo export writes an application's objectives as OpenSLO that apply takes back as the same objectives")
    func exportRoundTrip() async throws {
        let up = try UpProcess()
        let server = try await up.ready()
        let manifest =
            PrometheusSourceTests.manifest("shop", telemetry: "scrape: { port: 80 }")
            + "\n    - { name: p99, sli: 'histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[1m])))', max: 0.5, window: 30s, period: 7d, goal: 0.95 }"
        #expect(try await vireo(["apply", "-f", "-"], server: server, stdin: manifest).status == 0)
        let before = try decodeJSON(AppView.self, try await vireo(["app", "show", "shop", "-o", "json"], server: server).stdout)
        #expect(before.spec.objectives.count == 5)

        let exported = try await vireo(["slo", "export", "shop"], server: server)
        #expect(exported.status == 0, "\(exported.stderr)")
        let documents = try ManifestParser.parse(exported.stdout)
        #expect(documents.map(\.kind) == ["Service"] + Array(repeating: "SLO", count: 5), "\(exported.stdout)")
        let json = try await vireo(["slo", "export", "shop", "-o", "json"], server: server)
        let list = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]]
        #expect(list?.count == 6 && list?.allSatisfy { $0["apiVersion"] as? String == "openslo/v1" } == true)

        // Applied back, every objective keeps its name, kind, target, window, goal and period.
        let applied = try await vireo(["apply", "-f", "-"], server: server, stdin: exported.stdout)
        #expect(applied.status == 0, "\(applied.stderr)")
        let after = try decodeJSON(AppView.self, try await vireo(["app", "show", "shop", "-o", "json"], server: server).stdout)
        func shape(_ o: Objective) -> String { "\(o.name) \(o.kind) \(o.target) \(o.windowSeconds) \(o.goal) \(o.periodSeconds)" }
        #expect(after.spec.objectives.map(shape) == before.spec.objectives.map(shape))
        // Ratio, capacity and PromQL objectives come back exactly; response time and throughput
        // as the PromQL of what Vireo computed from the selector.
        let unchanged = ["good", "capacity", "p99"]
        #expect(
            after.spec.objectives.filter { unchanged.contains($0.name) }
                == before.spec.objectives.filter { unchanged.contains($0.name) })
        #expect(
            after.spec.objectives.first { $0.name == "latency" }?.metric
                == "histogram_quantile(0.9, sum by (le) (increase(http_request_duration_seconds_bucket[10000ms])))")
        #expect(after.spec.objectives.first { $0.name == "throughput" }?.metric == "sum(rate(http_requests_total[10000ms]))")
        let missing = try await vireo(["slo", "export", "nope"], server: server)
        #expect(missing.status == 3 && missing.stderr.contains("nope"), "\(missing)")
    }
}
