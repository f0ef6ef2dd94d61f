import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Testing
import VireoAPI
import VireoDriver
import VireoModel
import VireoStore
import VireoStorePostgres

@testable import VireoClient

/// Controllers sharing one PostgreSQL database: one leader by a lease, with its term fencing the
/// store; standbys redirect; a standby takes over when the leader dies; clients and agents given
/// every controller's URL follow the leader.
@Suite(
    "PostgreSQL HA: the leader lease and failover", .tags(.database), .serialized,
    .enabled(if: postgresInstalled, "needs PostgreSQL (Debian's postgresql, which `make test` installs)"),
    .postgresServer)
struct HATests {
    @Test("one holder at a time; a new holder raises the term, and the old one's writes are refused and change nothing")
    func fencing() async throws {
        let database = try await PostgresServerScope.freshDatabase()
        let a = try await PostgresStore.open(database)
        let b = try await PostgresStore.open(database)
        defer {
            a.close()
            b.close()
        }
        #expect(try await a.currentLease() == nil)
        let first = try await a.claimLease(holder: "a", url: "http://a", ttl: .seconds(1))
        #expect(first == LeaderLease(holder: "a", url: "http://a", term: 1, live: true))
        a.fence(StoreFence(holder: "a", term: 1))
        // While a's lease runs, b cannot take it, and learns where the leader is.
        #expect(try await b.claimLease(holder: "b", url: "http://b", ttl: .seconds(1)).holder == "a")
        let one = sampleVM("one")
        try await a.insertVM(one)
        // a renews: the same term.
        #expect(try await a.claimLease(holder: "a", url: "http://a", ttl: .milliseconds(300)).term == 1)
        try await Task.sleep(for: .milliseconds(400))
        let second = try await b.claimLease(holder: "b", url: "http://b", ttl: .seconds(30))
        #expect(second == LeaderLease(holder: "b", url: "http://b", term: 2, live: true))
        b.fence(StoreFence(holder: "b", term: 2))
        // The deposed leader's writes are refused, naming why, and change nothing.
        let two = sampleVM("two")
        let refused = await #expect(throws: VireoError.self) { try await a.insertVM(two) }
        #expect(refused?.code == .unavailable)
        #expect(refused?.message.contains("no longer leads") == true, "\(refused?.message ?? "")")
        await #expect(throws: VireoError.self) {
            try await a.appendAudit(
                AuditEntry(at: Date(), who: "x", role: .admin, method: "POST", path: "/", status: 200, requestId: "r"))
        }
        #expect(try await b.load().vms == [one])
        // Nor can it take the lease back while b holds it.
        #expect(try await a.claimLease(holder: "a", url: "http://a", ttl: .seconds(1)).holder == "b")
        try await b.insertVM(two)
        #expect(try await b.load().vms.map(\.name).sorted() == ["one", "two"])
        // A clean stop hands the lease over at once, with a new term.
        try await b.releaseLease(holder: "b")
        #expect(try await a.claimLease(holder: "a2", url: "http://a", ttl: .seconds(1)).term == 3)
    }

    @Test(
        "two controllers: the standby redirects; after kill -9 of the leader it takes over, the CLI and an agent given both URLs follow, and a clean stop hands the lease over"
    )
    func failover() async throws {
        let pair = try await ControllerPair.start(extra: ["--heartbeat", "500ms"])
        defer { pair.stop() }
        let (a, b, urlA, urlB) = (pair.a, pair.b, pair.urlA, pair.urlB)
        let both = "\(urlA),\(urlB)"
        let health = try await vireo(["vm", "list"], server: urlB)
        #expect(health.status == 0, "B redirects a read to A: \(health.stderr)")

        let agent = try BackgroundVireo([
            "agent", "--controller", both, "--name", "h1", "--state-dir", temporaryDirectory(), "--driver", "simulated",
            "--driver-opt", "boot-delay-ms=50",
        ])
        defer { agent.kill() }
        try await eventually("h1 joined", within: 30) {
            try await vireo(["host", "list"], server: both).stdout.contains("ready")
        }
        // A write sent to the standby alone is redirected to the leader.
        let created = try await vireo(["vm", "create", "web-1", "--image", "tiny", "--memory", "80MiB"], server: urlB)
        #expect(created.status == 0, "\(created.stderr)")

        a.kill()
        let killed = ContinuousClock.now
        try await eventually("a write succeeds after the leader died", within: 30) {
            try await vireo(["vm", "create", "web-2", "--image", "tiny", "--memory", "80MiB"], server: both).status == 0
        }
        print("failover: a write succeeded \(ContinuousClock.now - killed) after kill -9 of the leader (lease 2s)")
        #expect(b.logText.contains("leading in term 2"), "\(b.logText)")
        try await eventually("both VMs run on h1 under the new leader", within: 30) {
            let list = try await vireo(["vm", "list", "-o", "json"], server: urlB).stdout
            return list.contains("web-1") && list.contains("web-2") && !list.contains("pending")
                && !list.contains("\"starting\"")
        }
        #expect(try await vireo(["host", "list"], server: both).stdout.contains("ready"))

        // A restarted controller stands by; the leader stopped cleanly gives the lease up to it.
        let again = try pair.controller(pair.portA)
        defer { again.kill() }
        try await eventually("the restarted A stands by", within: 30) { again.logText.contains("standing by") }
        b.process.terminate()
        b.process.waitUntilExit()
        #expect(b.process.terminationStatus == 0, "\(b.logText)")
        try await eventually("A leads again", within: 30) { again.logText.contains("leading in term 3") }
        #expect(try await vireo(["vm", "list"], server: both).stdout.contains("web-2"))
        // A standby stopped with SIGTERM exits with success.
        let standby = try pair.controller(pair.portB)
        defer { standby.kill() }
        try await eventually("B stands by again", within: 30) { standby.logText.contains("standing by") }
        standby.process.terminate()
        standby.process.waitUntilExit()
        #expect(standby.process.terminationStatus == 0, "\(standby.logText)")
    }
}

