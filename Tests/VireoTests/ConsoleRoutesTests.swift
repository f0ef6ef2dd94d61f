import AsyncHTTPClient
import Foundation
import Hummingbird
import HummingbirdTesting
import Prometheus
import Testing
import VireoAPI
import VireoController
import VireoModel

@testable import VireoHTTP

/// What the controller serves for the web console, and the API it relies on for its charts.
/// (The console itself is checked in a real browser in `BrowserConsoleTests`.)
@Suite("Web console files and chart data")
struct ConsoleRoutesTests {
    @Test("the page, its script and style are served without a token; the data still needs one")
    func files() async throws {
        let plane = try await TestControlPlane.make(tokens: AccessTokens(admin: "a", join: "j"))
        try await plane.test { client in
            let page = try await client.execute(uri: "/", method: .get) { $0 }
            #expect(page.status == .ok)
            #expect(page.headers[.contentType] == "text/html; charset=utf-8")
            #expect(String(buffer: page.body).contains(#"<script src="/console/console.js""#))
            let script = try await client.request(.get, "/console/console.js")
            #expect(script.status == 200 && script.body.contains("/v1/events"))
            let style = try await client.request(.get, "/console/console.css")
            #expect(style.status == 200 && style.body.contains("@media"))
            let hosts = try await client.request(.get, "/v1/hosts")
            #expect(hosts.status == 401)
            expectEnvelope(hosts.body, code: .unauthorized)
            #expect(try await client.request(.get, "/console/other.js").status == 401, "only the console's own paths are open")
        }
    }

