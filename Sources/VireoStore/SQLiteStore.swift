import Foundation
import GRDB
import VireoModel

/// The embedded store: SQLite through GRDB, in WAL mode.
///
/// Records are stored as JSON documents beside the columns that need indexes or uniqueness, so
/// adding a field to a model type needs no table rewrite; schema changes go through the migrator,
/// which runs on every open.
public final class SQLiteStore: ClusterStore {
    private let writer: any DatabaseWriter
    private let encoder = JSONEncoder()
    private let decoder = JSONDecoder()

    /// Opens (creating and migrating as needed) the database at `path`.
    public init(path: String) throws {
        // NORMAL is durable across process crashes in WAL mode; FULL adds an fsync per commit
        // for power loss, which a controller's data dir on a server should have.
        writer = try SQLiteDatabase.open(path: path, synchronous: "FULL", migrator: Self.migrator)
    }

    /// In memory (tests, what-if runs).
    public init() throws {
        writer = try SQLiteDatabase.inMemory(migrator: Self.migrator)
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: hosts and vms") { db in
            try db.create(table: "hosts") { t in
                t.primaryKey("id", .text)
                t.column("name", .text).notNull().unique()
                t.column("body", .blob).notNull()
            }
            try db.create(table: "vms") { t in
                t.primaryKey("id", .text)
                t.column("name", .text).notNull().unique()
                t.column("host_id", .text).indexed()
                t.column("state", .text).notNull()
                t.column("body", .blob).notNull()
            }
        }
        migrator.registerMigration("v2: console output") { db in
            // One row per VM with its last output (ConsoleTail), rewritten on append: a row is at
            // most the retained size (256 KiB), and it goes with its VM.
            try db.create(table: "consoles") { t in
                t.primaryKey("vm_id", .text).references("vms", onDelete: .cascade)
                t.column("next", .integer).notNull()
                t.column("written", .integer).notNull()
                t.column("text", .blob).notNull()
            }
        }
        migrator.registerMigration("v3: migrations") { db in
            // Kept after their VM is deleted: the history of moves outlives the VMs.
            try db.create(table: "migrations") { t in
                t.primaryKey("id", .text)
                t.column("vm_id", .text).notNull().indexed()
                t.column("state", .text).notNull()
                t.column("requested_at", .double).notNull()
                t.column("body", .blob).notNull()
            }
        }
        migrator.registerMigration("v4: applications") { db in
            try db.create(table: "apps") { t in
                t.primaryKey("name", .text)
                t.column("body", .blob).notNull()
            }
        }
        migrator.registerMigration("v5: rebalancing plans and settings") { db in
            try db.create(table: "plans") { t in
                t.primaryKey("id", .text)
                t.column("created_at", .double).notNull().indexed()
                t.column("body", .blob).notNull()
            }
            try db.create(table: "settings") { t in
                t.primaryKey("key", .text)
                t.column("body", .blob).notNull()
            }
        }
        migrator.registerMigration("v6: migrations by request time") { db in
            // The usage history asks for the migrations of a window.
            try db.create(index: "migrations_requested_at", on: "migrations", columns: ["requested_at"])
        }
        migrator.registerMigration("v7: access tokens and audit") { db in
            try db.create(table: "tokens") { t in
                t.primaryKey("name", .text)
                t.column("secret_hash", .text).notNull().unique()
                t.column("body", .blob).notNull()
            }
            // AUTOINCREMENT: a sequence number is never used again, also after the newest entry
            // is deleted.
            try db.create(table: "audit") { t in
                t.autoIncrementedPrimaryKey("seq")
                t.column("at", .double).notNull().indexed()
                t.column("body", .blob).notNull()
            }
        }
        // The same steps as the PostgreSQL store's. One controller owns a SQLite file, so the
        // lease is never taken here; the table keeps the two schemas alike.
        migrator.registerMigration("v8: leader lease") { db in
            try db.create(table: "leader_lease") { t in
                t.primaryKey("id", .integer).check { $0 == 1 }
                t.column("holder", .text).notNull()
                t.column("url", .text).notNull()
                t.column("term", .integer).notNull()
                t.column("expires_at", .double).notNull()
            }
        }
        migrator.registerMigration("v9: cluster secrets") { db in
            try db.create(table: "secrets") { t in
                t.primaryKey("name", .text)
                t.column("value", .text).notNull()
            }
        }
        migrator.registerMigration("v10: agent certificate cutoffs") { db in
            try db.create(table: "certificate_cutoffs") { t in
                t.primaryKey("host", .text)
                t.column("cutoff", .double).notNull()
            }
        }
        migrator.registerMigration("v11: placement explanations apart") { db in
            // A VM's explanation is most of its record and changes only when it is placed: apart,
            // a load can leave it out and a write of the VM need not carry it.
            try db.alter(table: "vms") { t in t.add(column: "placement", .blob) }
            let decoder = JSONDecoder()
            let encoder = JSONEncoder()
            let rows = try Row.fetchAll(db, sql: "SELECT id, body FROM vms")
            for row in rows {
                let vm = try decoder.decode(VirtualMachine.self, from: row["body"] as Data)
                guard let placement = vm.placement else { continue }
                try db.execute(
                    sql: "UPDATE vms SET body = ?, placement = ? WHERE id = ?",
                    arguments: [try encoder.encode(vm.withoutPlacement), try encoder.encode(placement), row["id"] as String])
            }
        }
        return migrator
    }

    /// Names of the migrations applied, oldest first.
    public func appliedMigrations() throws -> [String] {
        try writer.read { db in try Self.migrator.appliedMigrations(db) }
    }

    public func load(recent: Int, placements: Bool) async throws -> StoredCluster {
        // SQLite reads a negative LIMIT as none.
        let limit = recent == .max ? -1 : recent
        return try await writer.read { db in
            let hosts = try Row.fetchAll(db, sql: "SELECT body FROM hosts ORDER BY name").map {
                try self.decoder.decode(HostRecord.self, from: $0["body"] as Data)
            }
            let vms = try Row.fetchAll(
                db, sql: placements ? "SELECT body, placement FROM vms ORDER BY name" : "SELECT body FROM vms ORDER BY name"
            ).map { row in
                var vm = try self.decoder.decode(VirtualMachine.self, from: row["body"] as Data)
                if placements, let placement = row["placement"] as Data? {
                    vm.placement = try self.decoder.decode(PlacementExplanation.self, from: placement)
                }
                return vm
            }
            let migrations = try Row.fetchAll(
                db,
                sql: """
                    SELECT body FROM migrations
                    WHERE state NOT IN ('completed', 'failed')
                        OR id IN (SELECT id FROM migrations ORDER BY requested_at DESC, id DESC LIMIT ?)
                    ORDER BY requested_at, id
                    """,
                arguments: [limit]
            ).map { try self.decoder.decode(Migration.self, from: $0["body"] as Data) }
            let apps = try Row.fetchAll(db, sql: "SELECT body FROM apps ORDER BY name").map {
                try self.decoder.decode(AppRecord.self, from: $0["body"] as Data)
            }
            let plans = try Row.fetchAll(
                db,
                sql:
                    "SELECT body FROM (SELECT body, created_at, id FROM plans ORDER BY created_at DESC, id DESC LIMIT ?) ORDER BY created_at, id",
                arguments: [limit]
            ).map { try self.decoder.decode(Plan.self, from: $0["body"] as Data) }
            let rebalance = try Row.fetchOne(db, sql: "SELECT body FROM settings WHERE key = 'rebalance'").map {
                try self.decoder.decode(RebalanceSettings.self, from: $0["body"] as Data)
            }
            return StoredCluster(
                hosts: hosts, vms: vms, migrations: migrations, apps: apps, plans: plans, rebalance: rebalance)
        }
    }

    public func placement(of vm: VMID) async throws -> PlacementExplanation? {
        try await writer.read { db in
            try (Data.fetchOne(db, sql: "SELECT placement FROM vms WHERE id = ?", arguments: [vm.rawValue]) as Data?).map {
                try self.decoder.decode(PlacementExplanation.self, from: $0)
            }
        }
    }

    public func migrations(of vm: VMID?, limit: Int) async throws -> [Migration] {
        try await writer.read { db in
            let rows =
                if let vm {
                    try Row.fetchAll(
                        db, sql: "SELECT body FROM migrations WHERE vm_id = ? ORDER BY requested_at DESC, id DESC LIMIT ?",
                        arguments: [vm.rawValue, limit])
                } else {
                    try Row.fetchAll(
                        db, sql: "SELECT body FROM migrations ORDER BY requested_at DESC, id DESC LIMIT ?", arguments: [limit])
                }
            return try rows.map { try self.decoder.decode(Migration.self, from: $0["body"] as Data) }
        }
    }

    public func migration(_ id: MigrationID) async throws -> Migration? {
        try await writer.read { db in
            try Row.fetchOne(db, sql: "SELECT body FROM migrations WHERE id = ?", arguments: [id.rawValue]).map {
                try self.decoder.decode(Migration.self, from: $0["body"] as Data)
            }
        }
    }

    public func migrations(requestedFrom from: Date, to: Date) async throws -> [Migration] {
        try await writer.read { db in
            try Row.fetchAll(
                db, sql: "SELECT body FROM migrations WHERE requested_at >= ? AND requested_at < ? ORDER BY requested_at, id",
                arguments: [from.timeIntervalSince1970, to.timeIntervalSince1970]
            ).map { try self.decoder.decode(Migration.self, from: $0["body"] as Data) }
        }
    }

    public func plans(createdFrom from: Date, to: Date) async throws -> [Plan] {
        try await writer.read { db in
            try Row.fetchAll(
                db, sql: "SELECT body FROM plans WHERE created_at >= ? AND created_at < ? ORDER BY created_at, id",
                arguments: [from.timeIntervalSince1970, to.timeIntervalSince1970]
            ).map { try self.decoder.decode(Plan.self, from: $0["body"] as Data) }
        }
    }

    public func plans(limit: Int) async throws -> [Plan] {
        try await writer.read { db in
            try Row.fetchAll(db, sql: "SELECT body FROM plans ORDER BY created_at DESC, id DESC LIMIT ?", arguments: [limit]).map
            {
                try self.decoder.decode(Plan.self, from: $0["body"] as Data)
            }
        }
    }

    public func plan(_ id: String) async throws -> Plan? {
        try await writer.read { db in
            try Row.fetchOne(db, sql: "SELECT body FROM plans WHERE id = ?", arguments: [id]).map {
                try self.decoder.decode(Plan.self, from: $0["body"] as Data)
            }
        }
    }

    public func insertVM(_ vm: VirtualMachine) async throws {
        try await commit(StoreBatch(insertedVMs: [vm]))
    }

    /// A VM's record and its placement explanation, each as stored.
    private func encoded(_ vm: VirtualMachine) throws -> (vm: VirtualMachine, body: Data, placement: Data?) {
        (vm, try encoder.encode(vm.withoutPlacement), try vm.placement.map { try encoder.encode($0) })
    }

    public func commit(_ batch: StoreBatch) async throws {
        guard !batch.isEmpty else { return }
        let inserted = try batch.insertedVMs.map(encoded)
        let vms = try batch.updatedVMs.map(encoded)
        let hosts = try batch.hosts.map { ($0, try encoder.encode($0)) }
        let migrations = try batch.migrations.map { ($0, try encoder.encode($0)) }
        let apps = try batch.apps.map { ($0, try encoder.encode($0)) }
        let plans = try batch.plans.map { ($0, try encoder.encode($0)) }
        let rebalance = try batch.rebalance.map { try encoder.encode($0) }
        do {
            try await writer.write { db in
                for (vm, body, placement) in inserted {
                    do {
                        try db.execute(
                            sql: "INSERT INTO vms (id, name, host_id, state, body, placement) VALUES (?, ?, ?, ?, ?, ?)",
                            arguments: [vm.id.rawValue, vm.name, vm.hostID?.rawValue, vm.state.rawValue, body, placement])
                    } catch let error as DatabaseError where error.resultCode == .SQLITE_CONSTRAINT {
                        throw VireoError(.conflict, "a VM named '\(vm.name)' already exists")
                    }
                }
                for (vm, body, placement) in vms {
                    try db.execute(
                        sql: """
                            UPDATE vms SET name = ?, host_id = ?, state = ?, body = ?, placement = coalesce(?, placement)
                            WHERE id = ?
                            """,
                        arguments: [vm.name, vm.hostID?.rawValue, vm.state.rawValue, body, placement, vm.id.rawValue])
                    if db.changesCount == 0 { throw VireoError.notFound("VM", vm.name) }
                }
                for id in batch.deletedVMs {
                    // Also removed by the foreign key's cascade; explicit so it does not depend on
                    // the connection's foreign-key setting.
                    try db.execute(sql: "DELETE FROM consoles WHERE vm_id = ?", arguments: [id.rawValue])
                    try db.execute(sql: "DELETE FROM vms WHERE id = ?", arguments: [id.rawValue])
                    if db.changesCount == 0 { throw VireoError.notFound("VM", id.rawValue) }
                }
                for (host, body) in hosts {
                    try db.execute(
                        sql: """
                            INSERT INTO hosts (id, name, body) VALUES (?, ?, ?)
                            ON CONFLICT(id) DO UPDATE SET name = excluded.name, body = excluded.body
                            """,
                        arguments: [host.id.rawValue, host.name, body])
                }
                for (app, body) in apps {
                    try db.execute(
                        sql: "INSERT INTO apps (name, body) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET body = excluded.body",
                        arguments: [app.name, body])
                }
                for (plan, body) in plans {
                    try db.execute(
                        sql:
                            "INSERT INTO plans (id, created_at, body) VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE SET body = excluded.body",
                        arguments: [plan.id, plan.createdAt.timeIntervalSince1970, body])
                }
                if let rebalance {
                    try db.execute(
                        sql:
                            "INSERT INTO settings (key, body) VALUES ('rebalance', ?) ON CONFLICT(key) DO UPDATE SET body = excluded.body",
                        arguments: [rebalance])
                }
                for name in batch.deletedApps {
                    try db.execute(sql: "DELETE FROM apps WHERE name = ?", arguments: [name])
                    if db.changesCount == 0 { throw VireoError.notFound("application", name) }
                }
                for (migration, body) in migrations {
                    try db.execute(
                        sql: """
                            INSERT INTO migrations (id, vm_id, state, requested_at, body) VALUES (?, ?, ?, ?, ?)
                            ON CONFLICT(id) DO UPDATE SET state = excluded.state, body = excluded.body
                            """,
                        arguments: [
                            migration.id.rawValue, migration.vmID.rawValue, migration.state.rawValue,
                            migration.requestedAt.timeIntervalSince1970, body,
                        ])
                }
            }
        } catch let error as DatabaseError where error.resultCode == .SQLITE_CONSTRAINT {
            throw VireoError(.conflict, "a host with that name already exists")
        }
    }

    // MARK: Console output

    public func appendConsole(_ chunks: [VMID: ConsoleChunk], retaining: Int) async throws -> [VMID: UInt64] {
        guard !chunks.isEmpty else { return [:] }
        return try await writer.write { db in
            var offsets: [VMID: UInt64] = [:]
            for (id, chunk) in chunks {
                guard try Bool.fetchOne(db, sql: "SELECT 1 FROM vms WHERE id = ?", arguments: [id.rawValue]) != nil
                else { continue }
                var tail = try Self.consoleTail(db, id) ?? ConsoleTail()
                tail.append(chunk, retaining: retaining)
                try db.execute(
                    sql: """
                        INSERT INTO consoles (vm_id, next, written, text) VALUES (?, ?, ?, ?)
                        ON CONFLICT(vm_id) DO UPDATE SET next = excluded.next, written = excluded.written, text = excluded.text
                        """,
                    arguments: [id.rawValue, Int64(bitPattern: tail.next), Int64(bitPattern: tail.written), Data(tail.text.utf8)])
                offsets[id] = tail.next
            }
            return offsets
        }
    }

    public func consoleTail(of vm: VMID) async throws -> ConsoleTail? {
        try await writer.read { db in try Self.consoleTail(db, vm) }
    }

    public func consoleOffsets() async throws -> [VMID: UInt64] {
        try await writer.read { db in
            var offsets: [VMID: UInt64] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT vm_id, next FROM consoles") {
                offsets[VMID(row["vm_id"] as String)] = UInt64(bitPattern: row["next"] as Int64)
            }
            return offsets
        }
    }

    // MARK: Access tokens and audit

    public func tokens() async throws -> [AccessToken] {
        try await writer.read { db in
            try Row.fetchAll(db, sql: "SELECT body FROM tokens ORDER BY name").map {
                try self.decoder.decode(AccessToken.self, from: $0["body"] as Data)
            }
        }
    }

    public func secret(_ name: String, proposing proposed: String) async throws -> String {
        try await writer.write { db in
            try db.execute(sql: "INSERT OR IGNORE INTO secrets (name, value) VALUES (?, ?)", arguments: [name, proposed])
            return try String.fetchOne(db, sql: "SELECT value FROM secrets WHERE name = ?", arguments: [name]) ?? proposed
        }
    }

    public func rotateSecret(_ name: String, from expected: String, to value: String, supersededDigest: String) async throws {
        try await writer.write { db in
            let current = try String.fetchOne(db, sql: "SELECT value FROM secrets WHERE name = ?", arguments: [name])
            guard current == expected else {
                throw VireoError(.conflict, "the secret '\(name)' changed meanwhile; nothing was rotated")
            }
            try db.execute(sql: "UPDATE secrets SET value = ? WHERE name = ?", arguments: [value, name])
            try db.execute(
                sql: """
                    INSERT INTO secrets (name, value) VALUES (?, ?)
                    ON CONFLICT (name) DO UPDATE SET value = value || char(10) || excluded.value
                    """,
                arguments: [Self.supersededName(of: name), supersededDigest])
        }
    }

    public func secret(_ name: String) async throws -> String? {
        try await writer.read { db in
            try String.fetchOne(db, sql: "SELECT value FROM secrets WHERE name = ?", arguments: [name])
        }
    }

    public func certificateCutoffs() async throws -> [String: Date] {
        try await writer.read { db in
            var cutoffs: [String: Date] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT host, cutoff FROM certificate_cutoffs") {
                cutoffs[row["host"]] = Date(timeIntervalSince1970: row["cutoff"])
            }
            return cutoffs
        }
    }

    public func revokeCertificates(host: String, before cutoff: Date) async throws -> Date {
        try await writer.write { db in
            try db.execute(
                sql: """
                    INSERT INTO certificate_cutoffs (host, cutoff) VALUES (?, ?)
                    ON CONFLICT (host) DO UPDATE SET cutoff = max(cutoff, excluded.cutoff)
                    """, arguments: [host, cutoff.timeIntervalSince1970])
            let stored = try Double.fetchOne(db, sql: "SELECT cutoff FROM certificate_cutoffs WHERE host = ?", arguments: [host])
            return Date(timeIntervalSince1970: stored ?? cutoff.timeIntervalSince1970)
        }
    }

    public func insertToken(_ token: AccessToken) async throws {
        let body = try encoder.encode(token)
        do {
            try await writer.write { db in
                try db.execute(
                    sql: "INSERT INTO tokens (name, secret_hash, body) VALUES (?, ?, ?)",
                    arguments: [token.name, token.secretHash, body])
            }
        } catch let error as DatabaseError where error.resultCode == .SQLITE_CONSTRAINT {
            throw VireoError(.conflict, "a token named '\(token.name)' already exists (names of revoked tokens are not reused)")
        }
    }

    public func updateToken(_ token: AccessToken) async throws {
        let body = try encoder.encode(token)
        try await writer.write { db in
            try db.execute(
                sql: "UPDATE tokens SET secret_hash = ?, body = ? WHERE name = ?",
                arguments: [token.secretHash, body, token.name])
            if db.changesCount == 0 { throw VireoError.notFound("token", token.name) }
        }
    }

    public func appendAudit(_ entry: AuditEntry) async throws -> AuditEntry {
        let body = try encoder.encode(entry)
        return try await writer.write { db in
            try db.execute(sql: "INSERT INTO audit (at, body) VALUES (?, ?)", arguments: [entry.at.timeIntervalSince1970, body])
            var stored = entry
            stored.seq = db.lastInsertedRowID
            return stored
        }
    }

    public func audit(since: Date?, limit: Int) async throws -> [AuditEntry] {
        try await writer.read { db in
            try Row.fetchAll(
                db,
                sql: "SELECT seq, body FROM (SELECT seq, body FROM audit WHERE at >= ? ORDER BY seq DESC LIMIT ?) ORDER BY seq",
                arguments: [since?.timeIntervalSince1970 ?? -Double.greatestFiniteMagnitude, limit]
            ).map { row in
                var entry = try self.decoder.decode(AuditEntry.self, from: row["body"] as Data)
                entry.seq = row["seq"]
                return entry
            }
        }
    }

    public func pruneAudit(before: Date) async throws -> Int {
        try await writer.write { db in
            try db.execute(sql: "DELETE FROM audit WHERE at < ?", arguments: [before.timeIntervalSince1970])
            return db.changesCount
        }
    }

    private static func consoleTail(_ db: Database, _ vm: VMID) throws -> ConsoleTail? {
        guard
            let row = try Row.fetchOne(
                db, sql: "SELECT next, written, text FROM consoles WHERE vm_id = ?", arguments: [vm.rawValue])
        else { return nil }
        return ConsoleTail(
            text: String(decoding: row["text"] as Data, as: UTF8.self), next: UInt64(bitPattern: row["next"] as Int64),
            written: UInt64(bitPattern: row["written"] as Int64))
    }
}
