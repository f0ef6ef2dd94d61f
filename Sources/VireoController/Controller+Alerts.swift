import AsyncHTTPClient
import Foundation
import NIOCore
import VireoAPI
import VireoModel

/// Where each alert rule stands, and the notifications sent.
struct AlertBook {
    struct State {
        /// Since when the condition has held, while it waits for `alertAfter`.
        var pendingSince: Date?
        var firing: ActiveAlert?
    }

    /// By `app/objective/rule`.
    var states: [String: State] = [:]
    /// The latest deliveries, oldest first.
    var deliveries: [AlertDelivery] = []
    var nextID = 1
    /// The latest delivery to each target of each rule: the next one waits for it, so a
    /// receiver hears of an alert's firing before its resolving.
    var lastDelivery: [String: Task<Void, Never>] = [:]
    static let keptDeliveries = 1_000
}

extension Controller {
    /// Checks every alert rule against its objective's burn rate: a condition that has held for
    /// its `alertAfter` fires, and one that no longer holds resolves; each change notifies the
    /// rule's targets.
    func evaluateAlerts(at time: Date) async {
        var live: Set<String> = []
        // Called every tick: only applications with alert rules are looked at.
        let alerted = model.apps.values.filter { $0.spec.alerts != nil }.sorted { $0.spec.name < $1.spec.name }
        for app in alerted {
            for rule in app.spec.alerts ?? [] {
                let key = "\(app.spec.name)/\(rule.objective)/\(rule.name)"
                live.insert(key)
                guard
                    let burn = await telemetry.burnRate(
                        app: app.spec.name, objective: rule.objective, overSeconds: rule.lookbackSeconds)
                else { continue }
                let lookback = DurationText.format(rule.lookbackSeconds)
                let reason: String? =
                    if burn.judged == 0 {
                        rule.whenNoData ? "no window judged in the last \(lookback)" : nil
                    } else if rule.whenBreaching, rule.holds(burn.rate) {
                        "burn rate \(String(format: "%.3g", burn.rate)) over the last \(lookback) (\(rule.op) \(rule.threshold))"
                    } else {
                        nil
                    }
                var state = alertBook.states[key] ?? AlertBook.State()
                if let reason {
                    if state.firing == nil {
                        let since = state.pendingSince ?? time
                        state.pendingSince = since
                        if time.timeIntervalSince(since) >= rule.alertAfterSeconds {
                            let alert = ActiveAlert(
                                app: app.spec.name, objective: rule.objective, name: rule.name, severity: rule.severity,
                                since: time,
                                reason: reason)
                            state.firing = alert
                            notify(rule, alert, resolvedAt: nil, at: time)
                        }
                    }
                } else {
                    state.pendingSince = nil
                    if let alert = state.firing {
                        state.firing = nil
                        if rule.whenResolved { notify(rule, alert, resolvedAt: time, at: time) }
                    }
                }
                alertBook.states[key] = state
            }
        }
        // Rules no longer in any application are forgotten (without notifying).
        alertBook.states = alertBook.states.filter { live.contains($0.key) }
    }

    /// `GET /v1/alerts`.
    public func alerts() -> AlertList {
        AlertList(
            active: alertBook.states.values.compactMap(\.firing).sorted {
                ($0.app, $0.objective, $0.name) < ($1.app, $1.objective, $1.name)
            },
            deliveries: alertBook.deliveries.reversed())
    }

    /// Sends one notification to each of the rule's targets, in the background, in order.
    private func notify(_ rule: AlertRule, _ alert: ActiveAlert, resolvedAt: Date?, at time: Date) {
        let status = resolvedAt == nil ? "firing" : "resolved"
        logger.info(
            "alert \(status)",
            metadata: [
                "app": "\(alert.app)", "objective": "\(alert.objective)", "alert": "\(alert.name)", "reason": "\(alert.reason)",
            ])
        for target in rule.targets {
            let delivery = AlertDelivery(
                id: alertBook.nextID, time: time, app: alert.app, objective: alert.objective, alert: alert.name, status: status,
                target: target.name, url: target.url)
            alertBook.nextID += 1
            alertBook.deliveries.append(delivery)
            if alertBook.deliveries.count > AlertBook.keptDeliveries { alertBook.deliveries.removeFirst() }
            let body = AlertmanagerMessage(alert, resolvedAt: resolvedAt, receiver: target.name)
            let chain = "\(alert.app)/\(alert.objective)/\(alert.name)/\(target.name)"
            let previous = alertBook.lastDelivery[chain]
            alertBook.lastDelivery[chain] = Task {
                await previous?.value
                await self.deliver(delivery.id, body, to: target.url)
            }
        }
    }

