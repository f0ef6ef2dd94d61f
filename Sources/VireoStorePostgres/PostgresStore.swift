import Foundation
import Logging
import NIOSSL
import PostgresNIO
import Synchronization
import VireoModel
import VireoStore

/// The store of a control plane that outlives one machine: PostgreSQL through postgres-nio.
///
/// The same tables as `SQLiteStore`: records are JSON documents (`jsonb`, so an operator can query
/// them with `->>`) beside the columns that need indexes or uniqueness. The schema is migrated on
/// open, under an advisory lock, so controllers starting together on one database migrate it
/// once. Every write is one transaction.
public final class PostgresStore: ClusterStore {
    public let location: PostgresLocation
    private let client: PostgresClient
    private let running: Task<Void, Never>
    private let started: AsyncStream<Void>
    let logger: Logger
    private let encoder = JSONEncoder()
    private let decoder = JSONDecoder()
    private let fenceBox = Mutex<StoreFence?>(nil)

    /// From now on every write checks, in its transaction, that `fence` still holds the leader
    /// lease (`LeaderLease`), and is refused if not: the writes of a deposed leader never land.
    public func fence(_ fence: StoreFence?) { fenceBox.withLock { $0 = fence } }

    /// Connects to `location` (a pool of at most `connections`), creates or migrates the schema,
    /// and returns once the database answered.
    public static func open(
        _ location: PostgresLocation, connections: Int = 8, logger: Logger = Logger(label: "vireo.postgres")
    ) async throws -> PostgresStore {
        try await probe(location, logger: logger)
        let store = PostgresStore(location, connections: connections, logger: logger)
        // The pool serves leases once its run() is under way (else it warns that it has not been
        // started): wait for the task to begin it.
        await store.started.first { _ in true }
        do {
            try await store.migrate()
        } catch {
            store.close()
            throw error
        }
        return store
    }

    private init(_ location: PostgresLocation, connections: Int, logger: Logger) {
        self.location = location
        self.logger = logger
        let tls: PostgresClient.Configuration.TLS =
            switch location.tls {
            case .disable: .disable
            case .prefer: .prefer(Self.tlsConfiguration(location.tls))
            case .require, .verifyFull: .require(Self.tlsConfiguration(location.tls))
            }
        var configuration =
            if let socket = location.socketDirectory {
                PostgresClient.Configuration(
                    unixSocketPath: "\(socket)/.s.PGSQL.\(location.port)", username: location.user,
                    password: location.password, database: location.database)
            } else {
                PostgresClient.Configuration(
                    host: location.host, port: location.port, username: location.user, password: location.password,
                    database: location.database, tls: tls)
            }
        configuration.options.maximumConnections = max(1, connections)
        configuration.options.connectTimeout = .seconds(5)
        let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        self.client = client
        let (started, begun) = AsyncStream.makeStream(of: Void.self)
        self.started = started
        running = Task {
            begun.finish()
            await client.run()
        }
    }

    deinit { running.cancel() }

