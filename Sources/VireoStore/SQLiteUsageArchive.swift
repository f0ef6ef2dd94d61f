import Foundation
import GRDB
import Synchronization
import VireoModel

/// The usage history in SQLite (GRDB), in its own file beside the cluster's (`history.db`), so a
/// step's batch never waits on, or holds up, a cluster write.
///
/// Hosts, VMs and applications are kept once each, with what was last recorded about them, under
/// a small integer key; a step is one short row per host, VM and application, keyed by the
/// step's start, so retention deletes from the front of each table.
public final class SQLiteUsageArchive: UsageArchive {
    private let writer: any DatabaseWriter
    private let encoder = JSONEncoder()
    private let decoder = JSONDecoder()

    /// Opens (creating and migrating as needed) the archive at `path`.
    public init(path: String) throws {
        // Durable across a crash of the process; a power cut may lose the last step.
        writer = try SQLiteDatabase.open(path: path, synchronous: "NORMAL", migrator: Self.migrator)
    }

    /// In memory (tests, what-if runs).
    public init() throws {
        writer = try SQLiteDatabase.inMemory(migrator: Self.migrator)
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: usage steps") { db in
            try db.execute(
                sql: """
                    CREATE TABLE steps (t INTEGER PRIMARY KEY, seconds REAL NOT NULL);
                    CREATE TABLE hosts (key INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
                        fingerprint BLOB NOT NULL, last_seen INTEGER NOT NULL);
                    CREATE INDEX hosts_last_seen ON hosts (last_seen);
                    CREATE TABLE vms (key INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, name TEXT NOT NULL, app TEXT,
                        cpus INTEGER NOT NULL, memory_mib INTEGER NOT NULL, last_seen INTEGER NOT NULL);
                    CREATE INDEX vms_last_seen ON vms (last_seen);
                    CREATE TABLE apps (name TEXT PRIMARY KEY, objectives BLOB NOT NULL, last_seen INTEGER NOT NULL);
                    CREATE TABLE host_steps (t INTEGER NOT NULL, host INTEGER NOT NULL, cpu_load REAL,
                        PRIMARY KEY (t, host)) WITHOUT ROWID;
                    CREATE TABLE vm_steps (t INTEGER NOT NULL, vm INTEGER NOT NULL, host INTEGER NOT NULL, cpu_cores REAL,
                        resident_mib REAL, PRIMARY KEY (t, vm)) WITHOUT ROWID;
                    CREATE TABLE app_steps (t INTEGER NOT NULL, app TEXT NOT NULL, state TEXT NOT NULL,
                        PRIMARY KEY (t, app)) WITHOUT ROWID;
                    """)
        }
        return migrator
    }

    /// Names of the migrations applied, oldest first.
    public func appliedMigrations() throws -> [String] {
        try writer.read { db in try Self.migrator.appliedMigrations(db) }
    }

    static func milliseconds(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1000).rounded()) }

    /// What the archive holds about each host and VM, as last written: a step whose hosts and
    /// VMs are as they were writes only their step rows (at 100,000 VMs, upserting every VM's
    /// record each step was most of a step's cost).
    struct Known {
        struct Host {
            var key: Int64
            var name: String
            var fingerprint: HostFingerprint
            var lastSeen: Int64
        }
        struct VM {
            var key: Int64
            var name: String
            var app: String?
            var cpus: Int
            var memoryMiB: Int
            var lastSeen: Int64
        }
        var hosts: [HostID: Host] = [:]
        var vms: [VMID: VM] = [:]
    }

    /// Loaded at the first step, taken out for each write and put back only when it committed
    /// (a write that fails leaves it unloaded, to be read again).
    private let known = Mutex<Known?>(nil)

    /// How stale a record's `last_seen` may be: it is written again only once it is older than
    /// this (a span per key between one and two times it, so the records of a cluster that came
    /// up at once are not all written in the same step). Retention and reads allow for it.
    static let lastSeenRefresh: Int64 = 10 * 60 * 1000
    static func isStale(_ lastSeen: Int64, key: Int64, at t: Int64) -> Bool {
        t - lastSeen >= lastSeenRefresh + lastSeenRefresh * (key & 15) / 16
    }
    /// How far a stored `last_seen` may lag the last step that saw the record (`isStale` writes
    /// it again before this).
    static let lastSeenLag = 2 * lastSeenRefresh

    public func record(_ step: UsageStep, deletingBefore cutoff: Date, share: Double) async throws {
        let t = Self.milliseconds(step.start)
        let horizon = Self.milliseconds(cutoff)
        let apps = try step.applications.map { ($0, try encoder.encode($0.objectives)) }
        try await writer.write { db in
            var pacer = Pacer(share: share)
            var known = try self.known.withLock { $0.take() } ?? Self.load(db)
            try db.execute(
                sql: "INSERT OR REPLACE INTO steps (t, seconds) VALUES (?, ?)", arguments: [t, step.seconds])
            // A step recorded again replaces the first one entirely.
            for table in ["host_steps", "vm_steps", "app_steps"] {
                try db.execute(sql: "DELETE FROM \(table) WHERE t = ?", arguments: [t])
            }
            // Statements prepared once for the step's many rows (at 100,000 VMs, compiling them
            // per row was most of the step's cost), each upsert returning the record's key.
            let upsertHost = try db.cachedStatement(
                sql: """
                    INSERT INTO hosts (id, name, fingerprint, last_seen) VALUES (?, ?, ?, ?)
                    ON CONFLICT(id) DO UPDATE SET name = excluded.name, fingerprint = excluded.fingerprint,
                        last_seen = max(last_seen, excluded.last_seen)
                    RETURNING key, last_seen
                    """)
            let insertHostStep = try db.cachedStatement(sql: "INSERT INTO host_steps (t, host, cpu_load) VALUES (?, ?, ?)")
            var hostKeys: [HostID: Int64] = [:]
            for host in step.hosts {
                let key: Int64
                if let record = known.hosts[host.id], record.name == host.name, record.fingerprint == host.fingerprint,
                    !Self.isStale(record.lastSeen, key: record.key, at: t)
                {
                    key = record.key
                } else {
                    let fingerprint = try self.encoder.encode(host.fingerprint)
                    guard let row = try Row.fetchOne(upsertHost, arguments: [host.id.rawValue, host.name, fingerprint, t])
                    else { continue }
                    key = row[0]
                    known.hosts[host.id] = .init(key: key, name: host.name, fingerprint: host.fingerprint, lastSeen: row[1])
                }
                hostKeys[host.id] = key
                try insertHostStep.execute(arguments: [t, key, host.cpuLoad])
                pacer.pause()
            }
            let upsertVM = try db.cachedStatement(
                sql: """
                    INSERT INTO vms (id, name, app, cpus, memory_mib, last_seen) VALUES (?, ?, ?, ?, ?, ?)
                    ON CONFLICT(id) DO UPDATE SET name = excluded.name, app = excluded.app, cpus = excluded.cpus,
                        memory_mib = excluded.memory_mib, last_seen = max(last_seen, excluded.last_seen)
                    RETURNING key, last_seen
                    """)
            let insertVMStep = try db.cachedStatement(
                sql: "INSERT INTO vm_steps (t, vm, host, cpu_cores, resident_mib) VALUES (?, ?, ?, ?, ?)")
            for vm in step.vms {
                guard let host = hostKeys[vm.host] else {
                    throw VireoError(.invalidArgument, "VM '\(vm.name)' runs on host \(vm.host), which the step does not list")
                }
                let key: Int64
                if let record = known.vms[vm.id], record.name == vm.name, record.app == vm.app, record.cpus == vm.cpus,
                    record.memoryMiB == vm.memoryMiB, !Self.isStale(record.lastSeen, key: record.key, at: t)
                {
                    key = record.key
                } else {
                    guard
                        let row = try Row.fetchOne(
                            upsertVM, arguments: [vm.id.rawValue, vm.name, vm.app, vm.cpus, vm.memoryMiB, t])
                    else { continue }
                    key = row[0]
                    known.vms[vm.id] = .init(
                        key: key, name: vm.name, app: vm.app, cpus: vm.cpus, memoryMiB: vm.memoryMiB, lastSeen: row[1])
                }
                try insertVMStep.execute(arguments: [t, key, host, vm.cpuCores, vm.residentMiB])
                pacer.pause()
            }
            for (app, objectives) in apps {
                try db.execute(
                    sql: """
                        INSERT INTO apps (name, objectives, last_seen) VALUES (?, ?, ?)
                        ON CONFLICT(name) DO UPDATE SET objectives = excluded.objectives,
                            last_seen = max(last_seen, excluded.last_seen)
                        """,
                    arguments: [app.name, objectives, t])
                try db.execute(
                    sql: "INSERT INTO app_steps (t, app, state) VALUES (?, ?, ?)", arguments: [t, app.name, app.state.rawValue])
            }
            // Retention: steps first, then what no step kept refers to (allowing for a
            // `last_seen` that was not written again yet).
            // A step's rows go a thousand at a time, paced like the writes.
            for (table, key) in [("steps", "t"), ("host_steps", "t, host"), ("vm_steps", "t, vm"), ("app_steps", "t, app")] {
                let delete = try db.cachedStatement(
                    sql: "DELETE FROM \(table) WHERE (\(key)) IN (SELECT \(key) FROM \(table) WHERE t < ? ORDER BY t LIMIT 1000)")
                repeat {
                    try delete.execute(arguments: [horizon])
                    pacer.pause(after: db.changesCount)
                } while db.changesCount > 0
            }
            let forgotten = horizon - Self.lastSeenLag
            try db.execute(sql: "DELETE FROM apps WHERE last_seen < ?", arguments: [horizon])
            try db.execute(sql: "DELETE FROM hosts WHERE last_seen < ?", arguments: [forgotten])
            if db.changesCount > 0 { known.hosts = known.hosts.filter { $0.value.lastSeen >= forgotten } }
            try db.execute(sql: "DELETE FROM vms WHERE last_seen < ?", arguments: [forgotten])
            if db.changesCount > 0 { known.vms = known.vms.filter { $0.value.lastSeen >= forgotten } }
            // Put back once committed, before the next write can read it.
            db.afterNextTransaction { [known] _ in self.known.withLock { $0 = known } }
        }
    }

    /// The hosts and VMs recorded so far.
    private static func load(_ db: Database) throws -> Known {
        var known = Known()
        let decoder = JSONDecoder()
        for row in try Row.fetchAll(db, sql: "SELECT key, id, name, fingerprint, last_seen FROM hosts") {
            known.hosts[HostID(row[1] as String)] = .init(
                key: row[0], name: row[2], fingerprint: try decoder.decode(HostFingerprint.self, from: row[3] as Data),
                lastSeen: row[4])
        }
        let vms = try Row.fetchCursor(db, sql: "SELECT key, id, name, app, cpus, memory_mib, last_seen FROM vms")
        while let row = try vms.next() {
            known.vms[VMID(row[1] as String)] = .init(
                key: row[0], name: row[2], app: row[3], cpus: row[4], memoryMiB: row[5], lastSeen: row[6])
        }
        return known
    }

    public func recording(from: Date, stepSeconds: Double, count: Int) async throws -> UsageRecording {
        guard stepSeconds > 0, count >= 0 else {
            throw VireoError(.invalidArgument, "a recording needs a positive step and a count of at least 0")
        }
        let start = Self.milliseconds(from)
        let stepMs = max(1, Int64((stepSeconds * 1000).rounded()))
        let end = start + stepMs * Int64(count)
        let range: StatementArguments = [start, end]
        return try await writer.read { db in
            var folding = UsageFolding(count: count)
            let lengths = Dictionary(
                try Row.fetchAll(db, sql: "SELECT t, seconds FROM steps WHERE t >= ? AND t < ?", arguments: range).map {
                    ($0[0] as Int64, $0[1] as Double)
                }, uniquingKeysWith: { a, _ in a })
            func slot(_ t: Int64) -> (index: Int, weight: Double) {
                (Int((t - start) / stepMs), lengths[t] ?? stepSeconds)
            }
            let hostRows = try Row.fetchCursor(
                db, sql: "SELECT t, host, cpu_load FROM host_steps WHERE t >= ? AND t < ? ORDER BY t", arguments: range)
            while let row = try hostRows.next() {
                let (index, weight) = slot(row[0])
                folding.host(row[1], at: index, cpuLoad: row[2], weight: weight)
            }
            let vmRows = try Row.fetchCursor(
                db, sql: "SELECT t, vm, host, cpu_cores, resident_mib FROM vm_steps WHERE t >= ? AND t < ? ORDER BY t",
                arguments: range)
            while let row = try vmRows.next() {
                let (index, weight) = slot(row[0])
                folding.vm(row[1], at: index, host: row[2], cpuCores: row[3], residentMiB: row[4], weight: weight)
            }
            let appRows = try Row.fetchCursor(
                db, sql: "SELECT t, app, state FROM app_steps WHERE t >= ? AND t < ? ORDER BY t", arguments: range)
            while let row = try appRows.next() {
                folding.app(row[1], at: slot(row[0]).index, state: SLOState(rawValue: row[2]) ?? .unknown)
            }
            return try self.recording(db, folding, from: from, stepSeconds: stepSeconds, count: count, seenSince: start)
        }
    }

    /// The folded series with what was last recorded about each host, VM and application.
    private func recording(
        _ db: Database, _ folding: UsageFolding, from: Date, stepSeconds: Double, count: Int, seenSince: Int64
    ) throws -> UsageRecording {
        var hostIDs: [Int64: HostID] = [:]
        var hosts: [UsageRecording.HostSeries] = []
        for row in try Row.fetchAll(
            db, sql: "SELECT key, id, name, fingerprint FROM hosts WHERE last_seen >= ?",
            arguments: [seenSince - Self.lastSeenLag])
        {
            let key: Int64 = row[0]
            let id = HostID(row[1] as String)
            hostIDs[key] = id
            guard let series = folding.hosts[key] else { continue }
            hosts.append(
                .init(
                    id: id, name: row[2], fingerprint: try decoder.decode(HostFingerprint.self, from: row[3] as Data),
                    cpuLoad: series.cpuLoad.map(\.value)))
        }
        var vms: [UsageRecording.VMSeries] = []
        for row in try Row.fetchAll(
            db, sql: "SELECT key, id, name, app, cpus, memory_mib FROM vms WHERE last_seen >= ?",
            arguments: [seenSince - Self.lastSeenLag])
        {
            guard let series = folding.vms[row[0] as Int64] else { continue }
            vms.append(
                .init(
                    id: VMID(row[1] as String), name: row[2], app: row[3], cpus: row[4], memoryMiB: row[5],
                    host: series.host.map { $0.flatMap { hostIDs[$0] } }, cpuCores: series.cpuCores.map(\.value),
                    residentMiB: series.residentMiB.map(\.value)))
        }
        var applications: [UsageRecording.ApplicationSeries] = []
        for row in try Row.fetchAll(db, sql: "SELECT name, objectives FROM apps WHERE last_seen >= ?", arguments: [seenSince]) {
            guard let states = folding.apps[row[0] as String] else { continue }
            applications.append(
                .init(name: row[0], objectives: try decoder.decode([Objective].self, from: row[1] as Data), state: states))
        }
        return UsageRecording(
            from: from, stepSeconds: stepSeconds, count: count, hosts: hosts.sorted { $0.name < $1.name },
            vms: vms.sorted { $0.name < $1.name }, applications: applications.sorted { $0.name < $1.name })
    }
}