    @Test("a state change from a page of another origin is refused with 403; without Origin (CLI, agents) it goes through")
    func crossOrigin() async throws {
        let plane = try await TestControlPlane.make()
        try await plane.test { client in
            let body = #"{"name":"a","image":"tiny"}"#
            let forged = try await client.request(.post, "/v1/vms", body: body, headers: [.origin: "http://127.0.0.1:9"])
            #expect(forged.status == 403)
            #expect(expectEnvelope(forged.body, code: .forbidden).contains("http://127.0.0.1:9"))
            #expect(plane.controller.listVMs().items.isEmpty, "nothing was created")
            let reading = try await client.request(.get, "/v1/vms", headers: [.origin: "http://127.0.0.1:9"])
            #expect(reading.status == 200, "reads are left to the browser's own rule (no CORS: the page cannot read them)")
            #expect(try await client.request(.post, "/v1/vms", body: body).status == 201)
        }
        // A site that points its own name at 127.0.0.1 (DNS rebinding) is its page's origin;
        // without tokens, the API answers only to loopback names (the Host of a real request).
        let app = Application(router: plane.server.router(), configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        try await app.test(.live) { client in
            let url = "http://127.0.0.1:\(try #require(client.port))/v1/vms"
            func status(host: String) async throws -> (Int, String) {
                var request = HTTPClientRequest(url: url)
                request.headers.replaceOrAdd(name: "Host", value: host)
                let response = try await HTTPClient.shared.execute(request, timeout: .seconds(5))
                return (Int(response.status.code), String(buffer: try await response.body.collect(upTo: 1 << 20)))
            }
            let rebound = try await status(host: "evil.example:7480")
            #expect(rebound.0 == 403)
            #expect(expectEnvelope(rebound.1, code: .forbidden).contains("Host evil.example:7480"))
            for host in ["127.0.0.1:7480", "localhost:7480", "[::1]:7480", "127.1.2.3"] {
                #expect(try await status(host: host).0 == 200, "\(host)")
            }
        }
    }

    @Test("the display endpoint says why it cannot show a display; noVNC's scripts are served, nothing else")
    func displayReasons() async throws {
        let cluster = try await LocalCluster.start(contexts: true)
        defer { cluster.stop() }
        _ = try await cluster.controller.openContext(
            ContextOpenRequest(
                spec: ContextSpec(name: "plain", kind: .disposable, image: "web", cpus: 1, memoryMiB: 128, network: .isolated),
                wait: true))
        let novnc = temporaryDirectory()
        try FileManager.default.createDirectory(atPath: novnc + "/core", withIntermediateDirectories: true)
        try "export default 1;".write(toFile: novnc + "/core/rfb.js", atomically: true, encoding: .utf8)
        try "secret".write(toFile: novnc + "/core/notes.txt", atomically: true, encoding: .utf8)
        let server = VireoServer(
            controller: cluster.controller, tokens: nil, registry: PrometheusCollectorRegistry(),
            consoleFiles: ConsoleFiles(novncDirectory: novnc), displayHosts: ["h1"])
        try await Application(router: server.router()).test(.router) { client in
            let none = try await client.request(.get, "/v1/contexts/plain/display")
            #expect(none.status == 412)
            #expect(expectEnvelope(none.body, code: .failedPrecondition).contains("opened without --display vnc"))
            let unknown = try await client.request(.get, "/v1/contexts/nope/display")
            #expect(unknown.status == 404)
            let foreign = try await client.request(
                .get, "/v1/contexts/plain/display", headers: [.origin: "http://127.0.0.1:9"])
            #expect(foreign.status == 403)
            expectEnvelope(foreign.body, code: .forbidden)

            #expect(try await client.request(.get, "/console/novnc/core/rfb.js").body == "export default 1;")
            #expect(try await client.request(.get, "/console/novnc/core/notes.txt").status == 404, "scripts only")
            #expect(try await client.request(.get, "/console/novnc/core/../core/rfb.js").status == 404)
            #expect(try await client.request(.get, "/console/novnc/x%2F..%2Fcore%2Frfb.js").status == 404)
        }
    }

    @Test("browser libraries come from Debian's package; a missing one is a 404 that names the package")
    func libraries() async throws {
        let plane = try await TestControlPlane.make()
        let directory = temporaryDirectory()
        func server(_ files: ConsoleFiles) -> Application<RouterResponder<VireoRequestContext>> {
            Application(
                router: VireoServer(
                    controller: plane.controller, tokens: nil, registry: PrometheusCollectorRegistry(), consoleFiles: files
                )
                .router())
        }
        try await server(ConsoleFiles(javascriptDirectory: directory)).test(.router) { client in
            let missing = try await client.request(.get, "/console/lib/chart.js")
            #expect(missing.status == 404)
            let message = expectEnvelope(missing.body, code: .notFound)
            #expect(message.contains("libjs-chart.js") && message.contains("\(directory)/chart.js/chart.min.js"), "\(message)")
            try FileManager.default.createDirectory(atPath: directory + "/chart.js", withIntermediateDirectories: true)
            try "/* chart */".write(toFile: directory + "/chart.js/chart.min.js", atomically: true, encoding: .utf8)
            let found = try await client.request(.get, "/console/lib/chart.js")
            #expect(found.status == 200 && found.body == "/* chart */")
            let unknown = try await client.request(.get, "/console/lib/jquery")
            #expect(unknown.status == 404)
            #expect(expectEnvelope(unknown.body, code: .notFound).contains("jquery"))
        }
    }

    @Test("an objective's indicator per judged window, for its chart")
    func objectiveSeries() async throws {
        let clock = ManualClock()
        let plane = try await TestControlPlane.make(now: { clock.now })
        let c = plane.controller
        _ = try await c.apply(
            try ManifestParser.parse(
                """
                apiVersion: vireo/v1
                kind: Application
                metadata: { name: shop }
                spec:
                  telemetry: { metrics: [{ name: requests_total, type: counter }] }
                  objectives:
                    - { name: served, sli: "rate(requests_total)", min: 5, window: 10s }
                """))
        // 1 request a second for 30 s, then 10 a second for 30 s: three bad windows, then three good.
        var total = 0.0
        for second in 0..<62 {
            total += second < 30 ? 1 : 10
            _ = try await c.ingest(
                app: "shop", exposition: "# TYPE requests_total counter\nrequests_total \(total)\n", at: clock.now)
            clock.advance(1)
            await c.evaluateSLOs()
        }
        let status = try #require(try await c.app("shop").objectives.first)
        // The store gives the latest windows of a range when asked for fewer than it holds.
        let every = try #require(try await c.telemetry.windows(app: "shop", objective: "served", from: 0, to: .max, latest: .max))
        let lastTwo = try await c.telemetry.windows(app: "shop", objective: "served", from: 0, to: .max, latest: 2)
        #expect(every.count > 2 && lastTwo == Array(every.suffix(2)))
        try await plane.test { client in
            let answer = try await client.request(.get, "/v1/apps/shop/series?objective=served&from=-5m")
            #expect(answer.status == 200)
            let series = try decodeJSON(SeriesResponse.self, answer.body)
            #expect(series.metric == #"vireo_slo_sli{objective="served"}"#)
            let points = try #require(series.series.first).points
            #expect(points.count == status.goodWindows + status.badWindows)
            #expect(points.filter { $0.v < 5 }.count == status.badWindows && status.badWindows >= 2)
            #expect(points.last?.v == status.sli)
            #expect(points.map(\.t) == points.map(\.t).sorted())

            let both = try await client.request(.get, "/v1/apps/shop/series?objective=served&metric=requests_total")
            #expect(both.status == 400)
            #expect(expectEnvelope(both.body, code: .invalidArgument).hasPrefix("metric, objective: give exactly one"))
            #expect(try await client.request(.get, "/v1/apps/shop/series").status == 400)
            let unknown = try await client.request(.get, "/v1/apps/shop/series?objective=nope")
            #expect(unknown.status == 404)
            #expect(expectEnvelope(unknown.body, code: .notFound).contains("shop/nope"))
            let raw = try await client.request(.get, "/v1/apps/shop/series?metric=requests_total&from=-5m")
            #expect(try decodeJSON(SeriesResponse.self, raw.body).series.first?.points.count == 62)
        }
    }
}

@Suite("loopback Host names")
struct LoopbackHostNameTests {
    @Test("a Host names loopback only as localhost, [::1] or 127.x.y.z, with or without a port")
    func names() {
        for host in [
            "127.0.0.1", "127.0.0.1:7480", "127.1.2.3", "127.255.255.255:1", "localhost", "localhost:80", "[::1]", "[::1]:7480",
        ] {
            #expect(SameOriginMiddleware<VireoRequestContext>.namesLoopback(host), "\(host)")
        }
        for host in [
            "", "evil.example", "127.0.0.1.evil.example", "127.0.0.256", "127.0.0", "127.0.0.1.2", "0127.0.0.1", "128.0.0.1",
            "127..0.1", "127.0.0.", ".127.0.0.1", "localhost.evil", "[::2]:80", "[::1", "127.0.0.-1", "10.0.0.1:7480",
        ] {
            #expect(!SameOriginMiddleware<VireoRequestContext>.namesLoopback(host), "\(host)")
        }
    }
}
