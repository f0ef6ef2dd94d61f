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
        #expect(Pack.builtIn.map(\.name) == ["nginx", "redis"])
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
        "nginx and Redis with their Debian exporters on loopback: the packs' objectives are judged from their live figures",
        .enabled(
            if: ["nginx", "prometheus-nginx-exporter", "redis-server", "prometheus-redis-exporter", "redis-benchmark"].allSatisfy
            {
                FileManager.default.isExecutableFile(atPath: "/usr/sbin/\($0)")
                    || FileManager.default.isExecutableFile(atPath: "/usr/bin/\($0)")
            },
            "needs nginx, redis-server, redis-benchmark and their Prometheus exporters (scripts/install-deps.sh installs them)"))
    func liveSoftware() async throws {
        let dir = temporaryDirectory()
        var processes: [Process] = []
        defer {
            // SIGTERM first, so nginx takes its workers down; then SIGKILL, because a child started
            // from a test thread inherits its blocked SIGTERM and redis-server does not unblock it.
            // Reaped here: Foundation's waitUntilExit has been seen to spin on an nginx that exited.
            for process in processes {
                let pid = process.processIdentifier
                var status: Int32 = 0
                kill(pid, SIGTERM)
                for _ in 0..<100 where waitpid(pid, &status, WNOHANG) == 0 { usleep(20_000) }
                if kill(pid, 0) == 0 {
                    kill(pid, SIGKILL)
                    _ = waitpid(pid, &status, 0)
                }
            }
        }
        func start(_ path: String, _ arguments: [String]) throws {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: path)
            process.arguments = arguments
            FileManager.default.createFile(atPath: "\(dir)/\(processes.count).log", contents: nil)
            process.standardOutput = FileHandle(forWritingAtPath: "\(dir)/\(processes.count).log")
            process.standardError = process.standardOutput
            try process.run()
            processes.append(process)
        }
        let (site, nginxExporter, redis, redisExporter) = (
            try LoopbackPort.free(), try LoopbackPort.free(), try LoopbackPort.free(), try LoopbackPort.free()
        )
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
        try start("/usr/sbin/nginx", ["-c", dir + "/nginx.conf", "-g", "daemon off;"])
        try start(
            "/usr/bin/prometheus-nginx-exporter",
            ["-nginx.scrape-uri", "http://127.0.0.1:\(site)/stub_status", "-web.listen-address", "127.0.0.1:\(nginxExporter)"])
        try start("/usr/bin/redis-server", ["--port", "\(redis)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        try start(
            "/usr/bin/prometheus-redis-exporter",
            ["-redis.addr", "redis://127.0.0.1:\(redis)", "-web.listen-address", "127.0.0.1:\(redisExporter)"])
        func scrape(_ port: Int) async throws -> String {
            let response = try await HTTPClient.shared.execute(
                HTTPClientRequest(url: "http://127.0.0.1:\(port)/metrics"), timeout: .seconds(5))
            return String(buffer: try await response.body.collect(upTo: 1 << 22))
        }
        try await eventually("both exporters reach their servers (logs in \(dir))", within: 30) {
            let nginx = try? await scrape(nginxExporter)
            let redisText = try? await scrape(redisExporter)
            return nginx?.contains("nginx_up 1") == true && redisText?.contains("redis_up 1") == true
        }

        let clock = ManualClock()
        let plane = try await TestControlPlane.make(now: { clock.now })
        let c = plane.controller
        for app in ["site", "cache"] {
            _ = try await c.apply(
                try ManifestParser.parse(
                    "{apiVersion: vireo/v1, kind: Application, metadata: {name: \(app)}, spec: {telemetry: {metrics: []}}}"))
        }
        _ = try await c.applyPack("nginx", to: "site")
        _ = try await c.applyPack("redis", to: "cache")
        // Each round: real requests and commands, then each exporter's real answer, taken in as a
        // scrape. The controller's clock moves 10 s a round so that 1-minute windows end within
        // the test; rates are per the controller's seconds.
        for _ in 0..<30 {
            for _ in 0..<20 {
                _ = try await HTTPClient.shared.execute(HTTPClientRequest(url: "http://127.0.0.1:\(site)/"), timeout: .seconds(5))
            }
            _ = try await HostTool.run("redis-benchmark", ["-p", "\(redis)", "-n", "200", "-c", "2", "-q", "-t", "set,get"])
            _ = try await c.ingest(app: "site", exposition: try await scrape(nginxExporter), at: clock.now)
            _ = try await c.ingest(app: "cache", exposition: try await scrape(redisExporter), at: clock.now)
            clock.advance(10)
            await c.evaluateSLOs()
        }
        for (app, judged, empty) in [
            ("site", ["nginx-throughput", "nginx-connections", "nginx-handled"], ["nginx-latency"]),
            ("cache", ["redis-throughput", "redis-latency", "redis-clients"], []),
        ] {
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
        let cache = try await c.app("cache").objectives
        let latency = try #require(cache.first { $0.name == "redis-latency" }?.sli)
        #expect(latency > 0 && latency < 0.001, "a Redis command takes microseconds: \(latency) s")
        let siteObjectives = try await c.app("site").objectives
        #expect(siteObjectives.first { $0.name == "nginx-handled" }?.sli == 1)
    }
}

/// The built-in packs' YAML, for tests that change it.
enum PackTexts {
    static let redis = Pack.builtIn(named: "redis")!.text
}
