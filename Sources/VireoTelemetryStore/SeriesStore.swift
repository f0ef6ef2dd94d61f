import Foundation
import GRDB
import Synchronization
import VireoModel
import VireoTelemetry

/// How long series are kept: raw samples for `rawSeconds`, then one point per `stepSeconds`
/// (min, max, mean, last) for `rollupSeconds`.
public struct Retention: Sendable, Equatable {
    public var rawSeconds: Double
    public var rollupSeconds: Double
    public var stepSeconds: Double

    public init(rawSeconds: Double = 6 * 3_600, rollupSeconds: Double = 14 * 86_400, stepSeconds: Double = 60) {
        self.rawSeconds = rawSeconds
        self.rollupSeconds = rollupSeconds
        self.stepSeconds = stepSeconds
    }
}

/// The embedded time-series store: SQLite (GRDB) in its own file beside the cluster's, so
/// heavy ingestion never waits on cluster writes. Samples are batched into one transaction;
/// `compact` rolls raw samples up into steps and applies retention.
public final class SeriesStore: SeriesArchive {
    private let writer: any DatabaseWriter
    public let retention: Retention
    /// Series IDs, so ingestion looks up a series without a query.
    private let ids = Mutex<[SeriesIdentity: Int64]>([:])

    struct SeriesIdentity: Hashable {
        var app: String
        var name: String
        var labels: Labels
    }
    private let rolledUpTo = Mutex<Int64>(0)

    public init(path: String, retention: Retention = Retention()) throws {
        var config = Configuration()
        config.busyMode = .timeout(5)
        config.prepareDatabase { db in
            // Telemetry, not desired state: a power cut may lose the last second of samples.
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
            // Samples arrive spread over many series: a larger page cache keeps their B-tree
            // pages in memory between batches.
            try db.execute(sql: "PRAGMA cache_size = -65536")
            // Checkpoint the WAL every ~40 MB rather than every 4 MB: fewer syncs under ingestion.
            try db.execute(sql: "PRAGMA wal_autocheckpoint = 10000")
        }
        writer = try DatabasePool(path: path, configuration: config)
        self.retention = retention
        try Self.migrator.migrate(writer)
    }

