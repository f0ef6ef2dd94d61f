import AsyncHTTPClient
import Foundation
import Testing
import VireoAPI
import VireoController
import VireoDriver
import VireoModel
import VireoProcess

/// Management packs: the built-in ones are sound, a bad one is refused by `lint` naming the
/// field, applying one changes the application as an apply does, and each is judged from its
/// real software's real exporter.
@Suite("Management packs")
struct PackTests {
    @Test("the built-in packs parse, give a reason for every metric and objective, and cover the three kinds")
    func builtIn() {
        #expect(Pack.builtIn.map(\.name) == ["nginx", "redis", "postgresql", "haproxy"])
        for pack in Pack.builtIn {
            #expect(pack.reasons.count == pack.metrics.count + pack.objectives.count, "\(pack.name)")
            #expect(pack.reasons.values.allSatisfy { $0.count > 20 }, "\(pack.name): reasons say something")
            #expect(Set(pack.objectives.map(\.kind)).isSuperset(of: [.throughput, .capacity, .responseTime]), "\(pack.name)")
        }
    }

    static let refused: [(replace: String, with: String, mentions: [String])] = [
        ("      why: Clients connected now.\n", "", ["spec.metrics[3].why", "is required"]),
        (
            "sum(rate(redis_commands_processed_total[1m]))", "sum(rate(redis_ops_total[1m]))",
            ["spec.objectives[0].sli", "redis_ops_total"]
        ),
        (
            "kind: response-time\n      max: 0.001", "kind: throughput\n      max: 0.001",
            ["spec.objectives[1].kind", "throughput", "max"]
        ),
        ("port: 9121", "port: 0", ["spec.exporter.port", "0"]),
        ("kind: Pack", "kind: Application", ["kind", "Application", "Pack"]),
        ("  description: >-\n    Redis", "  summary: >-\n    Redis", ["spec.summary"]),
    ]

    @Test("lint refuses a pack that is not sound, naming the field", arguments: refused)
    func lint(replace: String, with: String, mentions: [String]) {
        let text = PackTexts.redis.replacingOccurrences(of: replace, with: with)
        #expect(text != PackTexts.redis, "the test's replacement did not apply")
        let error = #expect(throws: VireoError.self) { try Pack.parse(text) }
        for word in mentions { #expect(error?.message.contains(word) == true, "\(String(describing: error?.message))") }
    }

    @Test("applying a pack through the API adds its scrape, metrics and objectives, once; conflicts are refused")
    func applyThroughAPI() async throws {
        let plane = try await TestControlPlane.make()
        let checker = ResponseChecker(openAPI: try OpenAPITests())
        try await plane.test { client in
            try await client.request(
                .post, "/v1/apply",
                body:
                    "{apiVersion: vireo/v1, kind: Application, metadata: {name: web}, spec: {telemetry: {metrics: [{name: q, type: gauge}]}}}"
            )
            let applied = try await client.request(.post, "/v1/apps/web/packs/nginx")
            checker.check(
                method: .post, route: "/v1/apps/{app}/packs/{pack}", status: applied.status, contentType: "application/json",
                body: applied.body)
            let result = try decodeJSON(ApplyResult.self, applied.body)
            #expect(result.items.first?.action == .updated)
            #expect(result.items.first?.changes?.contains("telemetry.scrape: none → :9113/metrics every 5s") == true)
            let again = try decodeJSON(ApplyResult.self, try await client.request(.post, "/v1/apps/web/packs/nginx").body)
            #expect(again.items.first?.action == .unchanged)
            let app = try decodeJSON(AppView.self, try await client.request(.get, "/v1/apps/web").body)
            #expect(
                app.spec.objectives.map(\.name) == ["nginx-throughput", "nginx-connections", "nginx-handled", "nginx-latency"])
            #expect(app.spec.telemetry.metrics.map(\.name).contains("q"), "the application's own declarations stay")
            #expect(try await client.request(.post, "/v1/apps/web/packs/mysql").status == 404)
            #expect(try await client.request(.post, "/v1/apps/nope/packs/nginx").status == 404)
            try await client.request(
                .post, "/v1/apply",
                body:
                    "{apiVersion: vireo/v1, kind: Application, metadata: {name: odd}, spec: {telemetry: {metrics: [{name: redis_connected_clients, type: counter}]}}}"
            )
            let conflict = try await client.request(.post, "/v1/apps/odd/packs/redis")
            #expect(conflict.status == 409 && conflict.body.contains("redis_connected_clients"), "\(conflict.body)")
            for route in ["/v1/packs", "/v1/packs/redis"] {
                let response = try await client.request(.get, route)
                checker.check(
                    method: .get, route: route == "/v1/packs" ? route : "/v1/packs/{pack}", status: response.status,
                    contentType: "application/json", body: response.body)
            }
            #expect(try await client.request(.get, "/v1/packs/mysql").status == 404)
        }
        #expect(checker.failures == [] && checker.checked.count == 3, "\(checker.failures)")
    }

