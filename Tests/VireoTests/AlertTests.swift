import Foundation
import Hummingbird
import HummingbirdTesting
import Synchronization
import Testing
import VireoAPI
import VireoController
import VireoModel

/// Burn-rate alerts from OpenSLO alert policies, delivered to webhooks in Alertmanager's format.
@Suite("Alerts")
struct AlertTests {
    static let application = """
        apiVersion: vireo/v1
        kind: Application
        metadata: { name: shop }
        spec:
          telemetry:
            metrics: [{ name: http_requests_total, type: counter }]
        """

    /// An SLO on good requests with an inline alert policy and a condition and target it names.
    static func slo(receiver: String) -> String {
        """
        - apiVersion: openslo/v1
          kind: AlertCondition
          metadata: { name: fast-burn }
          spec:
            severity: page
            condition: { kind: burnrate, op: gte, threshold: 2, lookbackWindow: 30s, alertAfter: 0s }
        - apiVersion: openslo/v1
          kind: AlertNotificationTarget
          metadata: { name: on-call }
          spec: { description: The on-call receiver, target: '\(receiver)' }
        - apiVersion: openslo/v1
          kind: SLO
          metadata: { name: served }
          spec:
            service: shop
            indicator:
              spec:
                ratioMetric:
                  good: { metricSource: { type: Prometheus, spec: { query: 'http_requests_total{code="200"}' } } }
                  total: { metricSource: { type: Prometheus, spec: { query: http_requests_total } } }
            budgetingMethod: Timeslices
            objectives: [{ target: 0.9, timeSliceTarget: 0.9, timeSliceWindow: 10s }]
            alertPolicies:
              - kind: AlertPolicy
                metadata: { name: served-burning }
                spec:
                  alertWhenResolved: true
                  conditions: [{ conditionRef: fast-burn }]
                  notificationTargets: [{ targetRef: on-call }]
        """
    }

