import Foundation

/// An application: its VMs, where its telemetry comes from, and what "good" means for it.
///
/// The service-level model ships with the application (its manifest), so Vireo can judge the
/// application by its own objectives rather than by VM counters.
public struct ApplicationSpec: Sendable, Codable, Equatable {
    public var name: String
    /// The application's VMs; each carries `app = name`.
    public var vms: [VMSpec]
    public var telemetry: TelemetrySpec
    public var objectives: [Objective]
    /// Burn-rate alerts on the objectives (from OpenSLO alert policies); nil: none.
    public var alerts: [AlertRule]?

    public init(
        name: String, vms: [VMSpec] = [], telemetry: TelemetrySpec = TelemetrySpec(), objectives: [Objective] = [],
        alerts: [AlertRule]? = nil
    ) {
        self.name = name
        self.vms = vms
        self.telemetry = telemetry
        self.objectives = objectives
        self.alerts = alerts
    }

    public func objective(named name: String) -> Objective? { objectives.first { $0.name == name } }
}

/// How Vireo reads an application's signals.
public struct TelemetrySpec: Sendable, Codable, Equatable {
    /// Prometheus text scraped from each VM.
    public var scrape: ScrapeTarget?
    /// An HTTP request the agent sends to each VM, timed from outside the guest.
    public var probe: ProbeTarget?
    /// The metrics the application exports, with their types: objectives may only use these
    /// and Vireo's own (`MetricCatalogue.builtIn`).
    public var metrics: [MetricDeclaration]
    /// Where the indicators are read instead, when not from Vireo's own scrapes: an existing
    /// Prometheus server, asked through its HTTP query API.
    public var source: TelemetrySource?

    public init(
        scrape: ScrapeTarget? = nil, probe: ProbeTarget? = nil, metrics: [MetricDeclaration] = [], source: TelemetrySource? = nil
    ) {
        self.scrape = scrape
        self.probe = probe
        self.metrics = metrics
        self.source = source
    }
}

/// A system that already has an application's metrics, read in place of Vireo's scrapes.
public struct TelemetrySource: Sendable, Codable, Equatable {
    public var prometheus: PrometheusServer

    public init(prometheus: PrometheusServer) { self.prometheus = prometheus }
}

/// A Prometheus server's HTTP API: each window's indicator is an instant query at the window's end.
public struct PrometheusServer: Sendable, Codable, Equatable {
    /// The server's base URL (`http://host:9090`, or with a path prefix).
    public var url: String
    public var timeoutSeconds: Double

    public init(url: String, timeoutSeconds: Double = 5) {
        self.url = url
        self.timeoutSeconds = timeoutSeconds
    }
}

/// An HTTP endpoint in each of the application's VMs, read on an interval: the metrics to scrape,
/// or the request to probe.
public struct TelemetryEndpoint: Sendable, Codable, Equatable {
    public var port: Int
    public var path: String
    public var intervalSeconds: Double
    public var timeoutSeconds: Double

    public init(port: Int, path: String, intervalSeconds: Double = 5, timeoutSeconds: Double = 2) {
        self.port = port
        self.path = path
        self.intervalSeconds = intervalSeconds
        self.timeoutSeconds = timeoutSeconds
    }
}

public typealias ScrapeTarget = TelemetryEndpoint
public typealias ProbeTarget = TelemetryEndpoint

/// The type of a metric family, as the Prometheus text format declares it.
public enum MetricType: String, Sendable, Codable, CaseIterable {
    case counter, gauge, histogram, summary, untyped
}

public struct MetricDeclaration: Sendable, Codable, Equatable {
    public var name: String
    public var type: MetricType
    public init(name: String, type: MetricType) {
        self.name = name
        self.type = type
    }
}