    @Test(
        "nginx behind HAProxy, and Redis, with their exporters from Debian on loopback: the packs' objectives are judged from their live figures",
        .enabled(
            if: ["nginx", "prometheus-nginx-exporter", "haproxy", "redis-server", "prometheus-redis-exporter", "redis-benchmark"]
                .allSatisfy(installed),
            "needs nginx, haproxy, redis-server, redis-benchmark and the exporters (scripts/install-deps.sh installs them)"))
    func liveSoftware() async throws {
        let dir = temporaryDirectory()
        let processes = Daemons(dir: dir)
        try await processes.running {
            let (site, nginxExporter, redis, redisExporter) = (
                try LoopbackPort.free(), try LoopbackPort.free(), try LoopbackPort.free(), try LoopbackPort.free()
            )
            let (proxy, proxyMetrics) = (try LoopbackPort.free(), try LoopbackPort.free())
            try """
            worker_processes 1;
            pid \(dir)/nginx.pid;
            error_log \(dir)/nginx-error.log;
            events { worker_connections 64; }
            http {
              access_log off;
              client_body_temp_path \(dir)/body; proxy_temp_path \(dir)/proxy; fastcgi_temp_path \(dir)/fcgi;
              uwsgi_temp_path \(dir)/uwsgi; scgi_temp_path \(dir)/scgi;
              server {
                listen 127.0.0.1:\(site);
                location = /stub_status { stub_status; }
                location / { return 200 "hello\\n"; }
              }
            }
            """.write(toFile: dir + "/nginx.conf", atomically: true, encoding: .utf8)
            try """
            global
              maxconn 1000
            defaults
              mode http
              timeout connect 2s
              timeout client 5s
              timeout server 5s
            frontend metrics
              bind 127.0.0.1:\(proxyMetrics)
              http-request use-service prometheus-exporter if { path /metrics }
            frontend web
              bind 127.0.0.1:\(proxy)
              maxconn 500
              default_backend site
            backend site
              server nginx 127.0.0.1:\(site)

            """.write(toFile: dir + "/haproxy.cfg", atomically: true, encoding: .utf8)  // HAProxy wants the last line ended
            try processes.start("/usr/sbin/nginx", ["-c", dir + "/nginx.conf", "-g", "daemon off;"])
            try processes.start("/usr/sbin/haproxy", ["-f", dir + "/haproxy.cfg", "-db"])
            try processes.start(
                "/usr/bin/prometheus-nginx-exporter",
                [
                    "-nginx.scrape-uri", "http://127.0.0.1:\(site)/stub_status", "-web.listen-address",
                    "127.0.0.1:\(nginxExporter)",
                    // It gives up at once when nginx is not listening yet, unless told to retry.
                    "-nginx.retries", "20", "-nginx.retry-interval", "500ms",
                ])
            try processes.start(
                "/usr/bin/redis-server", ["--port", "\(redis)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            try processes.start(
                "/usr/bin/prometheus-redis-exporter",
                ["-redis.addr", "redis://127.0.0.1:\(redis)", "-web.listen-address", "127.0.0.1:\(redisExporter)"])
            try await eventually("the exporters reach their servers (logs in \(dir))", within: 30) {
                let nginx = try? await scrape(nginxExporter)
                let redisText = try? await scrape(redisExporter)
                let haproxy = try? await scrape(proxyMetrics)
                return nginx?.contains("nginx_up 1") == true && redisText?.contains("redis_up 1") == true
                    && haproxy?.contains("haproxy_frontend_http_requests_total") == true
            }

            let clock = ManualClock()
            let plane = try await TestControlPlane.make(now: { clock.now })
            let c = plane.controller
            for (app, pack) in [("site", "nginx"), ("proxy", "haproxy"), ("cache", "redis")] {
                _ = try await c.apply(
                    try ManifestParser.parse(
                        "{apiVersion: vireo/v1, kind: Application, metadata: {name: \(app)}, spec: {telemetry: {metrics: []}}}"))
                _ = try await c.applyPack(pack, to: app)
            }
            // Each round: real requests (through HAProxy to nginx) and Redis commands, then each
            // exporter's real answer, taken in as a scrape. The controller's clock moves 10 s a round
            // so that 1-minute windows end within the test; rates are per the controller's seconds.
            for _ in 0..<30 {
                for _ in 0..<20 {
                    _ = try await HTTPClient.shared.execute(
                        HTTPClientRequest(url: "http://127.0.0.1:\(proxy)/"), timeout: .seconds(5))
                }
                // HAProxy and the exporter keep their connections to nginx open: one client that
                // comes and goes gives nginx a connection to accept (and handle) in every window.
                var direct = HTTPClientRequest(url: "http://127.0.0.1:\(site)/")
                direct.headers.add(name: "Connection", value: "close")
                _ = try await HTTPClient.shared.execute(direct, timeout: .seconds(5))
                _ = try await HostTool.run("redis-benchmark", ["-p", "\(redis)", "-n", "200", "-c", "2", "-q", "-t", "set,get"])
                _ = try await c.ingest(app: "site", exposition: try await scrape(nginxExporter), at: clock.now)
                _ = try await c.ingest(app: "proxy", exposition: try await scrape(proxyMetrics), at: clock.now)
                _ = try await c.ingest(app: "cache", exposition: try await scrape(redisExporter), at: clock.now)
                clock.advance(10)
                await c.evaluateSLOs()
            }
            try await Self.expectJudged(
                c, "site", ["nginx-throughput", "nginx-connections", "nginx-handled"], empty: ["nginx-latency"])
            try await Self.expectJudged(
                c, "proxy", ["haproxy-throughput", "haproxy-sessions", "haproxy-success", "haproxy-latency"], empty: [])
            try await Self.expectJudged(c, "cache", ["redis-throughput", "redis-latency", "redis-clients"], empty: [])
            let latency = try #require(try await c.app("cache").objectives.first { $0.name == "redis-latency" }?.sli)
            #expect(latency > 0 && latency < 0.001, "a Redis command takes microseconds: \(latency) s")
            let handled = try await c.app("site").objectives.first { $0.name == "nginx-handled" }?.sli
            #expect(handled == 1, "\(String(describing: handled))")
            #expect(try await c.app("proxy").objectives.first { $0.name == "haproxy-success" }?.sli == 1)
        }
    }

    @Test(
        "PostgreSQL with its exporter from Debian on loopback: the pack's objectives are judged from its live figures",
        .enabled(
            if: getuid() == 0 && ["prometheus-postgres-exporter", "pgbench", "setpriv"].allSatisfy(installed)
                && FileManager.default.isExecutableFile(atPath: "/usr/lib/postgresql/15/bin/postgres"),
            "needs root (PostgreSQL runs as the postgres user), PostgreSQL 15, pgbench and prometheus-postgres-exporter"))
    func livePostgreSQL() async throws {
        let dir = temporaryDirectory()
        let data = dir + "/pg"
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        _ = try await HostTool.run("chown", ["postgres", data])
        let asPostgres = ["--reuid", "postgres", "--regid", "postgres", "--init-groups", "--"]
        _ = try await HostTool.run(
            "setpriv", asPostgres + ["/usr/lib/postgresql/15/bin/initdb", "-D", data, "-A", "trust", "-U", "postgres"])
        let (port, exporter) = (try LoopbackPort.free(), try LoopbackPort.free())
        let processes = Daemons(dir: dir)
        try await processes.running {
            try processes.start(
                "/usr/bin/setpriv",
                asPostgres + [
                    "/usr/lib/postgresql/15/bin/postgres", "-D", data, "-p", "\(port)", "-k", data, "-c",
                    "listen_addresses=127.0.0.1",
                ])
            try processes.start(
                "/usr/bin/prometheus-postgres-exporter", ["--web.listen-address=127.0.0.1:\(exporter)"],
                environment: ["DATA_SOURCE_NAME": "postgresql://postgres@127.0.0.1:\(port)/postgres?sslmode=disable"])
            try await eventually("the exporter reaches PostgreSQL (logs in \(dir))", within: 60) {
                (try? await scrape(exporter))?.contains("pg_up 1") == true
            }
            let pgbench = ["-h", "127.0.0.1", "-p", "\(port)", "-U", "postgres"]
            _ = try await HostTool.run("pgbench", ["-i", "-q"] + pgbench + ["postgres"])

            let clock = ManualClock()
            let plane = try await TestControlPlane.make(now: { clock.now })
            let c = plane.controller
            _ = try await c.apply(
                try ManifestParser.parse(
                    "{apiVersion: vireo/v1, kind: Application, metadata: {name: db}, spec: {telemetry: {metrics: []}}}"))
            _ = try await c.applyPack("postgresql", to: "db")
            for _ in 0..<30 {
                _ = try await HostTool.run("pgbench", ["-c", "2", "-t", "20", "-n"] + pgbench + ["postgres"])
                _ = try await c.ingest(app: "db", exposition: try await scrape(exporter), at: clock.now)
                clock.advance(10)
                await c.evaluateSLOs()
            }
            try await Self.expectJudged(
                c, "db", ["postgresql-throughput", "postgresql-connections", "postgresql-commits", "postgresql-latency"],
                empty: [])
            let throughput = try #require(try await c.app("db").objectives.first { $0.name == "postgresql-throughput" }?.sli)
            #expect(throughput >= 4, "pgbench commits 40 transactions a round of 10 s: \(throughput)/s")
        }
    }

    /// Each of `judged` has good windows and no bad one; each of `empty` has no verdict.
    static func expectJudged(_ c: Controller, _ app: String, _ judged: [String], empty: [String]) async throws {
        let objectives = try await c.app(app).objectives
        for name in judged {
            let objective = try #require(objectives.first { $0.name == name })
            print("\(app)/\(name): sli \(objective.sli ?? .nan), \(objective.goodWindows) good, \(objective.badWindows) bad")
            #expect(objective.goodWindows >= 1 && objective.badWindows == 0, "\(app)/\(name): \(objective)")
        }
        // The probe runs in an agent beside a VM: none here, so no data, and no verdict.
        for name in empty {
            #expect(objectives.first { $0.name == name }.map { $0.goodWindows + $0.badWindows } == 0)
        }
    }
}

func installed(_ tool: String) -> Bool {
    ["/usr/sbin/", "/usr/bin/"].contains { FileManager.default.isExecutableFile(atPath: $0 + tool) }
}

/// An exporter's answer, from loopback.
func scrape(_ port: Int) async throws -> String {
    let response = try await HTTPClient.shared.execute(
        HTTPClientRequest(url: "http://127.0.0.1:\(port)/metrics"), timeout: .seconds(5))
    return String(buffer: try await response.body.collect(upTo: 1 << 22))
}

/// Servers a test runs in the foreground, each logging to a file of `dir`, stopped together.
final class Daemons: @unchecked Sendable {
    let dir: String
    private var processes: [Process] = []

