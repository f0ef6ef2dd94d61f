import Foundation
import VireoModel

/// A change of an objective's state, for events and logs.
public struct SLOChange: Sendable, Equatable {
    public var app: String
    public var objective: String
    public var from: SLOState
    public var to: SLOState
    public var status: ObjectiveStatus
}

/// Calls `body` on every element of `elements`, in place, on every core when there are enough
/// elements to be worth it, and returns what the calls gave, in order. Each call may change only
/// its own element.
func updateInParallel<Element, Result>(_ elements: inout [Element], _ body: @Sendable (Int, inout Element) -> Result)
    -> [Result]
{
    let count = elements.count
    let cores = ProcessInfo.processInfo.activeProcessorCount
    guard cores > 1, count >= 64 else { return elements.indices.map { body($0, &elements[$0]) } }
    var results = [Result?](repeating: nil, count: count)
    elements.withUnsafeMutableBufferPointer { elements in
        results.withUnsafeMutableBufferPointer { results in
            // Threads write disjoint elements of the two buffers: no element is shared.
            let shared = DisjointElements(elements: elements, results: results)
            // Contiguous runs (neighbours written by one thread), several per core so that one
            // slow run does not leave a core idle.
            let runs = min(count, cores * 8)
            DispatchQueue.concurrentPerform(iterations: runs) { run in
                for i in (count * run / runs)..<(count * (run + 1) / runs) {
                    shared.results[i] = body(i, &shared.elements[i])
                }
            }
        }
    }
    return results.map { $0! }
}

private struct DisjointElements<Element, Result>: @unchecked Sendable {
    let elements: UnsafeMutableBufferPointer<Element>
    let results: UnsafeMutableBufferPointer<Result?>
}

