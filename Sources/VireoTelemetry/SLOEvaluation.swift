import Foundation
import VireoModel

/// Computes an objective's indicator over one window from recent samples.
public enum Indicator {
    /// The SLI over (from, to] (milliseconds): a latency quantile in seconds, a rate per second,
    /// a gauge's maximum, or a good/total ratio. Nil when the window has no data to judge.
    public static func value(
        _ objective: Objective, _ selector: SeriesSelector, total: SeriesSelector?, in samples: RecentSamples,
        from: Int64, to: Int64
    ) -> Double? {
        switch objective.kind {
        case .responseTime:
            return latencyQuantile(
                objective.quantile ?? 0.99, selector, bucketName: selector.name + "_bucket", samples, from: from, to: to)
        case .throughput:
            guard let increase = sumOfIncreases(selector.name, selector, samples, from: from, to: to) else { return nil }
            return increase / (Double(to - from) / 1000)
        case .capacity:
            return samples.matching(selector.name, selector).compactMap { samples.maximum($0, from: from, to: to) }.max()
        case .ratio:
            guard let total, let all = sumOfIncreases(total.name, total, samples, from: from, to: to), all > 0,
                let good = sumOfIncreases(selector.name, selector, samples, from: from, to: to)
            else { return nil }
            return min(1, good / all)
        }
    }

    /// The value of a PromQL indicator at `time`: a number, or the worst of the series the
    /// expression gives (every series must meet the objective: the largest where it sets a
    /// maximum, the smallest where a minimum). Nil without data, or where the evaluation fails.
    public static func value(
        _ objective: Objective, query: PromQLExpression, in samples: RecentSamples, at time: Int64
    ) -> Double? {
        switch try? PromQLEvaluator(source: samples, time: time).evaluate(query) {
        case .scalar(let value)?: worst(objective, [value])
        case .vector(let series)?: worst(objective, series.map(\.value))
        case nil: nil
        }
    }

    /// The worst of the values an expression gave (NaN left out): every series must meet the
    /// objective. Nil when none is left.
    public static func worst(_ objective: Objective, _ values: [Double]) -> Double? {
        let judged = values.filter { !$0.isNaN }
        switch objective.kind {
        case .responseTime, .capacity: return judged.max()
        case .throughput, .ratio: return judged.min()
        }
    }

    /// The PromQL that asks a Prometheus server, at a window's end, for what Vireo computes from
    /// its own samples over that window: the quantile of the observations made in it (buckets
    /// summed by bound), the counter's rate, the gauge's highest value, good over total.
    public static func promQL(
        _ objective: Objective, _ selector: SeriesSelector, total: SeriesSelector?, windowMs: Int64
    ) -> String {
        let range = "[\(windowMs)ms]"
        switch objective.kind {
        case .responseTime:
            let buckets = SeriesSelector(name: selector.name + "_bucket", matchers: selector.matchers)
            return "histogram_quantile(\(objective.quantile ?? 0.99), sum by (le) (increase(\(buckets.promQL)\(range))))"
        case .throughput:
            return "sum(rate(\(selector.promQL)\(range)))"
        case .capacity:
            return "max(max_over_time(\(selector.promQL)\(range)))"
        case .ratio:
            let total = total ?? selector
            return "clamp_max(sum(increase(\(selector.promQL)\(range))) / sum(increase(\(total.promQL)\(range))), 1)"
        }
    }

    /// Whether a window with indicator `value` is good.
    public static func isGood(_ objective: Objective, _ value: Double) -> Bool {
        switch objective.kind {
        case .responseTime, .capacity: value <= objective.target
        case .throughput, .ratio: value >= objective.target
        }
    }

    static func sumOfIncreases(_ name: String, _ selector: SeriesSelector, _ samples: RecentSamples, from: Int64, to: Int64)
        -> Double?
    {
        let increases = samples.matching(name, selector).compactMap { samples.increase($0, from: from, to: to) }
        return increases.isEmpty ? nil : increases.reduce(0, +)
    }