extension HATests {
    @Test("a leader frozen past its lease wakes deposed: it exits, and the cluster it left is the successor's")
    func frozenLeader() async throws {
        let pair = try await ControllerPair.start()
        defer { pair.stop() }
        let (a, b, urlA, urlB) = (pair.a, pair.b, pair.urlA, pair.urlB)
        #expect(try await vireo(["vm", "create", "before", "--image", "tiny"], server: urlA).status == 0)

        kill(a.process.processIdentifier, SIGSTOP)
        try await eventually("B takes the lease while A is frozen", within: 30) { b.logText.contains("leading in term 2") }
        // While B loads the cluster its standby's server answers 503 ("taking over"), then hands
        // the port to its own: a client given B alone waits for it to serve (one given both URLs
        // would try the other).
        try await eventually("B serves as the leader", within: 30) { b.logText.contains("API on") }
        let after = try await vireo(["vm", "create", "after", "--image", "tiny"], server: urlB)
        #expect(after.status == 0, "\(after.stderr)")
        kill(a.process.processIdentifier, SIGCONT)
        try await eventually("A stops once it finds the lease gone", within: 30) { !a.process.isRunning }
        #expect(a.process.terminationStatus == 5, "\(a.logText)")
        #expect(a.logText.contains("lost the leader lease") || a.logText.contains("ran out"), "\(a.logText)")
        let names = try await vireo(["vm", "list", "-o", "json"], server: urlB).stdout
        #expect(names.contains("\"before\"") && names.contains("\"after\""), "\(names)")
    }
}