    @Test("alert policies become rules on the SLO's objectives")
    func parsed() throws {
        let documents = try ManifestParser.parse(Self.slo(receiver: "http://127.0.0.1:9093/hook"))
        let slo = try #require(documents.compactMap { if case .slo(let s) = $0 { s } else { nil } }.first)
        #expect(
            slo.alerts == [
                AlertRule(
                    objective: "served", name: "served-burning", severity: "page", op: "gte", threshold: 2, lookbackSeconds: 30,
                    alertAfterSeconds: 0, targets: [AlertTarget(name: "on-call", url: "http://127.0.0.1:9093/hook")])
            ])
    }

    static let refused: [(replace: String, with: String, mentions: [String])] = [
        ("target: 'http://127.0.0.1:9093/hook'", "target: email", ["spec.target", "email", "Alertmanager"]),
        ("kind: burnrate", "kind: timeslice", ["condition.kind", "timeslice", "burnrate"]),
        ("conditionRef: fast-burn", "conditionRef: slow-burn", ["conditionRef", "slow-burn"]),
        ("op: gte, threshold", "op: above, threshold", ["condition.op", "above"]),
        ("lookbackWindow: 30s", "lookbackWindow: soon", ["lookbackWindow", "soon"]),
        ("[{ targetRef: on-call }]", "[]", ["notificationTargets", "at least one"]),
        ("kind: AlertPolicy\n", "kind: AlertCondition\n", ["alertPolicies[0].kind", "AlertPolicy"]),
    ]

    @Test("an alert policy Vireo cannot act on is refused, naming the field", arguments: refused)
    func refuses(replace: String, with: String, mentions: [String]) {
        let text = Self.slo(receiver: "http://127.0.0.1:9093/hook").replacingOccurrences(of: replace, with: with)
        #expect(text != Self.slo(receiver: "http://127.0.0.1:9093/hook"), "the test's replacement did not apply")
        let error = #expect(throws: VireoError.self) { try ManifestParser.parse(text) }
        for word in mentions { #expect(error?.message.contains(word) == true, "\(String(describing: error?.message))") }
    }

    @Test("a burning budget fires to the webhook in Alertmanager's format, retried; recovery resolves it")
    func firesAndResolves() async throws {
        let received = Mutex<[String]>([])
        let refuseFirst = Mutex(true)
        let router = Router()
        router.post("/hook") { request, _ -> Response in
            let body = String(buffer: try await request.body.collect(upTo: 1 << 20))
            // The receiver is down for the first notification's first attempt.
            if refuseFirst.withLock({ first in
                defer { first = false }; return first
            }) {
                return Response(status: .serviceUnavailable)
            }
            received.withLock { $0.append(body) }
            return Response(status: .ok)
        }
        let receiver = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        try await receiver.test(.live) { client in
            let url = "http://127.0.0.1:\(try #require(client.port))/hook"
            let clock = ManualClock()
            var settings = ControllerSettings.fast
            settings.alertRetryDelay = .milliseconds(100)
            let plane = try await TestControlPlane.make(settings: settings, now: { clock.now })
            let c = plane.controller
            _ = try await c.apply(try ManifestParser.parse(Self.application + "\n---\n" + Self.slo(receiver: url)))

            // 10 requests a second; half fail from 60 s to 80 s.
            var good = 0
            var all = 0
            var firingSeen: [ActiveAlert] = []
            for step in 0..<75 {
                all += 20
                good += (30..<40).contains(step) ? 10 : 20
                let text = "http_requests_total{code=\"200\"} \(good)\nhttp_requests_total{code=\"500\"} \(all - good)\n"
                _ = try await c.ingest(app: "shop", exposition: "# TYPE http_requests_total counter\n" + text, at: clock.now)
                clock.advance(2)
                await c.evaluateSLOs()
                if step == 45 { firingSeen = await c.alerts().active }
            }
            #expect(firingSeen.map(\.name) == ["served-burning"], "firing after the failures")
            #expect(firingSeen.first?.reason.contains("burn rate") == true)
            try await eventually("both notifications delivered", within: 10) {
                await c.alerts().deliveries.filter { $0.state == .delivered }.count == 2
            }
            let list = await c.alerts()
            #expect(list.active.isEmpty, "resolved once the failures left the lookback")
            let deliveries = list.deliveries.reversed().map { "\($0.status) \($0.target) \($0.state.rawValue) \($0.attempts)" }
            #expect(deliveries == ["firing on-call delivered 2", "resolved on-call delivered 1"], "\(list.deliveries)")

            let bodies = received.withLock { $0 }
            #expect(bodies.count == 2)
            let messages = try bodies.map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] ?? [:] }
            #expect(messages.map { $0["status"] as? String } == ["firing", "resolved"])
            #expect(messages.allSatisfy { $0["version"] as? String == "4" && $0["receiver"] as? String == "on-call" })
            let alerts = messages.compactMap { ($0["alerts"] as? [[String: Any]])?.first }
            #expect(
                alerts.map { $0["labels"] as? [String: String] }
                    == Array(
                        repeating: ["alertname": "served-burning", "app": "shop", "objective": "served", "severity": "page"],
                        count: 2))
            #expect(alerts.first?["endsAt"] as? String == "0001-01-01T00:00:00Z")
            #expect(alerts.last?["endsAt"] as? String != "0001-01-01T00:00:00Z")
            #expect(alerts.first?["startsAt"] as? String == alerts.last?["startsAt"] as? String)

            // Through the API, as its schema documents it; and the application's spec has the rule.
            let checker = ResponseChecker(openAPI: try OpenAPITests())
            try await plane.test { api in
                let response = try await api.request(.get, "/v1/alerts")
                checker.check(
                    method: .get, route: "/v1/alerts", status: response.status, contentType: "application/json",
                    body: response.body)
                #expect(try decodeJSON(AlertList.self, response.body).deliveries.count == 2)
                let app = try await api.request(.get, "/v1/apps/shop")
                checker.check(
                    method: .get, route: "/v1/apps/{app}", status: app.status, contentType: "application/json", body: app.body)
                #expect(try decodeJSON(AppView.self, app.body).spec.alerts?.map(\.name) == ["served-burning"])
            }
            #expect(checker.failures == [] && checker.checked.count == 2, "\(checker.failures)")
        }
    }
}