/// Metrics Vireo itself produces for every application, whatever the application exports.
public enum MetricCatalogue {
    /// Probe latency in seconds (a histogram built by the agent from its probes).
    public static let probeDuration = "vireo_probe_duration_seconds"
    /// Probes sent and probes that got a 2xx answer in time (counters).
    public static let probeTotal = "vireo_probe_total"
    public static let probeSuccess = "vireo_probe_success_total"
    /// CPU time the VM's hypervisor process used (counter, seconds).
    public static let vmCPUSeconds = "vireo_vm_cpu_seconds_total"
    /// Resident memory of the VM's hypervisor process (gauge, bytes).
    public static let vmMemoryBytes = "vireo_vm_memory_rss_bytes"

    public static let builtIn: [MetricDeclaration] = [
        .init(name: probeDuration, type: .histogram), .init(name: probeTotal, type: .counter),
        .init(name: probeSuccess, type: .counter), .init(name: vmCPUSeconds, type: .counter),
        .init(name: vmMemoryBytes, type: .gauge),
    ]
}

/// One service-level objective in the triad (response time, throughput, capacity), or a
/// good/total ratio (OpenSLO's ratio metric).
///
/// Time is cut into windows of `windowSeconds`; a window is good when its indicator meets the
/// target. The objective holds when at least `goal` of the windows in `periodSeconds` are good;
/// the rest, `1 - goal`, is the error budget.
public struct Objective: Sendable, Codable, Equatable {
    public enum Kind: String, Sendable, Codable, CaseIterable {
        /// `quantile` of a latency histogram at most `target` seconds.
        case responseTime = "response-time"
        /// Rate of a counter at least `target` per second.
        case throughput
        /// A gauge (saturation, queue depth) at most `target` (its maximum over the window).
        case capacity
        /// Increase of `metric` (good events) over increase of `totalMetric` at least `target`.
        case ratio
    }

    public var name: String
    public var kind: Kind
    /// Metric selector: a name with optional label matchers, `name{label="value"}` — or, with
    /// `language` `.promql`, a PromQL expression.
    public var metric: String
    /// How `metric` is read. Nil: a selector, over whose series each window computes what `kind`
    /// says (a quantile, a rate, a maximum, a ratio). `.promql`: an expression whose value at each
    /// window's end is the indicator (`kind` then gives its direction and meaning).
    public var language: SLILanguage?
    /// For `ratio`: the selector that counts all events.
    public var totalMetric: String?
    /// For `responseTime`: the quantile, in (0, 1).
    public var quantile: Double?
    public var target: Double
    public var windowSeconds: Double
    public var goal: Double
    public var periodSeconds: Double
    public var burnRateAlerts: [BurnRateAlert]

    public init(
        name: String, kind: Kind, metric: String, totalMetric: String? = nil, quantile: Double? = nil, target: Double,
        windowSeconds: Double = 60, goal: Double = 0.99, periodSeconds: Double = 30 * 86_400,
        burnRateAlerts: [BurnRateAlert] = BurnRateAlert.defaults, language: SLILanguage? = nil
    ) {
        self.language = language
        self.name = name
        self.kind = kind
        self.metric = metric
        self.totalMetric = totalMetric
        self.quantile = quantile
        self.target = target
        self.windowSeconds = windowSeconds
        self.goal = goal
        self.periodSeconds = periodSeconds
        self.burnRateAlerts = burnRateAlerts
    }

    /// The fraction of windows that may be bad.
    public var errorBudget: Double { 1 - goal }
}

/// The language of an objective's indicator.
public enum SLILanguage: String, Sendable, Codable, Equatable {
    /// A PromQL expression (Vireo's subset; docs/apps.md, "PromQL").
    case promql
}

/// Multi-window burn-rate alerting: the objective is breaching when the budget burns faster than
/// `factor` over both the long and the short lookback (the short one makes it stop quickly once
/// the problem is gone).
public struct BurnRateAlert: Sendable, Codable, Equatable {
    public var longSeconds: Double
    public var shortSeconds: Double
    public var factor: Double

    public init(longSeconds: Double, shortSeconds: Double, factor: Double) {
        self.longSeconds = longSeconds
        self.shortSeconds = shortSeconds
        self.factor = factor
    }

