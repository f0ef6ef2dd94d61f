import Foundation
import Testing
import VireoDriver
import VireoModel
import VireoProcess
import VireoStore
import VireoStorePostgres

extension Tag {
    /// Tests that run a real PostgreSQL server (Debian's `postgresql`), all in suites whose names
    /// start with "PostgreSQL": `swift test --skip PostgreSQL` leaves them out.
    @Tag static var database: Self
}

/// A private PostgreSQL server for the length of a suite: started in a temporary directory on a
/// loopback port before its first test, stopped after its last.
struct PostgresServerScope: SuiteTrait, TestScoping {
    @TaskLocal static var server: PostgresServer?

    func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        let directory = temporaryDirectory()
        // Not durable: what the tests check does not need the disk flushed at each commit. Niced:
        // its initdb and start-up took the CPU the in-process clusters of other suites need for
        // their 50 ms heartbeats (hosts missed their 3 s timeout while it started).
        let server = try await PostgresServer.start(
            in: directory, port: try LoopbackPort.free(), durable: false, niceness: 10)
        do {
            try await Self.$server.withValue(server) { try await function() }
        } catch {
            try? await server.stop()
            throw error
        }
        try await server.stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// The suite's server.
    static func current() throws -> PostgresServer {
        try #require(server, "the suite runs inside PostgresServerScope")
    }

    /// A new, empty database on the suite's server.
    static func freshDatabase() async throws -> PostgresLocation {
        try await current().createDatabase(
            "t" + UUID().uuidString.prefix(12).lowercased().replacingOccurrences(of: "-", with: ""))
    }
}

extension Trait where Self == PostgresServerScope {
    static var postgresServer: Self { PostgresServerScope() }
}

let postgresInstalled = PostgresServer.installedBinaries() != nil

@Suite(
    "PostgreSQL store", .tags(.database), .serialized,
    .enabled(if: postgresInstalled, "needs PostgreSQL (Debian's postgresql, which `make test` installs)"),
    .postgresServer)
struct PostgresStoreTests {
    @Test("every store check on PostgreSQL", arguments: StoreCheck.all)
    func conformance(check: StoreCheck) async throws {
        let store = try await PostgresStore.open(try await PostgresServerScope.freshDatabase())
        defer { store.close() }
        try await check.run(store)
    }