    /// The client's TLS: the server's certificate checked only for `verify-full`, as libpq does.
    private static func tlsConfiguration(_ mode: PostgresLocation.TLSMode) -> TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        if mode != .verifyFull { configuration.certificateVerification = .none }
        return configuration
    }

    /// One connection, opened and closed: a server that is not there, or refuses these
    /// credentials or this database, is an error now rather than a pool that retries for a minute.
    private static func probe(_ location: PostgresLocation, logger: Logger) async throws {
        var configuration: PostgresConnection.Configuration
        if let socket = location.socketDirectory {
            configuration = PostgresConnection.Configuration(
                unixSocketPath: "\(socket)/.s.PGSQL.\(location.port)", username: location.user, password: location.password,
                database: location.database)
        } else {
            let tls: PostgresConnection.Configuration.TLS =
                switch location.tls {
                case .disable: .disable
                case .prefer: .prefer(try NIOSSLContext(configuration: tlsConfiguration(location.tls)))
                case .require, .verifyFull: .require(try NIOSSLContext(configuration: tlsConfiguration(location.tls)))
                }
            configuration = PostgresConnection.Configuration(
                host: location.host, port: location.port, username: location.user, password: location.password,
                database: location.database, tls: tls)
        }
        configuration.options.connectTimeout = .seconds(5)
        do {
            let connection = try await PostgresConnection.connect(
                on: PostgresClient.defaultEventLoopGroup.next(), configuration: configuration, id: 0, logger: logger)
            try await connection.close()
        } catch {
            throw unavailable(error, location)
        }
    }

    /// Closes the pool; later calls fail.
    public func close() { running.cancel() }

    // MARK: Schema

    /// The schema's changes in order, each a name and its statements: the same steps, under the
    /// same names, as the SQLite store's.
    static let migrations: [(name: String, statements: [String])] = [
        (
            "v1: hosts and vms",
            [
                "CREATE TABLE hosts (id text PRIMARY KEY, name text NOT NULL UNIQUE, body jsonb NOT NULL)",
                """
                CREATE TABLE vms (id text PRIMARY KEY, name text NOT NULL UNIQUE, host_id text, state text NOT NULL,
                    body jsonb NOT NULL)
                """,
                "CREATE INDEX vms_host_id ON vms (host_id)",
            ]
        ),
        (
            "v2: console output",
            [
                """
                CREATE TABLE consoles (vm_id text PRIMARY KEY REFERENCES vms (id) ON DELETE CASCADE,
                    next bigint NOT NULL, written bigint NOT NULL, text bytea NOT NULL)
                """
            ]
        ),
        (
            "v3: migrations",
            [
                """
                CREATE TABLE migrations (id text PRIMARY KEY, vm_id text NOT NULL, state text NOT NULL,
                    requested_at double precision NOT NULL, body jsonb NOT NULL)
                """,
                "CREATE INDEX migrations_vm_id ON migrations (vm_id)",
            ]
        ),
        ("v4: applications", ["CREATE TABLE apps (name text PRIMARY KEY, body jsonb NOT NULL)"]),
        (
            "v5: rebalancing plans and settings",
            [
                "CREATE TABLE plans (id text PRIMARY KEY, created_at double precision NOT NULL, body jsonb NOT NULL)",
                "CREATE INDEX plans_created_at ON plans (created_at)",
                "CREATE TABLE settings (key text PRIMARY KEY, body jsonb NOT NULL)",
            ]
        ),
        ("v6: migrations by request time", ["CREATE INDEX migrations_requested_at ON migrations (requested_at)"]),
        (
            "v7: access tokens and audit",
            [
                "CREATE TABLE tokens (name text PRIMARY KEY, secret_hash text NOT NULL UNIQUE, body jsonb NOT NULL)",
                "CREATE TABLE audit (seq bigserial PRIMARY KEY, at double precision NOT NULL, body jsonb NOT NULL)",
                "CREATE INDEX audit_at ON audit (at)",
            ]
        ),
        (
            "v8: leader lease",
            [
                "CREATE TABLE leader_lease (id int PRIMARY KEY CHECK (id = 1), holder text NOT NULL, url text NOT NULL, "
                    + "term bigint NOT NULL, expires_at timestamptz NOT NULL)"
            ]
        ),
        ("v9: cluster secrets", ["CREATE TABLE secrets (name text PRIMARY KEY, value text NOT NULL)"]),
        (
            "v10: agent certificate cutoffs",
            ["CREATE TABLE certificate_cutoffs (host text PRIMARY KEY, cutoff double precision NOT NULL)"]
        ),
        (
            "v11: placement explanations apart",
            [
                "ALTER TABLE vms ADD COLUMN placement jsonb",
                "UPDATE vms SET placement = body -> 'placement', body = body - 'placement' WHERE body ? 'placement'",
            ]
        ),
    ]

    /// Any number for `pg_advisory_xact_lock`, the same in every Vireo: "vireo" in ASCII.
    static let schemaLock: Int64 = 0x76_69_72_65_6f

    private func migrate() async throws {
        try await transaction { c in
            try await c.query("SELECT pg_advisory_xact_lock(\(Self.schemaLock))", logger: self.logger)
            try await c.query(
                "CREATE TABLE IF NOT EXISTS vireo_schema (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
                logger: self.logger)
            var applied: Set<String> = []
            for try await name in try await c.query("SELECT name FROM vireo_schema", logger: self.logger).decode(String.self) {
                applied.insert(name)
            }
            let unknown = applied.subtracting(Self.migrations.map(\.name))
            guard unknown.isEmpty else {
                throw VireoError(
                    .failedPrecondition,
                    "the database \(self.location) has schema changes this Vireo does not know "
                        + "(\(unknown.sorted().joined(separator: ", "))): a newer Vireo wrote it")
            }
            for (name, statements) in Self.migrations where !applied.contains(name) {
                for statement in statements { try await c.query(PostgresQuery(unsafeSQL: statement), logger: self.logger) }
                try await c.query("INSERT INTO vireo_schema (name) VALUES (\(name))", logger: self.logger)
            }
        }
    }

    /// Names of the schema changes applied, oldest first.
    public func appliedMigrations() async throws -> [String] {
        // Steps taken in one transaction share a time; then `v9: …` before `v10: …`.
        try await rows(
            "SELECT name FROM vireo_schema ORDER BY applied_at, length(split_part(name, ':', 1)), name", String.self)
    }

    // MARK: Reading

    public func load(recent: Int, placements: Bool) async throws -> StoredCluster {
        // LIMIT NULL is no limit.
        let limit: Int? = recent == .max ? nil : recent
        return try await connection { c in
            StoredCluster(
                hosts: try await self.documents(c, "SELECT body::text FROM hosts ORDER BY name"),
                vms: placements
                    ? try await self.placedVMs(c) : try await self.documents(c, "SELECT body::text FROM vms ORDER BY name"),
                migrations: try await self.documents(
                    c,
                    """
                    SELECT body::text FROM migrations
                    WHERE state NOT IN ('completed', 'failed')
                        OR id IN (SELECT id FROM migrations ORDER BY requested_at DESC, id DESC LIMIT \(limit))
                    ORDER BY requested_at, id
                    """),
                apps: try await self.documents(c, "SELECT body::text FROM apps ORDER BY name"),
                plans: try await self.documents(
                    c,
                    """
                    SELECT body::text FROM (SELECT body, created_at, id FROM plans ORDER BY created_at DESC, id DESC
                        LIMIT \(limit)) AS newest ORDER BY created_at, id
                    """),
                rebalance: (try await self.documents(c, "SELECT body::text FROM settings WHERE key = 'rebalance'")
                    as [RebalanceSettings]).first)
        }
    }

    /// Every VM with its placement explanation.
    private func placedVMs(_ c: PostgresConnection) async throws -> [VirtualMachine] {
        var vms: [VirtualMachine] = []
        let rows = try await c.query("SELECT body::text, placement::text FROM vms ORDER BY name", logger: logger)
        for try await (body, placement) in rows.decode((String, String?).self) {
            var vm = try decoder.decode(VirtualMachine.self, from: Data(body.utf8))
            vm.placement = try placement.map { try decoder.decode(PlacementExplanation.self, from: Data($0.utf8)) }
            vms.append(vm)
        }
        return vms
    }

    public func placement(of vm: VMID) async throws -> PlacementExplanation? {
        // No row and a row without one are both nil.
        let placements: [PlacementExplanation] = try await documents(
            "SELECT placement::text FROM vms WHERE id = \(vm.rawValue) AND placement IS NOT NULL")
        return placements.first
    }

    public func migrations(of vm: VMID?, limit: Int) async throws -> [Migration] {
        if let vm {
            return try await documents(
                "SELECT body::text FROM migrations WHERE vm_id = \(vm.rawValue) ORDER BY requested_at DESC, id DESC LIMIT \(limit)"
            )
        }
        return try await documents("SELECT body::text FROM migrations ORDER BY requested_at DESC, id DESC LIMIT \(limit)")
    }

    public func migration(_ id: MigrationID) async throws -> Migration? {
        (try await documents("SELECT body::text FROM migrations WHERE id = \(id.rawValue)") as [Migration]).first
    }

    public func migrations(requestedFrom from: Date, to: Date) async throws -> [Migration] {
        try await documents(
            """
            SELECT body::text FROM migrations WHERE requested_at >= \(from.timeIntervalSince1970)
                AND requested_at < \(to.timeIntervalSince1970) ORDER BY requested_at, id
            """)
    }

    public func plans(limit: Int) async throws -> [Plan] {
        try await documents("SELECT body::text FROM plans ORDER BY created_at DESC, id DESC LIMIT \(limit)")
    }

    public func plan(_ id: String) async throws -> Plan? {
        (try await documents("SELECT body::text FROM plans WHERE id = \(id)") as [Plan]).first
    }

    public func plans(createdFrom from: Date, to: Date) async throws -> [Plan] {
        try await documents(
            """
            SELECT body::text FROM plans WHERE created_at >= \(from.timeIntervalSince1970)
                AND created_at < \(to.timeIntervalSince1970) ORDER BY created_at, id
            """)
    }

    // MARK: Writing

    public func insertVM(_ vm: VirtualMachine) async throws {
        try await commit(StoreBatch(insertedVMs: [vm]))
    }

    public func commit(_ batch: StoreBatch) async throws {
        guard !batch.isEmpty else { return }
        let inserted = try batch.insertedVMs.map(encoded)
        let updated = try batch.updatedVMs.map(encoded)
        let hosts = try batch.hosts.map { ($0, try text($0)) }
        let migrations = try batch.migrations.map { ($0, try text($0)) }
        let apps = try batch.apps.map { ($0, try text($0)) }
        let plans = try batch.plans.map { ($0, try text($0)) }
        let rebalance = try batch.rebalance.map { try text($0) }
        try await transaction { c in
            for (vm, body, placement) in inserted {
                try await self.unique("a VM named '\(vm.name)' already exists") {
                    try await c.query(
                        """
                        INSERT INTO vms (id, name, host_id, state, body, placement)
                        VALUES (\(vm.id.rawValue), \(vm.name), \(vm.hostID?.rawValue), \(vm.state.rawValue), \(body)::jsonb,
                            \(placement)::jsonb)
                        """, logger: self.logger)
                }
            }
            for (vm, body, placement) in updated {
                let changed = try await self.count(
                    c,
                    """
                    UPDATE vms SET name = \(vm.name), host_id = \(vm.hostID?.rawValue), state = \(vm.state.rawValue),
                        body = \(body)::jsonb, placement = coalesce(\(placement)::jsonb, placement)
                    WHERE id = \(vm.id.rawValue) RETURNING 1
                    """)
                if changed == 0 { throw VireoError.notFound("VM", vm.name) }
            }
            for id in batch.deletedVMs {
                // The consoles' foreign key cascades.
                if try await self.count(c, "DELETE FROM vms WHERE id = \(id.rawValue) RETURNING 1") == 0 {
                    throw VireoError.notFound("VM", id.rawValue)
                }
            }
            for (host, body) in hosts {
                try await self.unique("a host named '\(host.name)' already exists") {
                    try await c.query(
                        """
                        INSERT INTO hosts (id, name, body) VALUES (\(host.id.rawValue), \(host.name), \(body)::jsonb)
                        ON CONFLICT (id) DO UPDATE SET name = excluded.name, body = excluded.body
                        """, logger: self.logger)
                }
            }
            for (app, body) in apps {
                try await c.query(
                    """
                    INSERT INTO apps (name, body) VALUES (\(app.name), \(body)::jsonb)
                    ON CONFLICT (name) DO UPDATE SET body = excluded.body
                    """, logger: self.logger)
            }
            for (plan, body) in plans {
                try await c.query(
                    """
                    INSERT INTO plans (id, created_at, body) VALUES (\(plan.id), \(plan.createdAt.timeIntervalSince1970), \(body)::jsonb)
                    ON CONFLICT (id) DO UPDATE SET body = excluded.body
                    """, logger: self.logger)
            }
            if let rebalance {
                try await c.query(
                    """
                    INSERT INTO settings (key, body) VALUES ('rebalance', \(rebalance)::jsonb)
                    ON CONFLICT (key) DO UPDATE SET body = excluded.body
                    """, logger: self.logger)
            }
            for name in batch.deletedApps {
                if try await self.count(c, "DELETE FROM apps WHERE name = \(name) RETURNING 1") == 0 {
                    throw VireoError.notFound("application", name)
                }
            }
            for (migration, body) in migrations {
                try await c.query(
                    """
                    INSERT INTO migrations (id, vm_id, state, requested_at, body)
                    VALUES (\(migration.id.rawValue), \(migration.vmID.rawValue), \(migration.state.rawValue),
                        \(migration.requestedAt.timeIntervalSince1970), \(body)::jsonb)
                    ON CONFLICT (id) DO UPDATE SET state = excluded.state, body = excluded.body
                    """, logger: self.logger)
            }
        }
    }

    // MARK: Console output

    public func appendConsole(_ chunks: [VMID: ConsoleChunk], retaining: Int) async throws -> [VMID: UInt64] {
        guard !chunks.isEmpty else { return [:] }
        return try await transaction { c in
            var offsets: [VMID: UInt64] = [:]
            for (id, chunk) in chunks {
                // Locks the VM's row: a delete waits until this append is written, or the append
                // sees no VM.
                guard try await self.count(c, "SELECT 1 FROM vms WHERE id = \(id.rawValue) FOR UPDATE") > 0 else { continue }
                var tail = try await self.consoleTail(c, id) ?? ConsoleTail()
                tail.append(chunk, retaining: retaining)
                try await c.query(
                    """
                    INSERT INTO consoles (vm_id, next, written, text)
                    VALUES (\(id.rawValue), \(Int64(bitPattern: tail.next)), \(Int64(bitPattern: tail.written)), \(Data(tail.text.utf8)))
                    ON CONFLICT (vm_id) DO UPDATE SET next = excluded.next, written = excluded.written, text = excluded.text
                    """, logger: self.logger)
                offsets[id] = tail.next
            }
            return offsets
        }
    }

    public func consoleTail(of vm: VMID) async throws -> ConsoleTail? {
        try await connection { c in try await self.consoleTail(c, vm) }
    }

    public func consoleOffsets() async throws -> [VMID: UInt64] {
        try await connection { c in
            var offsets: [VMID: UInt64] = [:]
            let rows = try await c.query("SELECT vm_id, next FROM consoles", logger: self.logger)
            for try await (id, next) in rows.decode((String, Int64).self) {
                offsets[VMID(id)] = UInt64(bitPattern: next)
            }
            return offsets
        }
    }

    // MARK: Access tokens and audit

    public func tokens() async throws -> [AccessToken] {
        try await documents("SELECT body::text FROM tokens ORDER BY name")
    }

    public func secret(_ name: String, proposing proposed: String) async throws -> String {
        try await connection { c in
            try await c.query(
                "INSERT INTO secrets (name, value) VALUES (\(name), \(proposed)) ON CONFLICT (name) DO NOTHING",
                logger: self.logger)
            for try await value in try await c.query("SELECT value FROM secrets WHERE name = \(name)", logger: self.logger)
                .decode(String.self)
            {
                return value
            }
            throw VireoError(.internal, "the secret '\(name)' was stored and then not found")
        }
    }

    public func rotateSecret(_ name: String, from expected: String, to value: String, supersededDigest: String) async throws {
        let superseded = Self.supersededName(of: name)
        try await transaction { c in
            let changed = try await self.count(
                c, "UPDATE secrets SET value = \(value) WHERE name = \(name) AND value = \(expected) RETURNING 1")
            guard changed == 1 else {
                throw VireoError(.conflict, "the secret '\(name)' changed meanwhile; nothing was rotated")
            }
            try await c.query(
                """
                INSERT INTO secrets (name, value) VALUES (\(superseded), \(supersededDigest))
                ON CONFLICT (name) DO UPDATE SET value = secrets.value || chr(10) || excluded.value
                """, logger: self.logger)
        }
    }

    public func secret(_ name: String) async throws -> String? {
        try await rows("SELECT value FROM secrets WHERE name = \(name)", String.self).first
    }

    public func certificateCutoffs() async throws -> [String: Date] {
        try await connection { c in
            var cutoffs: [String: Date] = [:]
            for try await (host, cutoff) in try await c.query("SELECT host, cutoff FROM certificate_cutoffs", logger: self.logger)
                .decode((String, Double).self)
            {
                cutoffs[host] = Date(timeIntervalSince1970: cutoff)
            }
            return cutoffs
        }
    }

    public func revokeCertificates(host: String, before cutoff: Date) async throws -> Date {
        try await transaction { c in
            let rows = try await c.query(
                """
                INSERT INTO certificate_cutoffs (host, cutoff) VALUES (\(host), \(cutoff.timeIntervalSince1970))
                ON CONFLICT (host) DO UPDATE SET cutoff = GREATEST(certificate_cutoffs.cutoff, EXCLUDED.cutoff)
                RETURNING cutoff
                """, logger: self.logger)
            for try await stored in rows.decode(Double.self) { return Date(timeIntervalSince1970: stored) }
            throw VireoError(.internal, "the certificate cutoff of host '\(host)' was stored and then not found")
        }
    }

    public func insertToken(_ token: AccessToken) async throws {
        let body = try text(token)
        try await transaction { c in
            try await self.unique("a token named '\(token.name)' already exists (names of revoked tokens are not reused)") {
                try await c.query(
                    "INSERT INTO tokens (name, secret_hash, body) VALUES (\(token.name), \(token.secretHash), \(body)::jsonb)",
                    logger: self.logger)
            }
        }
    }

    public func updateToken(_ token: AccessToken) async throws {
        let body = try text(token)
        let changed = try await transaction { c in
            try await self.count(
                c,
                """
                UPDATE tokens SET secret_hash = \(token.secretHash), body = \(body)::jsonb WHERE name = \(token.name)
                RETURNING 1
                """)
        }
        if changed == 0 { throw VireoError.notFound("token", token.name) }
    }

    public func appendAudit(_ entry: AuditEntry) async throws -> AuditEntry {
        let body = try text(entry)
        let seq = try await transaction { c in
            let query: PostgresQuery =
                "INSERT INTO audit (at, body) VALUES (\(entry.at.timeIntervalSince1970), \(body)::jsonb) RETURNING seq"
            var seqs: [Int64] = []
            for try await seq in try await c.query(query, logger: self.logger).decode(Int64.self) { seqs.append(seq) }
            return seqs[0]
        }
        var stored = entry
        stored.seq = seq
        return stored
    }

    public func audit(since: Date?, limit: Int) async throws -> [AuditEntry] {
        try await connection { c in
            let rows = try await c.query(
                """
                SELECT seq, body::text FROM (SELECT seq, body FROM audit WHERE at >= \(since?.timeIntervalSince1970 ?? -Double.greatestFiniteMagnitude)
                    ORDER BY seq DESC LIMIT \(limit)) AS newest ORDER BY seq
                """, logger: self.logger)
            var entries: [AuditEntry] = []
            for try await (seq, body) in rows.decode((Int64, String).self) {
                var entry = try self.decoder.decode(AuditEntry.self, from: Data(body.utf8))
                entry.seq = seq
                entries.append(entry)
            }
            return entries
        }
    }

    public func pruneAudit(before: Date) async throws -> Int {
        try await transaction { c in
            try await self.count(c, "DELETE FROM audit WHERE at < \(before.timeIntervalSince1970) RETURNING 1")
        }
    }

    private func consoleTail(_ c: PostgresConnection, _ vm: VMID) async throws -> ConsoleTail? {
        let rows = try await c.query(
            "SELECT next, written, text FROM consoles WHERE vm_id = \(vm.rawValue)", logger: logger)
        for try await (next, written, text) in rows.decode((Int64, Int64, Data).self) {
            return ConsoleTail(
                text: String(decoding: text, as: UTF8.self), next: UInt64(bitPattern: next),
                written: UInt64(bitPattern: written))
        }
        return nil
    }

    // MARK: Plumbing

    /// A VM's record and its placement explanation, each as stored.
    private func encoded(_ vm: VirtualMachine) throws -> (vm: VirtualMachine, body: String, placement: String?) {
        (vm, try text(vm.withoutPlacement), try vm.placement.map { explanation in try text(explanation) })
    }

    private func text(_ value: some Encodable) throws -> String {
        String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    /// The JSON documents the query's single column holds, decoded.
    private func documents<T: Decodable>(_ c: PostgresConnection, _ query: PostgresQuery) async throws -> [T] {
        var values: [T] = []
        for try await body in try await c.query(query, logger: logger).decode(String.self) {
            values.append(try decoder.decode(T.self, from: Data(body.utf8)))
        }
        return values
    }

    private func documents<T: Decodable & Sendable>(_ query: PostgresQuery) async throws -> [T] {
        try await connection { c in try await self.documents(c, query) }
    }

    private func rows<T: PostgresDecodable & Sendable>(_ query: PostgresQuery, _ type: T.Type) async throws -> [T] {
        try await connection { c in
            var values: [T] = []
            for try await value in try await c.query(query, logger: self.logger).decode(T.self) { values.append(value) }
            return values
        }
    }

    /// How many rows the query returned (a write's `RETURNING 1`: how many it changed).
    private func count(_ c: PostgresConnection, _ query: PostgresQuery) async throws -> Int {
        try await c.query(query, logger: logger).collect().count
    }

    /// Runs `write`; a unique violation is a conflict, `message`.
    private func unique(_ message: String, _ write: () async throws -> Void) async throws {
        do {
            try await write()
        } catch let error as PSQLError where error.serverInfo?[.sqlState] == "23505" {
            throw VireoError(.conflict, message)
        }
    }

    func connection<T: Sendable>(_ work: (PostgresConnection) async throws -> T) async throws -> T {
        do {
            return try await client.withConnection { try await work($0) }
        } catch let error as VireoError {
            throw error
        } catch {
            throw Self.unavailable(error, location)
        }
    }

    /// `work` in one transaction, committed if it returns and rolled back if it throws; its error
    /// is the one thrown.
    private func transaction<T: Sendable>(_ work: (PostgresConnection) async throws -> T) async throws -> T {
        let fence = fenceBox.withLock { $0 }
        return try await connection { c in
            try await c.query("BEGIN", logger: self.logger)
            let value: T
            do {
                if let fence { try await self.checkFence(fence, c) }
                value = try await work(c)
            } catch {
                _ = try? await c.query("ROLLBACK", logger: self.logger)
                throw error
            }
            try await c.query("COMMIT", logger: self.logger)
            return value
        }
    }

    /// A driver, pool or server error as Vireo's: what the server said, or why it was not reached.
    private static func unavailable(_ error: any Error, _ location: PostgresLocation) -> VireoError {
        guard let error = error as? PSQLError else {
            return VireoError(.unavailable, "PostgreSQL at \(location) cannot be reached: \(error)")
        }
        if let message = error.serverInfo?[.message] {
            return VireoError(.unavailable, "PostgreSQL at \(location): \(message)")
        }
        let reason = error.underlying.map { String(describing: $0) } ?? "\(error.code)"
        return VireoError(.unavailable, "PostgreSQL at \(location) cannot be reached: \(reason)")
    }
}