    /// The usual pairs for a 30-day budget: 2% of it in an hour, 5% in six hours.
    public static let defaults: [BurnRateAlert] = [
        .init(longSeconds: 3_600, shortSeconds: 300, factor: 14.4),
        .init(longSeconds: 21_600, shortSeconds: 1_800, factor: 6),
    ]
}

/// Where an objective stands.
public enum SLOState: String, Sendable, Codable, CaseIterable {
    /// No window judged yet.
    case unknown
    case ok
    /// The last window was bad, or the budget burns faster than it can last, but no alert pair
    /// fires.
    case warning
    /// A burn-rate alert fires.
    case breaching
}

extension SLOState {
    /// How bad a state is, to pick the worst of several: `breaching`, then `warning`, then
    /// `unknown` (not yet known to be met), then `ok`.
    public var severity: Int {
        switch self {
        case .ok: 0
        case .unknown: 1
        case .warning: 2
        case .breaching: 3
        }
    }

    /// The worst of `states`; `unknown` when there are none (an application without objectives,
    /// or none judged).
    public static func worst(_ states: some Sequence<SLOState>) -> SLOState {
        states.max { $0.severity < $1.severity } ?? .unknown
    }
}

/// The controller's record of an application.
public struct AppRecord: Sendable, Codable, Equatable {
    public var spec: ApplicationSpec
    public var createdAt: Date
    public var updatedAt: Date
    /// Bumped whenever the spec changes.
    public var generation: Int

    public init(spec: ApplicationSpec, createdAt: Date, updatedAt: Date, generation: Int = 1) {
        self.spec = spec
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.generation = generation
    }

    public var name: String { spec.name }
}

/// Durations as people write them: `500ms`, `5s`, `5m`, `1h`, `7d`, `1h30m`, or a number of seconds.
extension Duration {
    /// The duration in seconds, as a `Double`.
    public var secondsValue: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

public enum DurationText {
    static let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3_600), ("d", 86_400), ("w", 604_800)]

    /// Seconds, or nil if `text` is not a duration.
    public static func seconds(_ text: String) -> Double? {
        if let plain = decimal(Substring(text)), plain.isFinite { return plain }
        var rest = Substring(text)
        var total = 0.0
        guard !rest.isEmpty else { return nil }
        while !rest.isEmpty {
            let digits = rest.prefix { $0.isASCII && ($0.isNumber || $0 == ".") }
            guard let value = decimal(digits) else { return nil }
            rest = rest.dropFirst(digits.count)
            let unitText = rest.prefix { $0.isLetter }
            guard let unit = units.first(where: { $0.0 == unitText }) else { return nil }
            rest = rest.dropFirst(unitText.count)
            total += value * unit.1
        }
        return total.isFinite ? total : nil
    }

    /// The number `text` writes as ASCII digits with an optional fraction (`5`, `0.25`); nil for
    /// anything else, such as `+5`, `.5`, `5.`, `1e3` or `inf`, which `Double` would also take.
    public static func decimal(_ text: Substring) -> Double? {
        let parts = text.split(separator: ".", maxSplits: 2, omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0.isASCII && $0.isNumber } })
        else { return nil }
        return Double(text)
    }

    /// The shortest exact rendering: `90s` → `1m30s`, `0.25` → `250ms`.
    public static func format(_ seconds: Double) -> String {
        if seconds < 1, seconds > 0 { return "\(Int((seconds * 1000).rounded()))ms" }
        var rest = Int(seconds.rounded())
        if rest == 0 { return "0s" }
        var text = ""
        for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] where rest >= size {
            text += "\(rest / size)\(unit)"
            rest %= size
        }
        return text
    }
}