    @Test("data survives closing and reopening; controllers opening one database together migrate it once")
    func reopen() async throws {
        let database = try await PostgresServerScope.freshDatabase()
        let vm = sampleVM("durable")
        // Four at once: the advisory lock lets one create the schema, the others find it made.
        let stores = try await withThrowingTaskGroup { group in
            for _ in 0..<4 { group.addTask { try await PostgresStore.open(database) } }
            return try await group.reduce(into: [PostgresStore]()) { $0.append($1) }
        }
        try await stores[0].insertVM(vm)
        for store in stores {
            #expect(try await store.load().vms == [vm])
            store.close()
        }
        let reopened = try await PostgresStore.open(database)
        defer { reopened.close() }
        #expect(try await reopened.load().vms == [vm])
        #expect(
            try await reopened.appliedMigrations() == [
                "v1: hosts and vms", "v2: console output", "v3: migrations", "v4: applications",
                "v5: rebalancing plans and settings", "v6: migrations by request time", "v7: access tokens and audit",
                "v8: leader lease", "v9: cluster secrets", "v10: agent certificate cutoffs",
                "v11: placement explanations apart",
            ])
        #expect(try await reopened.appliedMigrations() == (try SQLiteStore().appliedMigrations()), "the same steps as SQLite")
    }

    @Test("a database a newer Vireo wrote is refused, naming what it does not know, and left as it was")
    func newerSchema() async throws {
        let database = try await PostgresServerScope.freshDatabase()
        let vm = sampleVM("kept")
        do {
            let store = try await PostgresStore.open(database)
            try await store.insertVM(vm)
            store.close()
        }
        try await psql(database, "INSERT INTO vireo_schema (name) VALUES ('v99: from the future')")
        let error = await #expect(throws: VireoError.self) { try await PostgresStore.open(database) }
        #expect(error?.code == .failedPrecondition)
        #expect(error?.message.contains("v99: from the future") == true, "\(String(describing: error))")
        try await psql(database, "DELETE FROM vireo_schema WHERE name = 'v99: from the future'")
        let store = try await PostgresStore.open(database)
        defer { store.close() }
        #expect(try await store.load().vms == [vm])
    }

    @Test("a database an earlier Vireo wrote, with the placement explanations inside the records, has them moved apart on open")
    func placementsMovedApart() async throws {
        let database = try await PostgresServerScope.freshDatabase()
        let placed = samplePlacedVM("placed")
        let plain = sampleVM("plain")
        do {
            let store = try await PostgresStore.open(database)
            try await store.commit(StoreBatch(insertedVMs: [placed, plain]))
            store.close()
        }
        // Back to before the step: the explanation inside the record, no column, the step not applied.
        try await psql(
            database,
            """
            UPDATE vms SET body = body || jsonb_build_object('placement', placement) WHERE placement IS NOT NULL;
            ALTER TABLE vms DROP COLUMN placement;
            DELETE FROM vireo_schema WHERE name = 'v11: placement explanations apart';
            """)
        let store = try await PostgresStore.open(database)
        defer { store.close() }
        #expect(try await store.load().vms == [placed, plain])
        #expect(try await store.load(recent: 10, placements: false).vms == [placed.withoutPlacement, plain])
        #expect(try await store.placement(of: placed.id) == placed.placement)
        let inside = try await psql(database, "SELECT count(*) FROM vms WHERE body ? 'placement'")
        #expect(inside.trimmingCharacters(in: .whitespacesAndNewlines) == "0")
    }

    @Test("records are jsonb an operator can query")
    func operatorQuery() async throws {
        let database = try await PostgresServerScope.freshDatabase()
        let store = try await PostgresStore.open(database)
        defer { store.close() }
        try await store.insertVM(sampleVM("web-1"))
        let out = try await psql(database, "SELECT body->'spec'->>'name' FROM vms")
        #expect(out.trimmingCharacters(in: .whitespacesAndNewlines) == "web-1")
    }

    @Test("vireo up --store postgres:// keeps the cluster in PostgreSQL, not in the data directory, across a kill -9")
    func controllerOnPostgres() async throws {
        let database = try await PostgresServerScope.freshDatabase()
        let url = "postgres://postgres@127.0.0.1:\(database.port)/\(database.database)?sslmode=disable"
        let dataDir = temporaryDirectory()
        var up = try UpProcess(dataDir: dataDir, extra: ["--store", url])
        var server = try await up.ready()
        #expect(try await vireo(["vm", "create", "pg-1", "--memory", "80MiB"], server: server).status == 0)
        try await eventually("pg-1 running", within: 30) {
            try await vireo(["vm", "show", "pg-1", "-o", "json"], server: server).stdout.contains("\"state\" : \"running\"")
        }
        #expect(!FileManager.default.fileExists(atPath: dataDir + "/vireo.db"), "the records are not in SQLite")
        #expect(try await psql(database, "SELECT state FROM vms WHERE name = 'pg-1'").contains("running"))
        up.kill()
        up = try UpProcess(dataDir: dataDir, extra: ["--store", url])
        server = try await up.ready()
        let list = try await vireo(["vm", "list", "-o", "json"], server: server)
        #expect(list.status == 0 && list.stdout.contains("pg-1"), "\(list.stdout) \(up.logText)")
        up.kill()
    }

    @Test("vireo bench cluster --store postgres runs its own server, measures it beside the controller, and loses nothing")
    func bench() async throws {
        struct Result: Decodable {
            var hosts: Int
            var vms: Int
            var heartbeats: Int
            var lost: Int
            var databaseCores: Double?
            var databasePSSMiB: Double?
        }
        let run = try await vireo([
            "bench", "cluster", "--hosts", "8", "--vms", "40", "--heartbeat", "500ms", "--duration", "2s", "--probes", "4",
            "--store", "postgres", "-o", "json",
        ])
        #expect(run.status == 0, "\(run.stderr)")
        let result = try JSONDecoder().decode(Result.self, from: Data(run.stdout.utf8))
        #expect(result.hosts == 8 && result.vms == 40 && result.heartbeats > 0)
        #expect(result.lost == 0)
        // Measured (a 2 s run may take less CPU than one clock tick shows: at least 0).
        #expect((result.databaseCores ?? -1) >= 0 && (result.databasePSSMiB ?? 0) > 0, "\(run.stdout)")
    }

    @Test("vireo bench cluster refuses a database that already holds a cluster, and leaves it as it was")
    func benchRefusesUsedDatabase() async throws {
        let database = try await PostgresServerScope.freshDatabase()
        let store = try await PostgresStore.open(database)
        defer { store.close() }
        let vm = sampleVM("precious")
        try await store.insertVM(vm)
        let url = "postgres://postgres@127.0.0.1:\(database.port)/\(database.database)?sslmode=disable"
        let run = try await vireo(["bench", "cluster", "--hosts", "2", "--vms", "2", "--probes", "1", "--store", url])
        #expect(run.status != 0)
        #expect(run.stderr.contains("holds 0 hosts and 1 VMs"), "\(run.stderr)")
        #expect(try await store.load().vms == [vm])
    }

    @Test("sslmode=require against a server without TLS is refused at open; prefer falls back to plain")
    func tlsModes() async throws {
        var database = try await PostgresServerScope.freshDatabase()
        database.tls = .require
        let error = await #expect(throws: VireoError.self) { try await PostgresStore.open(database) }
        #expect(error?.code == .unavailable, "\(String(describing: error))")
        database.tls = .prefer
        let store = try await PostgresStore.open(database)
        store.close()
    }

    /// Runs `sql` with Debian's psql; returns its unaligned output.
    @discardableResult
    func psql(_ database: PostgresLocation, _ sql: String) async throws -> String {
        try await HostTool.text(
            "psql",
            ["-h", database.host, "-p", "\(database.port)", "-U", database.user, "-d", database.database, "-At", "-c", sql])
    }
}