    /// In memory (tests, benchmarks of everything but the disk).
    public init(retention: Retention = Retention()) throws {
        writer = try DatabaseQueue()
        self.retention = retention
        try Self.migrator.migrate(writer)
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: series, samples, rollups") { db in
            try db.execute(
                sql: """
                    CREATE TABLE series (id INTEGER PRIMARY KEY, app TEXT NOT NULL, name TEXT NOT NULL,
                        labels TEXT NOT NULL, UNIQUE (app, name, labels));
                    CREATE TABLE samples (series INTEGER NOT NULL, t INTEGER NOT NULL, v REAL NOT NULL,
                        PRIMARY KEY (series, t)) WITHOUT ROWID;
                    CREATE TABLE rollups (series INTEGER NOT NULL, t INTEGER NOT NULL, min REAL NOT NULL,
                        max REAL NOT NULL, sum REAL NOT NULL, count INTEGER NOT NULL, last REAL NOT NULL,
                        PRIMARY KEY (series, t)) WITHOUT ROWID;
                    """)
        }
        migrator.registerMigration("v2: SLO window verdicts") { db in
            // verdict: 1 bad, 0 good, NULL sli: no data. Kept so a restart keeps budgets and burn rates.
            try db.execute(
                sql: """
                    CREATE TABLE slo_windows (app TEXT NOT NULL, objective TEXT NOT NULL, fingerprint TEXT NOT NULL,
                        end INTEGER NOT NULL, sli REAL, state TEXT NOT NULL, PRIMARY KEY (app, objective, end)) WITHOUT ROWID;
                    """)
        }
        return migrator
    }

    /// Records judged windows of objectives.
    public func recordVerdicts(_ verdicts: [(app: String, objective: String, fingerprint: String, verdict: WindowVerdict)])
        async throws
    {
        guard !verdicts.isEmpty else { return }
        try await writer.write { db in
            let insert = try db.cachedStatement(
                sql: "INSERT OR REPLACE INTO slo_windows (app, objective, fingerprint, end, sli, state) VALUES (?, ?, ?, ?, ?, ?)"
            )
            for v in verdicts {
                insert.setUncheckedArguments([
                    v.app, v.objective, v.fingerprint, v.verdict.end, v.verdict.sli, v.verdict.state.rawValue,
                ])
                try insert.execute()
            }
        }
    }

    /// The verdicts of an objective under one definition from `since` to `until`, the `latest` of
    /// them at most, oldest first.
    public func verdicts(app: String, objective: String, fingerprint: String, since: Int64, until: Int64, latest: Int)
        async throws -> [WindowVerdict]
    {
        try await writer.read { db in
            try Row.fetchAll(
                db,
                sql:
                    "SELECT end, sli, state FROM slo_windows WHERE app = ? AND objective = ? AND fingerprint = ? AND end >= ? AND end <= ? ORDER BY end DESC LIMIT ?",
                arguments: [app, objective, fingerprint, since, until, Int64(clamping: latest)]
            ).reversed().map { WindowVerdict(end: $0["end"], sli: $0["sli"], state: SLOState(rawValue: $0["state"]) ?? .unknown) }
        }
    }

    /// Writes `samples` in one transaction. A sample for a time a series already has replaces it
    /// (a retried push is harmless).
    public func ingest(_ samples: [IngestSample]) async throws {
        guard !samples.isEmpty else { return }
        try await writer.write { db in
            let insertSample = try db.cachedStatement(sql: "INSERT OR REPLACE INTO samples (series, t, v) VALUES (?, ?, ?)")
            var known = self.ids.withLock { $0 }
            var added = false
            for sample in samples {
                let key = SeriesIdentity(app: sample.app, name: sample.name, labels: sample.labels)
                let id: Int64
                if let existing = known[key] {
                    id = existing
                } else {
                    id = try Self.seriesID(db, sample)
                    known[key] = id
                    added = true
                }
                // NaN is not storable in SQLite's REAL (it becomes NULL): skip it.
                guard !sample.value.isNaN else { continue }
                insertSample.setUncheckedArguments([id, sample.time, sample.value])
                try insertSample.execute()
            }
            if added { self.ids.withLock { $0.merge(known) { a, _ in a } } }
        }
    }

    private static func seriesID(_ db: Database, _ sample: IngestSample) throws -> Int64 {
        let labels = sample.labels.description
        if let id = try Int64.fetchOne(
            db, sql: "SELECT id FROM series WHERE app = ? AND name = ? AND labels = ?",
            arguments: [sample.app, sample.name, labels])
        {
            return id
        }
        try db.execute(
            sql: "INSERT INTO series (app, name, labels) VALUES (?, ?, ?)", arguments: [sample.app, sample.name, labels])
        return db.lastInsertedRowID
    }

    /// The series of `app` named `name` whose labels `selector` matches, between `from` and `to`
    /// (milliseconds): raw samples where they are still kept, rolled-up steps before that.
    public func query(app: String, name: String, selector: SeriesSelector, from: Int64, to: Int64, maxPoints: Int) async throws
        -> [SeriesPoints]
    {
        try await writer.read { db in
            var result: [SeriesPoints] = []
            let rows = try Row.fetchAll(
                db, sql: "SELECT id, labels FROM series WHERE app = ? AND name = ? ORDER BY labels", arguments: [app, name])
            for row in rows {
                let labelsText: String = row["labels"]
                let labels = Self.parseLabels(labelsText)
                guard selector.matches(labels) else { continue }
                let id: Int64 = row["id"]
                var points = try Row.fetchAll(
                    db, sql: "SELECT t, v FROM samples WHERE series = ? AND t >= ? AND t <= ? ORDER BY t LIMIT ?",
                    arguments: [id, from, to, maxPoints]
                ).map { SeriesPoints.Point(t: $0["t"], v: $0["v"]) }
                var resolution = "raw"
                let rawStart = points.first?.t ?? to
                if rawStart > from {
                    let older = try Row.fetchAll(
                        db,
                        sql:
                            "SELECT t, min, max, sum, count, last FROM rollups WHERE series = ? AND t >= ? AND t < ? ORDER BY t LIMIT ?",
                        arguments: [id, from, rawStart, maxPoints]
                    ).map { r in
                        SeriesPoints.Point(
                            t: r["t"], v: r["last"], min: r["min"], max: r["max"],
                            mean: (r["sum"] as Double) / Double(r["count"] as Int64))
                    }
                    if !older.isEmpty {
                        points = older.filter { $0.t < rawStart } + points
                        resolution = points.count == older.count ? DurationText.format(self.retention.stepSeconds) : "mixed"
                    }
                }
                result.append(
                    SeriesPoints(
                        name: name, labels: Dictionary(labels.pairs.map { ($0.name, $0.value) }, uniquingKeysWith: { a, _ in a }),
                        resolution: resolution, points: points))
            }
            return result
        }
    }

    /// Rolls every complete step before `now` into `rollups` (once), then deletes raw samples
    /// and rollups older than their retention. Returns (steps written, rows deleted).
    @discardableResult
    public func compact(now: Int64) async throws -> (rolledUp: Int, deleted: Int) {
        let step = Int64(retention.stepSeconds * 1000)
        let until = (now / step) * step
        let since = rolledUpTo.withLock { $0 }
        let rawCutoff = now - Int64(retention.rawSeconds * 1000)
        let rollupCutoff = now - Int64(retention.rollupSeconds * 1000)
        let result = try await writer.write { db -> (Int, Int) in
            // Each complete step is rolled up once per process; after a restart the raw samples
            // still kept are rolled up again, which INSERT OR REPLACE makes harmless.
            try db.execute(
                sql: """
                    INSERT OR REPLACE INTO rollups (series, t, min, max, sum, count, last)
                    SELECT series, (t / ?1) * ?1 AS step, min(v), max(v), sum(v), count(*),
                        (SELECT s2.v FROM samples s2 WHERE s2.series = s.series AND s2.t < (s.t / ?1) * ?1 + ?1
                            ORDER BY s2.t DESC LIMIT 1)
                    FROM samples s WHERE t >= ?2 AND t < ?3 GROUP BY series, step
                    """,
                arguments: [step, since, until])
            let rolled = db.changesCount
            try db.execute(sql: "DELETE FROM samples WHERE t < ?", arguments: [rawCutoff])
            var deleted = db.changesCount
            try db.execute(sql: "DELETE FROM rollups WHERE t < ?", arguments: [rollupCutoff])
            deleted += db.changesCount
            // Verdicts are small; a year covers any period people set.
            try db.execute(sql: "DELETE FROM slo_windows WHERE end < ?", arguments: [now - 366 * 86_400_000])
            return (rolled, deleted)
        }
        rolledUpTo.withLock { $0 = max($0, until) }
        return result
    }

    /// Rows in `samples` and `rollups` (for tests and `vireo bench`).
    public func counts() async throws -> (samples: Int, rollups: Int, series: Int) {
        try await writer.read { db in
            (
                try Int.fetchOne(db, sql: "SELECT count(*) FROM samples") ?? 0,
                try Int.fetchOne(db, sql: "SELECT count(*) FROM rollups") ?? 0,
                try Int.fetchOne(db, sql: "SELECT count(*) FROM series") ?? 0
            )
        }
    }

    /// Deletes every series of `app` (when the application is deleted).
    public func deleteApp(_ app: String) async throws {
        try await writer.write { db in
            let ids = try Int64.fetchAll(db, sql: "SELECT id FROM series WHERE app = ?", arguments: [app])
            for id in ids {
                try db.execute(sql: "DELETE FROM samples WHERE series = ?", arguments: [id])
                try db.execute(sql: "DELETE FROM rollups WHERE series = ?", arguments: [id])
            }
            try db.execute(sql: "DELETE FROM series WHERE app = ?", arguments: [app])
            try db.execute(sql: "DELETE FROM slo_windows WHERE app = ?", arguments: [app])
        }
        ids.withLock { $0 = $0.filter { $0.key.app != app } }
    }

    /// Reads back `Labels.description`.
    static func parseLabels(_ text: String) -> Labels {
        guard let selector = try? SeriesSelector(parsing: "x" + (text == "{}" ? "" : text)) else { return Labels() }
        return Labels(selector.matchers.map { ($0.label, $0.value) })
    }
}