/// Takes in every application's samples, keeps what evaluation needs in memory, writes them to
/// the series store in batches, and judges each objective window by window.
///
/// Its own actor, so ingestion and evaluation never wait on the controller's writes.
public actor TelemetryEngine {
    struct AppState {
        var spec: ApplicationSpec
        var samples = RecentSamples()
        var trackers: [ObjectiveTracker]
        /// How far back evaluation looks: the longest window, twice, plus a scrape interval.
        var horizonMs: Int64
        /// Last time a sample arrived, and the last error scraping or pushing it.
        var lastSampleAt: Int64?
        var lastError: String?
        /// After a source failed to answer, not asked again before this time.
        var askAgainAt: Int64 = 0
    }

    public let store: any SeriesArchive
    private var apps: [String: AppState] = [:]
    private var pending: [IngestSample] = []
    /// Judged windows not yet in the store.
    private var pendingVerdicts: [(app: String, objective: String, fingerprint: String, verdict: WindowVerdict)] = []
    /// The batch being written, if any.
    private var writing: Task<Void, any Error>?
    /// Samples waiting for `flush` beyond which `ingest` flushes at once.
    public let flushThreshold: Int
    /// How long after a window ends it is judged, so samples scraped at its end can arrive.
    public let judgeDelayMs: Int64
    public private(set) var ingested = 0
    /// Bumped whenever an objective's status can have changed (a window judged, the applications
    /// configured): callers that mirror statuses refresh only when it moved.
    public private(set) var statusVersion = 0

    public init(store: any SeriesArchive, flushThreshold: Int = 50_000, judgeDelayMs: Int64 = 1_000) {
        self.store = store
        self.flushThreshold = flushThreshold
        self.judgeDelayMs = judgeDelayMs
    }

    /// Makes the engine follow exactly `specs`: new applications start with no data, changed
    /// objectives start afresh, unchanged ones keep their history, removed ones are forgotten.
    public func configure(_ specs: [ApplicationSpec]) {
        var next: [String: AppState] = [:]
        for spec in specs {
            var state = apps[spec.name] ?? AppState(spec: spec, trackers: [], horizonMs: 0)
            // Judged windows are kept while the objective and where its indicator comes from are.
            let old = state.spec.telemetry.source == spec.telemetry.source ? state.trackers : []
            state.trackers = spec.objectives.compactMap { objective in
                if let kept = old.first(where: { $0.objective == objective }) { return kept }
                return try? ObjectiveTracker(objective, source: spec.telemetry.source)
            }
            state.spec = spec
            let longest = state.trackers.map { Double($0.horizonMs) / 1000 }.max() ?? 60
            let scrape = max(spec.telemetry.scrape?.intervalSeconds ?? 0, spec.telemetry.probe?.intervalSeconds ?? 0)
            state.horizonMs = Int64((2 * longest + scrape + 5) * 1000)
            next[spec.name] = state
        }
        apps = next
        statusVersion += 1
    }

    /// Takes back every objective's judged windows of its period from the store (after a
    /// restart), for objectives whose definition has not changed since.
    public func restore(now: Int64) async throws {
        var found: [String: [[WindowVerdict]]] = [:]
        for (name, state) in apps {
            var perTracker: [[WindowVerdict]] = []
            for tracker in state.trackers {
                let since = now - Int64(tracker.objective.periodSeconds * 1000)
                perTracker.append(
                    try await store.verdicts(
                        app: name, objective: tracker.objective.name, fingerprint: tracker.fingerprint, since: since))
            }
            found[name] = perTracker
        }
        // Applied without suspending, so nothing sees an application half restored.
        for (name, perTracker) in found {
            guard var state = apps.removeValue(forKey: name) else { continue }
            for (i, verdicts) in perTracker.enumerated() where i < state.trackers.count { state.trackers[i].restore(verdicts) }
            apps[name] = state
        }
    }

    /// Takes in samples of `app`. Samples of an application the engine does not follow (one just
    /// deleted, or not yet configured) are dropped: the controller checks applications first.
    public func ingest(app: String, _ samples: [(name: String, labels: Labels, time: Int64, value: Double)]) async throws {
        guard apps[app] != nil else { return }
        for s in samples {
            apps[app]!.samples.append(name: s.name, labels: s.labels, at: s.time, value: s.value)
            pending.append(IngestSample(app: app, name: s.name, labels: s.labels, time: s.time, value: s.value))
        }
        if let last = samples.map(\.time).max() { apps[app]!.lastSampleAt = max(apps[app]!.lastSampleAt ?? 0, last) }
        ingested += samples.count
        if pending.count >= flushThreshold {
            // One write in flight while the next batch gathers; a second full batch waits for it.
            if let running = writing { try await running.value }
            let batch = pending
            pending.removeAll(keepingCapacity: true)
            let store = self.store
            writing = Task { try await store.ingest(batch) }
        }
    }

    /// Records why samples of `app` could not be had (a scrape that failed), for `app show`.
    public func noteError(app: String, _ message: String?) {
        apps[app]?.lastError = message
    }

    /// Writes the buffered samples to the store.
    public func flush() async throws {
        if let running = writing {
            writing = nil
            try await running.value
        }
        if !pendingVerdicts.isEmpty {
            let verdicts = pendingVerdicts
            pendingVerdicts.removeAll()
            try await store.recordVerdicts(verdicts)
        }
        guard !pending.isEmpty else { return }
        let batch = pending
        pending.removeAll(keepingCapacity: true)
        try await store.ingest(batch)
    }

    /// Judges every window that has ended, drops samples evaluation no longer needs, and returns
    /// the objectives whose state changed.
    ///
    /// Applications are judged on every core: each reads only its own samples and changes only its
    /// own trackers.
    public func evaluate(now: Int64) -> [SLOChange] {
        let names = apps.keys.sorted()
        // Taken out of the dictionary so each is uniquely owned: mutating a copy would copy every
        // series buffer.
        var states = names.map { apps.removeValue(forKey: $0)! }
        let delayMs = judgeDelayMs
        let judged = updateInParallel(&states) { i, state in Self.judge(&state, app: names[i], now: now, delayMs: delayMs) }
        var changes: [SLOChange] = []
        for (i, name) in names.enumerated() {
            changes += judged[i].changes
            statusVersion += judged[i].verdicts.count
            pendingVerdicts += judged[i].verdicts
            apps[name] = states[i]
        }
        return changes
    }

    /// What judging one application gave.
    struct Judged {
        var changes: [SLOChange] = []
        var verdicts: [(app: String, objective: String, fingerprint: String, verdict: WindowVerdict)] = []
    }

    static func judge(_ state: inout AppState, app: String, now: Int64, delayMs: Int64) -> Judged {
        var judged = Judged()
        // A Prometheus source's windows are judged as its answers arrive (`judge(_:now:)`).
        for i in state.trackers.indices where state.spec.telemetry.source == nil {
            if let from = state.trackers[i].evaluate(state.samples, now: now, delayMs: delayMs) {
                let tracker = state.trackers[i]
                judged.changes.append(
                    SLOChange(
                        app: app, objective: tracker.objective.name, from: from, to: tracker.state, status: tracker.status()))
            }
            for verdict in state.trackers[i].takeUnsaved() {
                judged.verdicts.append((app, state.trackers[i].objective.name, state.trackers[i].fingerprint, verdict))
            }
        }
        state.samples.trim(before: now - state.horizonMs)
        return judged
    }

    /// The windows of objectives read from a Prometheus source that are due at `now`, one query
    /// per objective: ask the source, then hand the answers to `judge(_:now:)`. A window is asked
    /// for again until it is judged.
    public func dueQueries(now: Int64) -> [SourceQuery] {
        var queries: [SourceQuery] = []
        // Called every tick: only applications read from a source are looked at, and the names
        // are taken out first so that changing a tracker does not copy the dictionary.
        let due = apps.compactMap { name, state in
            state.askAgainAt <= now ? state.spec.telemetry.source.map { (name, $0.prometheus) } : nil
        }
        for (name, server) in due {
            for i in apps[name]!.trackers.indices {
                // The oldest ten: a source that was away is caught up with a few rounds.
                let ends = Array(apps[name]!.trackers[i].dueEnds(now: now, delayMs: judgeDelayMs).prefix(10))
                let tracker = apps[name]!.trackers[i]
                guard !ends.isEmpty, let query = tracker.prometheusQuery else { continue }
                queries.append(
                    SourceQuery(
                        app: name, objective: tracker.objective, fingerprint: tracker.fingerprint, server: server, query: query,
                        ends: ends))
            }
        }
        return queries
    }

    /// Judges the windows a source answered for: each answer's values are the series its query
    /// gave at a window's end, the worst of them the indicator (none: no data). An answer that
    /// failed judges nothing; its error is the application's last one. Answers for objectives
    /// that changed meanwhile are dropped. Returns the objectives whose state changed.
    public func judge(_ answers: [SourceAnswer], now: Int64) -> [SLOChange] {
        var changes: [SLOChange] = []
        for answer in answers {
            guard var state = apps.removeValue(forKey: answer.app) else { continue }
            defer { apps[answer.app] = state }
            guard let i = state.trackers.firstIndex(where: { $0.fingerprint == answer.fingerprint }) else { continue }
            switch answer.result {
            case .failure(let error):
                state.lastError = "\(answer.objective): \(error.message)"
                state.askAgainAt = now + 5_000
                continue
            case .success(let windows):
                state.lastError = nil
                state.lastSampleAt = now
                let results = windows.map { (end: $0.end, sli: Indicator.worst(state.trackers[i].objective, $0.values)) }
                if let from = state.trackers[i].judge(results, now: now) {
                    let tracker = state.trackers[i]
                    changes.append(
                        SLOChange(
                            app: answer.app, objective: tracker.objective.name, from: from, to: tracker.state,
                            status: tracker.status()))
                }
                for verdict in state.trackers[i].takeUnsaved() {
                    statusVersion += 1
                    pendingVerdicts.append((answer.app, answer.objective, answer.fingerprint, verdict))
                }
            }
        }
        return changes
    }

    /// An objective's budget burn rate over the last `seconds` and how many windows were judged
    /// in them; nil for an objective the engine does not follow.
    public func burnRate(app: String, objective: String, overSeconds seconds: Double) -> (rate: Double, judged: Int)? {
        guard let tracker = apps[app]?.trackers.first(where: { $0.objective.name == objective }) else { return nil }
        return (tracker.burnRate(overSeconds: seconds), tracker.judgedWindows(overSeconds: seconds))
    }

    public struct AppStatus: Sendable, Codable, Equatable {
        public var objectives: [ObjectiveStatus]
        public var lastSampleAt: Date?
        public var lastError: String?
        /// The latest value of every series kept in memory, for `app show`.
        public var current: [CurrentValue]
    }

    public typealias CurrentValue = CurrentSeriesValue

    public func status(app: String) -> AppStatus? {
        guard let state = apps[app] else { return nil }
        let current = state.samples.series.compactMap { s -> CurrentValue? in
            guard let t = s.times.last, let v = s.values.last, v.isFinite else { return nil }
            return CurrentValue(
                name: s.name, labels: Dictionary(s.labels.pairs.map { ($0.name, $0.value) }, uniquingKeysWith: { a, _ in a }),
                value: v, time: Date(timeIntervalSince1970: Double(t) / 1000))
        }.sorted { ($0.name, $0.labels.description) < ($1.name, $1.labels.description) }
        return AppStatus(
            objectives: state.trackers.map { $0.status() },
            lastSampleAt: state.lastSampleAt.map { Date(timeIntervalSince1970: Double($0) / 1000) }, lastError: state.lastError,
            current: current)
    }

    /// The windows of `objective` of `app` that ended from `from` to `to` (milliseconds), the
    /// `latest` of them at most, as judged under its current definition; nil when the engine
    /// follows no such objective.
    public func windows(app: String, objective: String, from: Int64, to: Int64, latest: Int) async throws
        -> [WindowVerdict]?
    {
        guard let tracker = apps[app]?.trackers.first(where: { $0.objective.name == objective }) else { return nil }
        try await flush()
        return try await store.verdicts(
            app: app, objective: objective, fingerprint: tracker.fingerprint, since: from, until: to, latest: latest)
    }

    /// Every objective's status, by application (for gauges).
    public func allStatuses() -> [String: [ObjectiveStatus]] {
        apps.mapValues { $0.trackers.map { $0.status() } }
    }
}

/// One objective's windows to ask a Prometheus source about.
public struct SourceQuery: Sendable {
    public var app: String
    public var objective: Objective
    public var fingerprint: String
    public var server: PrometheusServer
    /// The PromQL, asked at each window's end.
    public var query: String
    /// The windows' ends, in milliseconds since the epoch, oldest first.
    public var ends: [Int64]
}

/// What a source answered for a `SourceQuery`: each window's values, or why it could not say.
public struct SourceAnswer: Sendable {
    public var app: String
    public var objective: String
    public var fingerprint: String
    public var result: Result<[(end: Int64, values: [Double])], SourceError>

    public init(_ query: SourceQuery, _ result: Result<[(end: Int64, values: [Double])], SourceError>) {
        app = query.app
        objective = query.objective.name
        fingerprint = query.fingerprint
        self.result = result
    }
}

public struct SourceError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