    /// Posts `message` to `url`, trying five times in all with doubling waits between, and
    /// records each attempt.
    private func deliver(_ id: Int, _ message: AlertmanagerMessage, to url: String) async {
        let body: Data
        do {
            body = try JSONEncoder().encode(message)
        } catch {
            record(id) {
                $0.state = .failed; $0.error = "cannot encode: \(error)"
            }
            return
        }
        var wait = settings.alertRetryDelay
        for attempt in 1...5 {
            var request = HTTPClientRequest(url: url)
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: body))
            var status: Int?
            var failure: String?
            do {
                let response = try await outboundHTTP.execute(request, timeout: .seconds(10))
                status = Int(response.status.code)
                _ = try? await response.body.collect(upTo: 1 << 16)
                if !(200..<300).contains(status!) { failure = "HTTP \(status!)" }
            } catch {
                failure = "\(error)"
            }
            let done = failure == nil
            record(id) {
                $0.attempts = attempt
                $0.httpStatus = status
                $0.error = failure
                $0.state = done ? .delivered : attempt == 5 ? .failed : .pending
            }
            if done || attempt == 5 { return }
            try? await Task.sleep(for: wait)
            wait *= 2
        }
    }

    private func record(_ id: Int, _ change: (inout AlertDelivery) -> Void) {
        guard let i = alertBook.deliveries.lastIndex(where: { $0.id == id }) else { return }
        change(&alertBook.deliveries[i])
    }
}

/// A notification in Alertmanager's webhook format (version 4), so existing receivers take it.
struct AlertmanagerMessage: Encodable, Sendable {
    var version = "4"
    var groupKey: String
    var truncatedAlerts = 0
    var status: String
    var receiver: String
    var groupLabels: [String: String]
    var commonLabels: [String: String]
    var commonAnnotations: [String: String]
    var externalURL = ""
    var alerts: [Alert]

    struct Alert: Encodable, Sendable {
        var status: String
        var labels: [String: String]
        var annotations: [String: String]
        var startsAt: String
        var endsAt: String
        var generatorURL = ""
        var fingerprint: String
    }

    init(_ alert: ActiveAlert, resolvedAt: Date?, receiver: String) {
        let labels = ["alertname": alert.name, "app": alert.app, "objective": alert.objective, "severity": alert.severity]
        let annotations = [
            "summary": "\(alert.app)/\(alert.objective): \(alert.name) \(resolvedAt == nil ? "firing" : "resolved")",
            "description": alert.reason,
        ]
        let formatter = ISO8601DateFormatter()
        status = resolvedAt == nil ? "firing" : "resolved"
        self.receiver = receiver
        groupKey = "{}:{alertname=\"\(alert.name)\",app=\"\(alert.app)\",objective=\"\(alert.objective)\"}"
        groupLabels = ["alertname": alert.name]
        commonLabels = labels
        commonAnnotations = annotations
        // Alertmanager's fingerprint is a hash of the labels: FNV-1a of them, sorted.
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in labels.sorted(by: { $0.key < $1.key }).map({ "\($0.key)=\($0.value)" }).joined(separator: ",").utf8 {
            hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3
        }
        alerts = [
            Alert(
                status: status, labels: labels, annotations: annotations, startsAt: formatter.string(from: alert.since),
                endsAt: resolvedAt.map { formatter.string(from: $0) } ?? "0001-01-01T00:00:00Z",
                fingerprint: String(hash, radix: 16))
        ]
    }
}