@Suite("PostgreSQL locations")
struct PostgresLocationTests {
    @Test("a postgres:// URL is read as libpq reads it")
    func parse() throws {
        let full = try PostgresLocation(url: "postgres://vireo:s%40cret@db.example:6543/cluster?sslmode=require")
        #expect(
            full
                == PostgresLocation(
                    host: "db.example", port: 6543, user: "vireo", password: "s@cret", database: "cluster", tls: .require))
        #expect(try PostgresLocation(url: "postgresql://127.0.0.1/vireo") == PostgresLocation(database: "vireo"))
        let socket = try PostgresLocation(url: "postgres:///vireo?host=/run/postgresql")
        #expect(socket.socketDirectory == "/run/postgresql")
        #expect(socket.database == "vireo")
        #expect(try PostgresLocation(url: "postgres://[::1]:5433/x").host == "::1")
        #expect(try PostgresLocation(url: "postgres://h/x?sslmode=verify-full").tls == .verifyFull)
        #expect(full.description == "postgres://vireo@db.example:6543/cluster", "no password")
    }

    @Test(
        "a bad URL is refused naming the flag and the value, never the password",
        arguments: [
            ("mysql://h/db", "expected postgres://"),
            ("postgres://u:pw@h/db?sslmode=maybe", "sslmode"),
            ("postgres://u:pw@h/db?pool=3", "unknown parameter 'pool'"),
            ("postgres://u:pw@h/a/b", "one path segment"),
            ("postgres://u:pw@h/db?host=relative", "socket directory"),
        ])
    func invalid(url: String, says: String) throws {
        let error = #expect(throws: VireoError.self) { try PostgresLocation(url: url) }
        #expect(error?.code == .invalidArgument)
        let message = error?.message ?? ""
        #expect(message.contains("--store") && message.contains(says), "\(message)")
        #expect(!message.contains("pw"), "the password is hidden: \(message)")
    }

    @Test("a server that is not there is a clear error, soon")
    func unreachable() async throws {
        let port = try LoopbackPort.free()
        let started = ContinuousClock.now
        let error = await #expect(throws: VireoError.self) {
            try await PostgresStore.open(PostgresLocation(port: port, database: "vireo", tls: .disable))
        }
        #expect(error?.code == .unavailable)
        #expect(error?.message.contains("127.0.0.1:\(port)") == true, "\(String(describing: error))")
        #expect(ContinuousClock.now - started < .seconds(30))
    }
}