    /// The quantile of the observations made in the window, over every series of the histogram
    /// the selector matches (buckets added up by bound, as `sum by (le)` would).
    static func latencyQuantile(
        _ q: Double, _ selector: SeriesSelector, bucketName: String, _ samples: RecentSamples, from: Int64, to: Int64
    ) -> Double? {
        var buckets: [(upperBound: Double, count: Double)] = []
        for i in samples.matching(bucketName, selector) {
            guard let le = samples.series[i].upperBound, let increase = samples.increase(i, from: from, to: to) else { continue }
            // Series of other label sets add to the same bounds (`sum by (le)`).
            if let j = buckets.firstIndex(where: { $0.upperBound == le }) {
                buckets[j].count += increase
            } else {
                buckets.append((le, increase))
            }
        }
        buckets.sort { $0.upperBound < $1.upperBound }
        guard let total = buckets.last?.count, total > 0 else { return nil }
        return Histogram(buckets: buckets, sum: .nan, count: total).quantile(q)
    }
}

/// Follows one objective window by window: judges each window once it has ended, keeps the
/// verdicts of the period, and derives the error budget, the burn rates and the state.
public struct ObjectiveTracker: Sendable {
    public let objective: Objective
    let indicator: Source
    let windowMs: Int64

    /// What the indicator is computed from.
    enum Source: Sendable {
        case selectors(SeriesSelector, total: SeriesSelector?)
        case query(PromQLExpression)
        /// A query a Prometheus source answers (`promQL`); Vireo's own samples have no part.
        case prometheus(String)
    }
    /// Verdicts of the period, oldest first, from `first`; with running counts so a burn rate
    /// over any lookback is two subtractions.
    private var ends: [Int64] = []
    private var cumulativeBad: [Int32] = []
    private var cumulativeJudged: [Int32] = []
    private var first = 0
    private var lastSLI: Double?
    private var nextEnd: Int64?
    public private(set) var state: SLOState = .unknown
    public private(set) var stateChangedAt: Int64?
    private var unsaved: [WindowVerdict] = []

    /// A short stable digest of the objective's definition: verdicts judged under another
    /// definition are not restored.
    public let fingerprint: String

