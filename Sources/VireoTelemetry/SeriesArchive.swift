import Foundation
import VireoModel

/// Where application series and judged SLO windows are kept durably. The telemetry engine and
/// the controller see only this; the embedded SQLite store (`VireoTelemetryStore`) implements
/// it, so a thin client of the API links no database.
public protocol SeriesArchive: Sendable {
    /// Writes `samples` in one transaction.
    func ingest(_ samples: [IngestSample]) async throws
    func recordVerdicts(_ verdicts: [(app: String, objective: String, fingerprint: String, verdict: WindowVerdict)]) async throws
    /// The windows of `objective` that ended from `since` to `until` (milliseconds), the `latest`
    /// of them at most, oldest first, for an objective whose definition still has `fingerprint`.
    func verdicts(app: String, objective: String, fingerprint: String, since: Int64, until: Int64, latest: Int)
        async throws -> [WindowVerdict]
    /// The series of `app` named `name` whose labels `selector` matches, between `from` and `to`
    /// (milliseconds since the epoch).
    func query(app: String, name: String, selector: SeriesSelector, from: Int64, to: Int64, maxPoints: Int) async throws
        -> [SeriesPoints]
    /// Rolls up and applies retention up to `now` (milliseconds); returns (steps written, rows deleted).
    @discardableResult
    func compact(now: Int64) async throws -> (rolledUp: Int, deleted: Int)
    /// Forgets every series and verdict of `app`.
    func deleteApp(_ app: String) async throws
}

extension SeriesArchive {
    /// The windows of `objective` judged since `since` (milliseconds).
    public func verdicts(app: String, objective: String, fingerprint: String, since: Int64) async throws
        -> [WindowVerdict]
    {
        try await verdicts(app: app, objective: objective, fingerprint: fingerprint, since: since, until: .max, latest: .max)
    }

    public func query(app: String, name: String, selector: SeriesSelector, from: Int64, to: Int64) async throws
        -> [SeriesPoints]
    {
        try await query(app: app, name: name, selector: selector, from: from, to: to, maxPoints: 11_000)
    }
}

/// One sample on its way into the store.
public struct IngestSample: Sendable, Equatable {
    public var app: String
    public var name: String
    public var labels: Labels
    /// Milliseconds since the epoch.
    public var time: Int64
    public var value: Double

    public init(app: String, name: String, labels: Labels, time: Int64, value: Double) {
        self.app = app
        self.name = name
        self.labels = labels
        self.time = time
        self.value = value
    }
}

/// A series as the API returns it.
public struct SeriesPoints: Sendable, Codable, Equatable {
    public struct Point: Sendable, Codable, Equatable {
        /// Milliseconds since the epoch.
        public var t: Int64
        /// The sample, or for a rolled-up step its last value.
        public var v: Double
        /// For rolled-up steps: the smallest, largest and mean value in the step.
        public var min: Double?
        public var max: Double?
        public var mean: Double?

        public init(t: Int64, v: Double, min: Double? = nil, max: Double? = nil, mean: Double? = nil) {
            self.t = t
            self.v = v
            self.min = min
            self.max = max
            self.mean = mean
        }
    }
    public var name: String
    public var labels: [String: String]
    /// `raw` or the rollup step (`1m`).
    public var resolution: String
    public var points: [Point]

    public init(name: String, labels: [String: String], resolution: String, points: [Point]) {
        self.name = name
        self.labels = labels
        self.resolution = resolution
        self.points = points
    }
}