    init(dir: String) { self.dir = dir }

    func start(_ path: String, _ arguments: [String], environment: [String: String]? = nil) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        if let environment { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        let log = "\(dir)/\(URL(fileURLWithPath: path).lastPathComponent)-\(processes.count).log"
        FileManager.default.createFile(atPath: log, contents: nil)
        process.standardOutput = FileHandle(forWritingAtPath: log)
        process.standardError = process.standardOutput
        try process.run()
        processes.append(process)
    }

    /// SIGTERM first, so nginx takes its workers down and PostgreSQL shuts down cleanly; then
    /// SIGKILL, because a child started from a test thread inherits its blocked SIGTERM and
    /// redis-server does not unblock it. Reaped here: Foundation's waitUntilExit has been seen to
    /// spin on an nginx that had exited.
    /// Runs `body`, then stops every server it started, whether it threw or not.
    func running<T>(_ body: () async throws -> T) async throws -> T {
        do {
            let result = try await body()
            await stop()
            return result
        } catch {
            await stop()
            throw error
        }
    }

    /// Waits for the servers to go on a thread of its own (up to 3 s each): blocking one of the test
    /// process's few pool threads that long would stall the other suites' in-process clusters.
    func stop() async {
        _ = try? await offPool { self.stopBlocking() }
    }

    private func stopBlocking() {
        for process in processes.reversed() {
            let pid = process.processIdentifier
            var status: Int32 = 0
            kill(pid, SIGTERM)
            for _ in 0..<150 where waitpid(pid, &status, WNOHANG) == 0 { usleep(20_000) }
            if kill(pid, 0) == 0 {
                kill(pid, SIGKILL)
                _ = waitpid(pid, &status, 0)
            }
        }
        processes.removeAll()
    }
}

/// The built-in packs' YAML, for tests that change it.
enum PackTexts {
    static let redis = Pack.builtIn(named: "redis")!.text
}