    static func fingerprint(of objective: Objective) -> String {
        let data = (try? JSONEncoder.sorted.encode(objective)) ?? Data()
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a
        for byte in data {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        return String(hash, radix: 16)
    }

    /// Fails when a selector or expression of the objective does not parse (validation has
    /// checked them). With `source`, the indicator is a query to that Prometheus server.
    public init(_ objective: Objective, source: TelemetrySource? = nil) throws(SelectorError) {
        self.objective = objective
        windowMs = max(1, Int64((objective.windowSeconds * 1000).rounded()))
        fingerprint = Self.fingerprint(of: objective)
        if source != nil {
            if objective.language == .promql {
                indicator = .prometheus(objective.metric)
            } else {
                indicator = .prometheus(
                    Indicator.promQL(
                        objective, try SeriesSelector(parsing: objective.metric),
                        total: try objective.totalMetric.map { (text) throws(SelectorError) in try SeriesSelector(parsing: text)
                        },
                        windowMs: windowMs))
            }
            return
        }
        if objective.language == .promql {
            do {
                indicator = .query(try PromQLExpression(parsing: objective.metric))
            } catch {
                throw SelectorError(error.description)
            }
        } else {
            indicator = .selectors(
                try SeriesSelector(parsing: objective.metric),
                total: try objective.totalMetric.map { (text) throws(SelectorError) in try SeriesSelector(parsing: text) })
        }
    }

    /// The query a Prometheus source answers for each window, when the indicator is read from one.
    public var prometheusQuery: String? {
        if case .prometheus(let query) = indicator { query } else { nil }
    }

    /// Windows in the period.
    var periodWindows: Int { max(1, Int((objective.periodSeconds * 1000 / Double(windowMs)).rounded())) }

    /// Judges every window that ended at least `delayMs` before `now` (windows are aligned to
    /// multiples of their length since the epoch). Returns the state it left, when it changed.
    @discardableResult
    public mutating func evaluate(_ samples: RecentSamples, now: Int64, delayMs: Int64 = 1_000) -> SLOState? {
        let before = state
        for end in dueEnds(now: now, delayMs: delayMs) {
            let sli: Double? =
                switch indicator {
                case .selectors(let selector, let total):
                    Indicator.value(objective, selector, total: total, in: samples, from: end - windowMs, to: end)
                case .query(let query):
                    Indicator.value(objective, query: query, in: samples, at: end)
                case .prometheus:
                    nil
                }
            judge(end: end, sli: sli)
        }
        return changed(from: before, now: now)
    }

    /// The ends of the windows to judge at `now`, oldest first: those that ended at least
    /// `delayMs` before it and are not judged yet.
    public mutating func dueEnds(now: Int64, delayMs: Int64 = 1_000) -> StrideThrough<Int64> {
        let ready = now - delayMs
        // The first window judged is the first one that starts after tracking began.
        var end = nextEnd ?? ((ready / windowMs) + 2) * windowMs
        // After a long pause (a restart), judge at most the last hundred windows.
        if ready - end > 100 * windowMs { end = (ready / windowMs - 99) * windowMs }
        nextEnd = end
        return stride(from: end, through: ready, by: Int(windowMs))
    }

    /// Judges windows whose indicators were read elsewhere (a Prometheus source), oldest first;
    /// windows already judged are passed over. Returns the state it left, when it changed.
    @discardableResult
    public mutating func judge(_ results: [(end: Int64, sli: Double?)], now: Int64) -> SLOState? {
        let before = state
        for result in results where result.end >= (nextEnd ?? .min) { judge(end: result.end, sli: result.sli) }
        return changed(from: before, now: now)
    }

    private mutating func changed(from before: SLOState, now: Int64) -> SLOState? {
        guard state != before else { return nil }
        stateChangedAt = now
        return before
    }

    /// How much history judging a window needs, in milliseconds: the window, or what the
    /// expression reads back from its end when that is longer.
    public var horizonMs: Int64 {
        switch indicator {
        case .selectors, .prometheus: windowMs
        case .query(let query): max(windowMs, query.lookbackMs)
        }
    }

    private mutating func judge(end: Int64, sli: Double?) {
        record(end: end, sli: sli)
        unsaved.append(WindowVerdict(end: end, sli: sli, state: state))
        nextEnd = end + windowMs
    }

    /// Takes back the verdicts of an earlier run (oldest first), as if they had been judged here:
    /// a restarted controller keeps each objective's budget, burn rates and state.
    public mutating func restore(_ verdicts: [WindowVerdict]) {
        var previous: SLOState?
        for verdict in verdicts where verdict.end > (ends.last ?? .min) {
            record(end: verdict.end, sli: verdict.sli)
            if let previous, previous != verdict.state { stateChangedAt = verdict.end }
            previous = verdict.state
        }
        if let last = ends.last { nextEnd = max(nextEnd ?? 0, last + windowMs) }
    }

    /// Verdicts judged since the last call, for the store.
    public mutating func takeUnsaved() -> [WindowVerdict] {
        defer { unsaved.removeAll() }
        return unsaved
    }

    private mutating func record(end: Int64, sli: Double?) {
        lastSLI = sli
        let bad: Int32 = sli.map { Indicator.isGood(objective, $0) ? 0 : 1 } ?? 0
        let judged: Int32 = sli == nil ? 0 : 1
        ends.append(end)
        cumulativeBad.append((cumulativeBad.last ?? 0) + bad)
        cumulativeJudged.append((cumulativeJudged.last ?? 0) + judged)
        // Keep the period; compact now and then rather than on every window.
        if ends.count - first > periodWindows { first = ends.count - periodWindows }
        if first > 4_096, first * 2 > ends.count {
            ends.removeFirst(first)
            cumulativeBad.removeFirst(first)
            cumulativeJudged.removeFirst(first)
            first = 0
        }
        state = deriveState()
    }

    /// (bad, judged) over the last `windows` windows.
    private func counts(lastWindows windows: Int) -> (bad: Int, judged: Int) {
        guard ends.count > first else { return (0, 0) }
        let last = ends.count - 1
        let from = max(first, last - windows + 1)
        let bad = Int(cumulativeBad[last]) - (from > 0 ? Int(cumulativeBad[from - 1]) : 0)
        let judged = Int(cumulativeJudged[last]) - (from > 0 ? Int(cumulativeJudged[from - 1]) : 0)
        return (bad, judged)
    }

    /// How many windows of the last `seconds` were judged (not empty).
    public func judgedWindows(overSeconds seconds: Double) -> Int {
        counts(lastWindows: max(1, Int((seconds * 1000 / Double(windowMs)).rounded()))).judged
    }

    /// The budget burn rate over the last `seconds`: the bad fraction of judged windows divided
    /// by the budget's fraction.
    public func burnRate(overSeconds seconds: Double) -> Double {
        let windows = max(1, Int((seconds * 1000 / Double(windowMs)).rounded()))
        let (bad, judged) = counts(lastWindows: windows)
        guard judged > 0 else { return 0 }
        // Validation keeps the goal below 1, so the budget is never empty.
        return Double(bad) / Double(judged) / max(objective.errorBudget, 1e-9)
    }

    private func deriveState() -> SLOState {
        guard counts(lastWindows: periodWindows).judged > 0 else { return .unknown }
        for alert in objective.burnRateAlerts
        where burnRate(overSeconds: alert.longSeconds) >= alert.factor
            && burnRate(overSeconds: alert.shortSeconds) >= alert.factor
        {
            return .breaching
        }
        let lastBad = counts(lastWindows: 1).bad > 0
        let shortest = objective.burnRateAlerts.map(\.shortSeconds).min() ?? objective.windowSeconds
        return lastBad || burnRate(overSeconds: shortest) > 1 ? .warning : .ok
    }

    public func status() -> ObjectiveStatus {
        let period = counts(lastWindows: periodWindows)
        let windowsInPeriod = ends.count - first
        let allowedBad = objective.errorBudget * Double(periodWindows)
        let remaining = 1 - Double(period.bad) / max(allowedBad, 1e-9)
        var lookbacks: [Double] = []
        for alert in objective.burnRateAlerts {
            for seconds in [alert.shortSeconds, alert.longSeconds] where !lookbacks.contains(seconds) {
                lookbacks.append(seconds)
            }
        }
        return ObjectiveStatus(
            name: objective.name, kind: objective.kind, state: state,
            stateChangedAt: stateChangedAt.map { Date(timeIntervalSince1970: Double($0) / 1000) }, sli: lastSLI,
            target: objective.target, goodWindows: period.judged - period.bad, badWindows: period.bad,
            emptyWindows: windowsInPeriod - period.judged, errorBudgetRemaining: remaining,
            burnRates: lookbacks.sorted().map { .init(lookbackSeconds: $0, rate: burnRate(overSeconds: $0)) },
            lastWindowEnd: ends.last.map { Date(timeIntervalSince1970: Double($0) / 1000) })
    }
}

/// One judged window: when it ended, its indicator (nil: no data), and the objective's state after it.
public struct WindowVerdict: Sendable, Equatable {
    public var end: Int64
    public var sli: Double?
    public var state: SLOState
    public init(end: Int64, sli: Double?, state: SLOState) {
        self.end = end
        self.sli = sli
        self.state = state
    }
}

extension JSONEncoder {
    static var sorted: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return encoder
    }
}
