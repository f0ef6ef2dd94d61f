import Foundation
import Testing
import VireoModel

@testable import VireoDriverQEMU

/// Replies captured from QEMU 7.2.22 (`qemu-system-x86_64 -machine pc -accel tcg -m 256 -nodefaults
/// -name web-1`) over its QMP socket; the migration ran to `exec:cat > /dev/null` with
/// max-bandwidth 100000 so that it could be seen active, then to a closed port to fail.
enum CapturedQMP {
    static let statusRunning = #"{"return": {"status": "running", "singlestep": false, "running": true}, "id": 2}"#
    static let statusPaused = #"{"return": {"status": "paused", "singlestep": false, "running": false}, "id": 8}"#
    static let statusPostmigrate =
        #"{"return": {"status": "postmigrate", "singlestep": false, "running": false}, "id": 14}"#
    static let name = #"{"return": {"name": "web-1"}, "id": 2}"#
    static let empty = #"{"return": {}, "id": 3}"#
    static let migrateActive = #"""
        {"return": {"expected-downtime": 300, "status": "active", "setup-time": 3, "total-time": 1206, "ram": {"total": 268967936, "postcopy-requests": 0, "dirty-sync-count": 1, "multifd-bytes": 0, "pages-per-second": 2010, "downtime-bytes": 0, "page-size": 4096, "remaining": 262553600, "postcopy-bytes": 0, "mbps": 0.80135999999999996, "transferred": 145237, "dirty-sync-missed-zero-copy": 0, "precopy-bytes": 145237, "duplicate": 1534, "dirty-pages-rate": 0, "skipped": 0, "normal-bytes": 131072, "normal": 32}}, "id": 6}
        """#
    static let migrateCompleted = #"""
        {"return": {"status": "completed", "setup-time": 8, "downtime": 1, "total-time": 536, "ram": {"total": 268967936, "postcopy-requests": 0, "dirty-sync-count": 4, "multifd-bytes": 0, "pages-per-second": 26940, "downtime-bytes": 0, "page-size": 4096, "remaining": 0, "postcopy-bytes": 0, "mbps": 18.496515151515151, "transferred": 1108831, "dirty-sync-missed-zero-copy": 0, "precopy-bytes": 1108831, "duplicate": 65732, "dirty-pages-rate": 0, "skipped": 0, "normal-bytes": 516096, "normal": 126}}, "id": 4}
        """#
    static let migrateCancelled = #"{"return": {"status": "cancelled"}, "id": 9}"#
    static let migrateFailed =
        #"{"return": {"status": "failed", "error-desc": "Failed to connect to '127.0.0.1:1': Connection refused"}, "id": 12}"#
}

@Suite("QMP commands")
struct QMPCommandTests {
    func decode<C: QMPCommand>(_ command: C.Type, _ reply: String) throws -> C.Response {
        try C.response(from: Data(reply.utf8))
    }

    /// The request line as JSON, and as text (to see how numbers are written).
    func request<C: QMPCommand>(_ command: C, id: Int = 1) throws -> (json: JSONValue, text: String) {
        let line = try command.request(id: id)
        return (try JSONDecoder().decode(JSONValue.self, from: line), String(decoding: line, as: UTF8.self))
    }

    @Test("query-status replies decode to the run state and whether the vCPUs run")
    func queryStatus() throws {
        #expect(try decode(QMP.QueryStatus.self, CapturedQMP.statusRunning) == .init(status: .running, running: true))
        #expect(try decode(QMP.QueryStatus.self, CapturedQMP.statusPaused) == .init(status: .paused, running: false))
        #expect(
            try decode(QMP.QueryStatus.self, CapturedQMP.statusPostmigrate) == .init(status: .postmigrate, running: false))
        // A state from a newer QEMU is not an error.
        let newer = #"{"return": {"status": "hibernating", "running": false}, "id": 1}"#
        #expect(try decode(QMP.QueryStatus.self, newer).status == .unknown)
    }

    @Test("query-migrate while active: progress in bytes and pages, no downtime yet")
    func queryMigrateActive() throws {
        let info = try decode(QMP.QueryMigrate.self, CapturedQMP.migrateActive)
        #expect(info.status == .active)
        #expect(info.ram == .init(transferred: 145_237, remaining: 262_553_600, total: 268_967_936, dirtyPagesRate: 0))
        #expect(info.totalTimeMs == 1206)
        #expect(info.setupTimeMs == 3)
        #expect(info.downtimeMs == nil)
        #expect(info.errorDescription == nil)
    }

    @Test("query-migrate once completed: total time, downtime, setup time and bytes sent")
    func queryMigrateCompleted() throws {
        let info = try decode(QMP.QueryMigrate.self, CapturedQMP.migrateCompleted)
        #expect(info.status == .completed)
        #expect(info.totalTimeMs == 536)
        #expect(info.downtimeMs == 1)
        #expect(info.setupTimeMs == 8)
        #expect(info.ram?.transferred == 1_108_831)
        #expect(info.ram?.remaining == 0)
    }

    @Test("query-migrate when cancelled, failed, or before any migration: only what QEMU sent")
    func queryMigrateEnded() throws {
        let cancelled = try decode(QMP.QueryMigrate.self, CapturedQMP.migrateCancelled)
        #expect(cancelled.status == .cancelled && cancelled.ram == nil && cancelled.totalTimeMs == nil)
        let failed = try decode(QMP.QueryMigrate.self, CapturedQMP.migrateFailed)
        #expect(failed.status == .failed)
        #expect(failed.errorDescription == "Failed to connect to '127.0.0.1:1': Connection refused")
        let never = try decode(QMP.QueryMigrate.self, CapturedQMP.empty)
        #expect(never.status == QMP.MigrationStatus.none && never.ram == nil)
        let newer = #"{"return": {"status": "postcopy-fancy"}, "id": 1}"#
        #expect(try decode(QMP.QueryMigrate.self, newer).status == .unknown)
    }

    @Test("query-name, and commands that answer {}")
    func nameAndEmpty() throws {
        #expect(try decode(QMP.QueryName.self, CapturedQMP.name).name == "web-1")
        #expect(try decode(QMP.QueryName.self, CapturedQMP.empty).name == nil)
        #expect(try decode(QMP.Stop.self, CapturedQMP.empty) == QMP.Empty())
    }

    @Test("a reply of the wrong shape is a protocol violation naming the command and the field")
    func malformed() throws {
        func violation<C: QMPCommand>(_ command: C.Type, _ reply: String) -> String? {
            let error = #expect(throws: QMPError.self) { try C.response(from: Data(reply.utf8)) }
            #expect(error?.kind == .protocolViolation)
            return error?.message
        }
        #expect(
            violation(QMP.QueryMigrate.self, #"{"return": {"status": "active", "ram": {"total": 1, "remaining": 1}}}"#)
                == "query-migrate: field 'ram.transferred' is missing")
        #expect(
            violation(QMP.QueryMigrate.self, #"{"return": {"status": "active", "total-time": "soon"}}"#)
                == "query-migrate: field 'total-time' is not an integer")
        #expect(
            violation(QMP.QueryStatus.self, #"{"return": {"status": 3, "running": true}}"#)
                == "query-status: field 'status' is not a string")
        // Foundation reports a null as a type mismatch on some platforms, a missing value on others.
        let null = violation(QMP.QueryStatus.self, #"{"return": {"status": "running", "running": null}}"#)
        #expect(null?.hasPrefix("query-status: field 'running' is ") == true)
        #expect(violation(QMP.QueryStatus.self, #"{"return": [], "id": 1}"#) == "query-status: the reply is not an object")
        #expect(violation(QMP.QueryStatus.self, #"{"id": 1}"#) == "query-status: the reply has no 'return' member")
    }

    @Test("migrate-set-parameters sends QEMU's names, whole numbers, and leaves out what is not set")
    func setParameters() throws {
        let full = try request(
            QMP.MigrateSetParameters(
                maxBandwidth: 8 << 30, downtimeLimitMs: 300, cpuThrottleInitialPercent: 20,
                cpuThrottleIncrementPercent: 10), id: 7)
        #expect(
            full.json
                == .object([
                    "execute": .string("migrate-set-parameters"), "id": .number(7),
                    "arguments": .object([
                        "max-bandwidth": .number(8_589_934_592), "downtime-limit": .number(300),
                        "cpu-throttle-initial": .number(20), "cpu-throttle-increment": .number(10),
                    ]),
                ]))
        #expect(full.text.contains(#""max-bandwidth":8589934592"#))
        let partial = try request(QMP.MigrateSetParameters(maxBandwidth: 1 << 20, downtimeLimitMs: 300))
        #expect(partial.json["arguments"] == .object(["max-bandwidth": .number(1_048_576), "downtime-limit": .number(300)]))
    }

    @Test("migrate-set-capabilities and migrate send their arguments as QEMU expects them")
    func migrationArguments() throws {
        let capabilities = try request(QMP.MigrateSetCapabilities([.autoConverge: true, .events: false]))
        #expect(
            capabilities.json["arguments"]
                == .object([
                    "capabilities": .array([
                        .object(["capability": .string("auto-converge"), "state": .bool(true)]),
                        .object(["capability": .string("events"), "state": .bool(false)]),
                    ])
                ]))
        let migrate = try request(QMP.Migrate(uri: "tcp:198.18.0.2:4444"))
        #expect(migrate.json["execute"] == .string("migrate"))
        #expect(migrate.json["arguments"] == .object(["uri": .string("tcp:198.18.0.2:4444")]))
    }

    @Test("commands without arguments send no arguments member")
    func noArguments() throws {
        let commands: [any QMPCommand] = [
            QMP.Capabilities(), QMP.QueryStatus(), QMP.QueryName(), QMP.QueryMigrate(), QMP.Stop(), QMP.Cont(),
            QMP.SystemPowerdown(), QMP.Quit(), QMP.MigrateCancel(),
        ]
        let names = try commands.map { command in
            let json = try request(command, id: 3).json
            #expect(json.objectValue?.keys.sorted() == ["execute", "id"])
            return json["execute"]?.stringValue ?? ""
        }
        #expect(
            names == [
                "qmp_capabilities", "query-status", "query-name", "query-migrate", "stop", "cont", "system_powerdown",
                "quit", "migrate_cancel",
            ])
    }

    @Test("TLS objects are added with QEMU's type and member names, and removed by id")
    func tlsObjects() throws {
        let credentials = try request(
            QMP.ObjectAddTLSCredentials(id: "vireo-tls", directory: "/var/lib/vireo/vm/tls", endpoint: .server))
        #expect(
            credentials.json
                == .object([
                    "execute": .string("object-add"), "id": .number(1),
                    "arguments": .object([
                        "qom-type": .string("tls-creds-x509"), "id": .string("vireo-tls"),
                        "dir": .string("/var/lib/vireo/vm/tls"), "endpoint": .string("server"),
                        "verify-peer": .bool(true),
                    ]),
                ]))
        let client = try request(QMP.ObjectAddTLSCredentials(id: "t", directory: "/d", endpoint: .client))
        #expect(client.json["arguments"]?["endpoint"] == .string("client"))
        let authz = try request(QMP.ObjectAddAuthzSimple(id: "vireo-authz", identity: "O=Vireo,CN=vireo-migration-m-source"))
        #expect(
            authz.json["arguments"]
                == .object([
                    "qom-type": .string("authz-simple"), "id": .string("vireo-authz"),
                    "identity": .string("O=Vireo,CN=vireo-migration-m-source"),
                ]))
        let delete = try request(QMP.ObjectDel(id: "vireo-tls"))
        #expect(delete.json["execute"] == .string("object-del"))
        #expect(delete.json["arguments"] == .object(["id": .string("vireo-tls")]))
    }

    @Test("migration and NBD take TLS credentials only when given; an empty name turns TLS off")
    func tlsParameters() throws {
        let on = try request(QMP.MigrateSetParameters(tlsCreds: "vireo-tls", tlsAuthz: "vireo-authz"))
        #expect(on.json["arguments"] == .object(["tls-creds": .string("vireo-tls"), "tls-authz": .string("vireo-authz")]))
        let off = try request(QMP.MigrateSetParameters(tlsCreds: "", tlsAuthz: ""))
        #expect(off.json["arguments"] == .object(["tls-creds": .string(""), "tls-authz": .string("")]))

        let server = try request(QMP.NBDServerStart(host: "127.0.0.1", port: 10809, tlsCreds: "t", tlsAuthz: "a"))
        #expect(
            server.json["arguments"]
                == .object([
                    "addr": .object([
                        "type": .string("inet"),
                        "data": .object(["host": .string("127.0.0.1"), "port": .string("10809")]),
                    ]),
                    "tls-creds": .string("t"), "tls-authz": .string("a"),
                ]))
        let plainServer = try request(QMP.NBDServerStart(host: "127.0.0.1", port: 10809))
        #expect(plainServer.json["arguments"]?.objectValue?.keys.sorted() == ["addr"])

        let client = try request(
            QMP.BlockdevAddNBD(nodeName: "vireo-mirror", host: "127.0.0.1", port: 10809, export: "disk0", tlsCreds: "t"))
        #expect(client.json["arguments"]?["tls-creds"] == .string("t"))
        #expect(client.json["arguments"]?["server"]?["host"] == .string("127.0.0.1"))
        let plainClient = try request(QMP.BlockdevAddNBD(nodeName: "n", host: "h", port: 1, export: "e"))
        #expect(plainClient.json["arguments"]?["tls-creds"] == nil)
    }

    @Test("events the driver acts on decode from what QEMU sends; others keep their name")
    func events() {
        let event = { (name: String, data: JSONValue) in QMP.Event(QMPEvent(name: name, data: data)) }
        #expect(
            event("SHUTDOWN", .object(["guest": .bool(true), "reason": .string("guest-shutdown")])) == .shutdown(guest: true))
        #expect(
            event("SHUTDOWN", .object(["guest": .bool(false), "reason": .string("host-qmp-quit")])) == .shutdown(guest: false))
        #expect(event("MIGRATION", .object(["status": .string("completed")])) == .migration(.completed))
        #expect(event("MIGRATION", .object(["status": .string("postcopy-active")])) == .migration(.postcopyActive))
        #expect(event("MIGRATION", .object(["status": .string("some-new-status")])) == .migration(.unknown))
        #expect(event("RESUME", .null) == .resume)
        #expect(event("STOP", .null) == .stop)
        #expect(event("BLOCK_JOB_READY", .object(["device": .string("d")])) == .other("BLOCK_JOB_READY"))
    }
}