/// Recorded steps folded into the steps of a window, as `UsageArchive.recording` describes.
struct UsageFolding {
    /// A mean weighted by each recorded step's length.
    struct Mean {
        private var sum = 0.0
        private var weight = 0.0
        mutating func add(_ value: Double?, weight: Double) {
            guard let value else { return }
            sum += value * weight
            self.weight += weight
        }
        var value: Double? { weight > 0 ? sum / weight : nil }
    }

    struct HostSeries {
        var cpuLoad: [Mean]
    }

    struct VMSeries {
        var host: [Int64?]
        var cpuCores: [Mean]
        var residentMiB: [Mean]
    }

    let count: Int
    private(set) var hosts: [Int64: HostSeries] = [:]
    private(set) var vms: [Int64: VMSeries] = [:]
    private(set) var apps: [String: [SLOState?]] = [:]

    init(count: Int) { self.count = count }

    mutating func host(_ key: Int64, at index: Int, cpuLoad: Double?, weight: Double) {
        guard index >= 0, index < count else { return }
        hosts[key, default: HostSeries(cpuLoad: Array(repeating: Mean(), count: count))].cpuLoad[index]
            .add(cpuLoad, weight: weight)
    }

    /// Rows come oldest first: the last one of a step sets where the VM was at its end.
    mutating func vm(_ key: Int64, at index: Int, host: Int64, cpuCores: Double?, residentMiB: Double?, weight: Double) {
        guard index >= 0, index < count else { return }
        if vms[key] == nil {
            vms[key] = VMSeries(
                host: Array(repeating: nil, count: count), cpuCores: Array(repeating: Mean(), count: count),
                residentMiB: Array(repeating: Mean(), count: count))
        }
        // Changed in place: a copy of the series per row would cost the window's length each time.
        vms[key]?.host[index] = host
        vms[key]?.cpuCores[index].add(cpuCores, weight: weight)
        vms[key]?.residentMiB[index].add(residentMiB, weight: weight)
    }

    mutating func app(_ name: String, at index: Int, state: SLOState) {
        guard index >= 0, index < count else { return }
        apps[name, default: Array(repeating: nil, count: count)][index] =
            apps[name]?[index].map { SLOState.worst([$0, state]) } ?? state
    }
}