extension HATests {
    @Test(
        "a standby serves reads of the cluster's records from the database, marked as its own and at most seconds old, and loads nothing while nobody reads; writes, reads that ask for the leader and what only the leader knows go to the leader"
    )
    func standbyReads() async throws {
        let pair = try await ControllerPair.start()
        defer { pair.stop() }
        let (urlA, urlB) = (pair.urlA, pair.urlB)
        #expect(try await vireo(["vm", "create", "web-1", "--image", "tiny"], server: urlA).status == 0)

        // Redirects are seen, not followed.
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        let http = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
        func get(_ path: String, method: HTTPMethod = .GET, headers: [(String, String)] = []) async throws -> (
            status: Int, headers: HTTPHeaders, body: String
        ) {
            var request = HTTPClientRequest(url: urlB + path)
            request.method = method
            for (name, value) in headers { request.headers.add(name: name, value: value) }
            if method == .POST { request.body = .bytes(ByteBuffer(string: #"{"name":"x","image":"tiny"}"#)) }
            let response = try await http.execute(request, timeout: .seconds(10))
            let body = try await response.body.collect(upTo: 1 << 20)
            return (Int(response.status.code), response.headers, String(buffer: body))
        }
        do {
            try await eventually("B serves the VM list itself", within: 10) {
                let list = try await get("/v1/vms")
                return list.status == 200 && list.body.contains("web-1")
            }
            let list = try await get("/v1/vms")
            #expect(list.headers.first(name: "Vireo-Standby") == urlA)
            let age = try #require(Int(list.headers.first(name: "Vireo-Snapshot-Age-Ms") ?? ""))
            #expect(age >= 0 && age <= 5000)
            // One VM's view, with its placement explanation: the snapshot reads it from the store.
            try await eventually("B shows web-1's placement explanation as A does", within: 10) {
                let one = try await get("/v1/vms/web-1")
                #expect(one.status == 200 && one.headers.first(name: "Vireo-Standby") == urlA)
                let fromLeader = try await http.execute(HTTPClientRequest(url: urlA + "/v1/vms/web-1"), timeout: .seconds(10))
                let leaderView = try VireoJSON.decoder().decode(
                    VMView.self, from: Data(buffer: try await fromLeader.body.collect(upTo: 1 << 20)))
                let standbyView = try VireoJSON.decoder().decode(VMView.self, from: Data(one.body.utf8))
                return leaderView.placement != nil && standbyView.placement == leaderView.placement
            }
            #expect(try await get("/v1/vms/web-1/logs").status == 200)
            #expect(try await get("/v1/hosts").status == 200)
            #expect(try await get("/openapi.json").status == 200)
            // What changes reaches it within a refresh or two.
            #expect(try await vireo(["vm", "create", "web-2", "--image", "tiny"], server: urlA).status == 0)
            try await eventually("B sees web-2", within: 10) { try await get("/v1/vms").body.contains("web-2") }

            // The leader's: changes, reads that ask for it, and what lives in its memory.
            let write = try await get("/v1/vms", method: .POST)
            #expect(write.status == 307 && write.headers.first(name: "Location") == urlA + "/v1/vms")
            let strict = try await get("/v1/vms", headers: [("Vireo-Consistency", "leader")])
            #expect(strict.status == 307)
            #expect(try await get("/v1/apps").status == 307)
            #expect(try await get("/v1/agent/watch?host=x&after=0").status == 307)
            #expect(try await get("/healthz").status == 503)
            // The CLI reads what it changed: it is sent to the leader.
            let shown = try await vireo(["vm", "show", "web-2", "-o", "json"], server: urlB)
            #expect(shown.status == 0, "\(shown.stderr)")

            // Nobody reads from B for 11 s: it stops loading snapshots after 5 s (the leader's
            // reads above do not count), so its last one is too old to serve and the next read
            // goes to the leader; the reads after it are served by B again.
            try await Task.sleep(for: .seconds(11))
            #expect(try await get("/v1/vms").status == 307)
            try await eventually("B serves reads again", within: 10) { try await get("/v1/vms").status == 200 }
        } catch {
            try await http.shutdown()
            throw error
        }
        try await http.shutdown()
    }

    /// Starts `vireo controller`s on a fresh database, each given its data directory and port:
    /// listening beyond loopback, so that they have tokens; spoken to on 127.0.0.1 only.
    static func beyondLoopback(extra: [String]) async throws -> @Sendable (String, Int) throws -> BackgroundVireo {
        let database = try await PostgresServerScope.freshDatabase()
        let store = "postgres://\(database.user)@127.0.0.1:\(database.port)/\(database.database)?sslmode=disable"
        return { dataDir, port in
            try BackgroundVireo(
                [
                    "controller", "--data-dir", dataDir, "--listen", "0.0.0.0:\(port)", "--store", store, "--lease-ttl", "2s",
                    "--log-level", "notice",
                ] + extra)
        }
    }

    @Test(
        "controllers on one database share the first one's tokens and certificate authority; a data directory holding another cluster's is refused, untouched"
    )
    func sharedSecrets() async throws {
        let start = try await Self.beyondLoopback(extra: ["--tls-auto"])
        let (dirA, dirB, dirC) = (temporaryDirectory(), temporaryDirectory(), temporaryDirectory())
        let (portA, portB) = (try LoopbackPort.free(), try LoopbackPort.free())
        let a = try start(dirA, portA)
        defer { a.kill() }
        try await eventually("controller A leads", within: 30) { a.logText.contains("API on https://") }
        let b = try start(dirB, portB)
        defer { b.kill() }
        try await eventually("controller B stands by", within: 30) { b.logText.contains("standing by") }

        let files = ["admin.token", "join.token", "tls/ca-cert.pem", "tls/ca-key.pem"]
        func read(_ dir: String, _ file: String) throws -> String {
            try String(contentsOfFile: dir + "/" + file, encoding: .utf8)
        }
        for file in files {
            #expect(try read(dirB, file) == (try read(dirA, file)), "\(file)")
        }
        #expect(try FileManager.default.attributesOfItem(atPath: dirB + "/tls/ca-key.pem")[.posixPermissions] as? Int == 0o600)
        // B's certificate is the shared authority's (the CLI trusts A's ca-cert.pem only), and
        // B redirects to A with the token kept (AsyncHTTPClient's own redirect drops it).
        let token = try read(dirA, "admin.token").trimmingCharacters(in: .whitespacesAndNewlines)
        let list = try await vireo(
            ["vm", "list", "--ca-cert", dirA + "/tls/ca-cert.pem", "-o", "json"], server: "https://127.0.0.1:\(portB)",
            token: token)
        #expect(list.status == 0, "\(list.stderr)")

        // A data directory with another admin token is another cluster's: refused, left as it was.
        try "not-this-clusters\n".write(toFile: dirC + "/admin.token", atomically: true, encoding: .utf8)
        let c = try start(dirC, try LoopbackPort.free())
        defer { c.kill() }
        try await eventually("controller C exits", within: 30) { !c.process.isRunning }
        #expect(c.process.terminationStatus != 0)
        #expect(c.logText.contains(dirC + "/admin.token") && c.logText.contains("another cluster"), "\(c.logText)")
        #expect(try read(dirC, "admin.token") == "not-this-clusters\n")
        #expect(!FileManager.default.fileExists(atPath: dirC + "/join.token"), "nothing made before the refusal")
        #expect(!FileManager.default.fileExists(atPath: dirC + "/tls"))
    }

    @Test(
        "tokens rotated through the leader are the cluster's: refused there at once, by the standby at its next snapshot and when it takes over; a data directory still holding old ones is this cluster's and takes the new ones"
    )
    func rotatedJoinToken() async throws {
        let start = try await Self.beyondLoopback(extra: [])
        func read(_ dir: String, _ file: String) throws -> String {
            try String(contentsOfFile: dir + "/" + file, encoding: .utf8)
        }
        let (dirA, dirB, dirC) = (temporaryDirectory(), temporaryDirectory(), temporaryDirectory())
        let (portA, portB) = (try LoopbackPort.free(), try LoopbackPort.free())
        let a = try start(dirA, portA)
        defer { a.kill() }
        try await eventually("controller A leads", within: 30) { a.logText.contains("API on http://") }
        let b = try start(dirB, portB)
        defer { b.kill() }
        try await eventually("controller B stands by", within: 30) { b.logText.contains("standing by") }
        let admin = try read(dirA, "admin.token").trimmingCharacters(in: .whitespacesAndNewlines)
        let old = try read(dirA, "join.token").trimmingCharacters(in: .whitespacesAndNewlines)

        /// The status of an agent's request (a watch of a host that is not there) with `token`.
        func agentStatus(_ port: Int, _ token: String) async throws -> Int {
            var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/v1/agent/watch?host=none&after=0&waitMs=0")
            request.headers.add(name: "Authorization", value: "Bearer \(token)")
            return Int(try await HTTPClient.shared.execute(request, timeout: .seconds(10)).status.code)
        }
        #expect(try await agentStatus(portA, old) != 401)

        let rotated = try await vireo(
            ["token", "rotate", "join", "-o", "json"], server: "http://127.0.0.1:\(portA)", token: admin)
        #expect(rotated.status == 0, "\(rotated.stderr)")
        let fresh = try VireoJSON.decoder().decode(TokenCreated.self, from: Data(rotated.stdout.utf8)).secret
        #expect(fresh != old)
        #expect(try read(dirA, "join.token") == fresh + "\n")
        #expect(try await agentStatus(portA, old) == 401)
        #expect(try await agentStatus(portA, fresh) != 401)
        #expect(try read(dirB, "join.token") == old + "\n", "B took the tokens when it started")

        // A rotated admin token stops reading through the standby at its next snapshot.
        let adminRotated = try await vireo(
            ["token", "rotate", "admin", "-o", "json"], server: "http://127.0.0.1:\(portA)", token: admin)
        #expect(adminRotated.status == 0, "\(adminRotated.stderr)")
        let newAdmin = try VireoJSON.decoder().decode(TokenCreated.self, from: Data(adminRotated.stdout.utf8)).secret
        /// The status of a read of B's (a standby's snapshot) with `token`.
        func standbyRead(_ token: String) async throws -> Int {
            var request = HTTPClientRequest(url: "http://127.0.0.1:\(portB)/v1/vms")
            request.headers.add(name: "Authorization", value: "Bearer \(token)")
            return Int(try await HTTPClient.shared.execute(request, timeout: .seconds(10)).status.code)
        }
        try await eventually("B refuses the old admin token and serves the new one", within: 20) {
            let (old, new) = (try await standbyRead(admin), try await standbyRead(newAdmin))
            return old == 401 && new == 200
        }

        // B takes over with the cluster's join token.
        a.kill()
        try await eventually("B leads", within: 30) { b.logText.contains("API on http://") }
        #expect(try await agentStatus(portB, old) == 401)
        #expect(try await agentStatus(portB, fresh) != 401)
        #expect(try read(dirB, "join.token") == fresh + "\n")

        #expect(try read(dirB, "admin.token") == newAdmin + "\n")

        // A data directory holding the old tokens is this cluster's: it starts, with the new ones.
        try (admin + "\n").write(toFile: dirC + "/admin.token", atomically: true, encoding: .utf8)
        try (old + "\n").write(toFile: dirC + "/join.token", atomically: true, encoding: .utf8)
        let c = try start(dirC, portA)
        defer { c.kill() }
        try await eventually("C stands by", within: 30) { c.logText.contains("standing by") || !c.process.isRunning }
        #expect(c.process.isRunning, "\(c.logText)")
        #expect(try read(dirC, "join.token") == fresh + "\n")
        #expect(try read(dirC, "admin.token") == newAdmin + "\n")
    }

    @Test("vireo bench failover kills the leader, times the takeover and finds nothing lost")
    func benchFailover() async throws {
        let result = try await vireo([
            "bench", "failover", "--rounds", "2", "--hosts", "2", "--vms", "3", "--lease-ttl", "1s", "-o", "json",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        #expect(json["rounds"] as? Int == 2)
        #expect(json["lost"] as? Int == 0)
        let each = try #require(json["each"] as? [[String: Any]])
        #expect(each.count == 2)
        for round in each {
            let write = try #require(round["writeSeconds"] as? Double)
            let agents = try #require(round["agentsSeconds"] as? Double)
            #expect(write > 0 && agents >= write, "\(round)")
        }
        let bad = try await vireo(["bench", "failover", "--lease-ttl", "0s"])
        #expect(bad.status == 2 && bad.stderr.contains("--lease-ttl"), "\(bad.stderr)")
    }
}

/// Two `vireo controller`s on a fresh database, with a lease of 2 s: A leads, then B stands by.
struct ControllerPair {
    let store: String
    let portA: Int
    let portB: Int
    let extra: [String]
    let a: BackgroundVireo
    let b: BackgroundVireo
    var urlA: String { "http://127.0.0.1:\(portA)" }
    var urlB: String { "http://127.0.0.1:\(portB)" }

    static func start(extra: [String] = []) async throws -> ControllerPair {
        let database = try await PostgresServerScope.freshDatabase()
        let store = "postgres://\(database.user)@127.0.0.1:\(database.port)/\(database.database)?sslmode=disable"
        let (portA, portB) = (try LoopbackPort.free(), try LoopbackPort.free())
        let a = try controller(store: store, port: portA, extra: extra)
        do {
            try await eventually("controller A leads", within: 30) {
                try await vireo(["vm", "list"], server: "http://127.0.0.1:\(portA)").status == 0
            }
            let b = try controller(store: store, port: portB, extra: extra)
            try await eventually("controller B stands by", within: 30) { b.logText.contains("standing by") }
            return ControllerPair(store: store, portA: portA, portB: portB, extra: extra, a: a, b: b)
        } catch {
            a.kill()
            throw error
        }
    }

    static func controller(store: String, port: Int, extra: [String]) throws -> BackgroundVireo {
        try BackgroundVireo(
            [
                "controller", "--data-dir", temporaryDirectory(), "--listen", "127.0.0.1:\(port)", "--store", store,
                "--lease-ttl", "2s", "--log-level", "notice",
            ] + extra)
    }

    /// Another controller on the database, on `port` (one of the pair's, once its first is gone).
    func controller(_ port: Int) throws -> BackgroundVireo { try Self.controller(store: store, port: port, extra: extra) }

    func stop() {
        a.kill()
        b.kill()
    }
}

/// A `vireo` command left running (a controller, an agent), logging to a file.
final class BackgroundVireo {
    let process = Process()
    let log: String

    /// `environment`: variables set on top of this process's.
    init(_ arguments: [String], environment: [String: String] = [:]) throws {
        log = temporaryDirectory() + "/vireo.log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.executableURL = URL(fileURLWithPath: vireoBinary)
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, given in given }
        }
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    var logText: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }

    /// SIGKILL, reaped.
    func kill() {
        guard process.isRunning else { return }
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}

@Suite("Following a standby's redirect")
struct StandbyRedirectTests {
    @Test("a redirect is followed to where it leads, relative or absolute, and never from https to http")
    func redirects() {
        let from = "https://10.0.0.2:7480/v1/vms?limit=5"
        #expect(
            VireoClient.redirect(from: from, to: "https://10.0.0.1:7480/v1/vms?limit=5") == "https://10.0.0.1:7480/v1/vms?limit=5"
        )
        #expect(VireoClient.redirect(from: from, to: "/v1/hosts") == "https://10.0.0.2:7480/v1/hosts")
        #expect(VireoClient.redirect(from: from, to: "http://10.0.0.1:7480/v1/vms") == nil, "the token would go in the clear")
        #expect(
            VireoClient.redirect(from: "http://127.0.0.1:1/v1/vms", to: "http://127.0.0.1:2/v1/vms")
                == "http://127.0.0.1:2/v1/vms")
        #expect(VireoClient.redirect(from: "http://127.0.0.1:1/v1/vms", to: "https://h:2/v1/vms") == "https://h:2/v1/vms")
        #expect(VireoClient.redirect(from: from, to: "ftp://10.0.0.1/x") == nil)
        #expect(VireoClient.origin(of: "https://[::1]:7480/v1/vms") == "https://[::1]:7480")
        #expect(VireoClient.origin(of: "http://10.0.0.1/v1/vms") == "http://10.0.0.1")
    }
}