/// Where one objective stands now: what `vireo app show` prints and the planner reads.
public struct ObjectiveStatus: Sendable, Codable, Equatable {
    public struct BurnRate: Sendable, Codable, Equatable {
        public var lookbackSeconds: Double
        /// How fast the budget burns over the lookback: 1 uses it up exactly in the period.
        public var rate: Double
        public init(lookbackSeconds: Double, rate: Double) {
            self.lookbackSeconds = lookbackSeconds
            self.rate = rate
        }
    }

    public var name: String
    public var kind: Objective.Kind
    public var state: SLOState
    public var stateChangedAt: Date?
    /// The indicator over the last judged window (seconds, per second, a gauge's value or a
    /// ratio); nil when that window had no data.
    public var sli: Double?
    public var target: Double
    /// Windows judged in the period so far.
    public var goodWindows: Int
    public var badWindows: Int
    /// Windows without data (no scrape arrived, no requests): neither good nor bad.
    public var emptyWindows: Int
    /// The part of the period's budget (bad windows allowed) still unspent: 1 is all of it,
    /// 0 none, below 0 overspent.
    public var errorBudgetRemaining: Double
    public var burnRates: [BurnRate]
    /// End of the last judged window.
    public var lastWindowEnd: Date?

    public init(
        name: String, kind: Objective.Kind, state: SLOState, stateChangedAt: Date?, sli: Double?, target: Double,
        goodWindows: Int, badWindows: Int, emptyWindows: Int, errorBudgetRemaining: Double, burnRates: [BurnRate],
        lastWindowEnd: Date?
    ) {
        self.name = name
        self.kind = kind
        self.state = state
        self.stateChangedAt = stateChangedAt
        self.sli = sli
        self.target = target
        self.goodWindows = goodWindows
        self.badWindows = badWindows
        self.emptyWindows = emptyWindows
        self.errorBudgetRemaining = errorBudgetRemaining
        self.burnRates = burnRates
        self.lastWindowEnd = lastWindowEnd
    }
}

/// A burn-rate alert on one objective: an OpenSLO `AlertPolicy` with its `AlertCondition` and
/// notification targets.
public struct AlertRule: Sendable, Codable, Equatable {
    /// The objective it watches.
    public var objective: String
    /// The alert policy's name.
    public var name: String
    public var severity: String
    /// How the burn rate over the lookback compares with `threshold` while the condition holds:
    /// `gte`, `gt`, `lte` or `lt`.
    public var op: String
    public var threshold: Double
    public var lookbackSeconds: Double
    /// How long the condition must hold before the alert fires.
    public var alertAfterSeconds: Double
    /// Whether the condition firing notifies (OpenSLO `alertWhenBreaching`), its end notifies
    /// (`alertWhenResolved`), and a lookback without judged windows fires (`alertWhenNoData`).
    public var whenBreaching: Bool
    public var whenResolved: Bool
    public var whenNoData: Bool
    public var targets: [AlertTarget]

    public init(
        objective: String, name: String, severity: String, op: String, threshold: Double, lookbackSeconds: Double,
        alertAfterSeconds: Double, whenBreaching: Bool = true, whenResolved: Bool = true, whenNoData: Bool = false,
        targets: [AlertTarget]
    ) {
        self.objective = objective
        self.name = name
        self.severity = severity
        self.op = op
        self.threshold = threshold
        self.lookbackSeconds = lookbackSeconds
        self.alertAfterSeconds = alertAfterSeconds
        self.whenBreaching = whenBreaching
        self.whenResolved = whenResolved
        self.whenNoData = whenNoData
        self.targets = targets
    }

    /// Whether `rate` meets the condition.
    public func holds(_ rate: Double) -> Bool {
        switch op {
        case "gt": rate > threshold
        case "lte": rate <= threshold
        case "lt": rate < threshold
        default: rate >= threshold
        }
    }
}

/// Where an alert's notifications go: a webhook that takes Alertmanager's format.
public struct AlertTarget: Sendable, Codable, Equatable {
    public var name: String
    public var url: String

    public init(name: String, url: String) {
        self.name = name
        self.url = url
    }
}
