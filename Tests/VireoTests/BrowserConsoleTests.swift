import AsyncHTTPClient
import Foundation
import Hummingbird
import HummingbirdTesting
import Prometheus
import Testing
import VireoAPI
import VireoBrowser
import VireoController
import VireoHTTP
import VireoModel

extension Tag {
    /// Tests that drive Debian's headless Chromium, all in `BrowserConsoleTests`: `swift test
    /// --skip BrowserConsoleTests` leaves them out.
    @Tag static var browser: Self
}

/// The web console in a real browser: Debian's `chromium`, headless, driven over the DevTools
/// protocol, against a controller with simulated hosts serving its API on loopback. Every check
/// reads what the page rendered from real state, and every action is a mouse click or a key
/// press whose effect is read back from the controller.
@Suite("Web console in headless Chromium", .serialized, .tags(.browser))
struct BrowserConsoleTests {
    /// Where the screenshots go: `VIREO_TEST_OUTPUT` (default `.build/test-output`), `console/`.
    static let screenshots: String = {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
        let base = ProcessInfo.processInfo.environment["VIREO_TEST_OUTPUT"] ?? root + "/.build/test-output"
        let path = base + "/console"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }()

    /// An application whose objective has judged windows: a counter at 20 requests a second,
    /// judged on one-second windows.
    static let shop = """
        apiVersion: vireo/v1
        kind: Application
        metadata: { name: shop }
        spec:
          vms: [{ name: shop-1, image: web, cpus: 1, memory: 128MiB }]
          telemetry:
            metrics: [{ name: shop_requests_total, type: counter }]
          objectives:
            - { name: served, sli: "rate(shop_requests_total)", min: 5, window: 1s, goal: 0.9 }
        """

    /// Runs `body` with a cluster of three simulated hosts (contexts on), its API on a loopback
    /// port, and a browser.
    func withConsole(
        tokens: AccessTokens? = nil,
        _ body: @Sendable (_ cluster: LocalCluster, _ base: String, _ browser: HeadlessChromium) async throws -> Void
    ) async throws {
        let cluster = try await LocalCluster.start(hosts: ["h1", "h2", "h3"], contexts: true)
        defer { cluster.stop() }
        let server = VireoServer(controller: cluster.controller, tokens: tokens, registry: PrometheusCollectorRegistry())
        try await withServedConsole(server) { base, browser in try await body(cluster, base, browser) }
    }

    /// Goes to `url` and waits until its page has shown its data. Within the console only the
    /// fragment changes, so the mark of the page before is taken away first.
    func open(_ page: BrowserPage, _ url: String) async throws {
        try await page.evaluate("document.querySelector('main') && delete document.querySelector('main').dataset.loaded")
        try await page.navigate(url)
        try await page.waitFor("document.querySelector('main[data-loaded]')", "\(url) loaded")
    }

    func save(_ page: BrowserPage, _ name: String) async throws {
        try await page.screenshot().write(to: URL(fileURLWithPath: "\(Self.screenshots)/\(name).png"))
    }

    @Test("every page shows real data, follows events without a reload, and its clicks change the real state")
    func pagesAndActions() async throws {
        try await withConsole { cluster, base, browser in
            let c = cluster.controller
            _ = try await c.createVM(VMSpec(name: "web-a", image: "web", cpus: 2, memoryMiB: 512))
            _ = try await c.createVM(VMSpec(name: "batch-b", image: "tiny", cpus: 1, memoryMiB: 256))
            _ = try await c.apply(try ManifestParser.parse(Self.shop))
            for vm in ["web-a", "batch-b", "shop-1"] { _ = try await cluster.waitFor(vm, .running) }
            // 20 requests a second until a few windows are judged.
            var count = 0
            try await eventually("shop's windows judged", within: 15) {
                count += 4
                _ = try await c.ingest(
                    app: "shop", exposition: "# TYPE shop_requests_total counter\nshop_requests_total \(count)\n", at: Date())
                try await Task.sleep(for: .milliseconds(200))
                await c.evaluateSLOs()
                return try await c.app("shop").objectives.first.map { $0.goodWindows >= 3 } ?? false
            }

            let page = try await browser.newPage()

            // Overview: the three hosts with their bars, the VMs by state, the application.
            try await open(page, base + "/#/")
            #expect(try await page.evaluate("document.querySelectorAll('article[data-host]').length").intValue == 3)
            #expect(try await page.evaluate("document.querySelectorAll('[role=meter]').length").intValue ?? 0 >= 6)
            let running = try await page.evaluate("document.querySelector('li[data-state=running] strong')?.textContent")
            #expect(running.stringValue == "3")
            try await save(page, "overview")

            // A live event shows up without a reload.
            try await page.evaluate("window.sameDocument = true")
            _ = try await c.createVM(VMSpec(name: "late", image: "tiny", cpus: 1, memoryMiB: 128))
            try await page.waitFor(
                "document.querySelector('ol.events a[href=\"#/vms/late\"]')", within: 5, "the event of the new VM listed")
            #expect(try await page.evaluate("window.sameDocument === true") == .bool(true), "the page was not reloaded")
            #expect(try await page.evaluate("document.getElementById('live').textContent") == .string("live"))

            // The VM list, filtered by typing.
            try await open(page, base + "/#/vms")
            try await page.waitFor("document.querySelector('tr[data-vm=\"late\"]')", "late listed")
            #expect(try await page.evaluate("document.querySelectorAll('tbody tr').length").intValue == 4)
            try await page.evaluate(
                "(() => { const i = document.getElementById('vm-filter'); i.value = 'batch'; i.dispatchEvent(new Event('input')); })()"
            )
            #expect(
                try await page.evaluate("[...document.querySelectorAll('tbody tr')].map(r => r.dataset.vm)")
                    == .array([.string("batch-b")]))
            try await save(page, "vms")

            // A VM's page: state, host, address, the per-host verdicts, its serial log.
            try await open(page, base + "/#/vms/web-a")
            let host = try #require(try await c.vm("web-a").host)
            let facts = try await page.evaluate("document.querySelector('dl.facts').textContent").stringValue ?? ""
            #expect(facts.contains("running") && facts.contains(host))
            #expect(try await page.evaluate("document.querySelectorAll('tr[data-host]').length").intValue == 3)
            let chosen = try await page.evaluate("document.querySelector('tr[data-host] strong')?.parentElement.textContent")
            #expect(chosen.stringValue?.hasPrefix(host) == true, "the chosen host is marked")
            try await page.waitFor("document.querySelector('pre.log').textContent.length > 0", "the serial log shown")
            try await save(page, "vm")

            // Stop, clicked with the mouse: the real VM stops, and the page follows.
            try await page.click("button[data-action=stop]")
            _ = try await cluster.waitFor("web-a", .stopped)
            try await page.waitFor(
                "document.querySelector('#vm-state-badge .badge')?.textContent === 'stopped'", within: 5, "the page shows stopped"
            )
            // Start, from the keyboard: focus the button and press Enter.
            try await page.evaluate("document.querySelector('button[data-action=start]').focus()")
            try await page.pressEnter()
            _ = try await cluster.waitFor("web-a", .running)

            // Migrate to a chosen host: the VM moves, and the move is listed with its numbers.
            try await open(page, base + "/#/vms/batch-b")
            let from = try #require(try await c.vm("batch-b").host)
            let to = ["h1", "h2", "h3"].first { $0 != from }!
            try await page.waitFor("document.querySelector('#migrate-to option[value=\"\(to)\"]')", "\(to) offered")
            try await page.evaluate("document.getElementById('migrate-to').value = '\(to)'")
            try await page.click("button[data-action=migrate]")
            try await eventually("batch-b moved to \(to)", within: 15) { try await c.vm("batch-b").host == to }
            try await page.waitFor(
                "[...document.querySelectorAll('tr[data-migration]')].some(r => r.textContent.includes('completed'))", within: 10,
                "the completed move listed")

            // The application: its objective, charted from its judged windows.
            try await open(page, base + "/#/apps/shop")
            try await page.waitFor(
                "Number(document.querySelector('[data-objective=served] figure')?.dataset.points) >= 2", "points charted")
            let plotted = try await page.evaluate(
                "Chart.getChart(document.querySelector('[data-objective=served] canvas')).data.datasets[0].data.length")
            #expect(plotted.intValue ?? 0 >= 2, "the chart itself holds the points")
            let card = try await page.evaluate("document.querySelector('[data-objective=served]').textContent").stringValue ?? ""
            #expect(card.contains("at least 5/s") && card.contains("error budget left"))
            try await save(page, "app")

            // Plans: a dry run with its explanation.
            try await open(page, base + "/#/plans")
            try await page.click("#plan-new ~ .actions button.primary")
            try await page.waitFor("document.querySelector('#dry-run .plan')", "the dry run shown")
            try await save(page, "plans")

            // Contexts: opened, reset (with its time) and closed from the page.
            try await open(page, base + "/#/contexts")
            try await page.evaluate("document.getElementById('ctx-name').value = 'browser'")
            try await page.click("#ctx-open ~ form button[type=submit]")
            try await eventually("the context opened", within: 10) {
                try await c.listContexts().items.first { $0.name == "browser" }?.state == .running
            }
            try await page.waitFor("document.querySelector('tr[data-context=browser] .badge.running')", "shown running")
            try await page.click("tr[data-context=browser] button[data-action=reset]")
            try await eventually("the context reset", within: 10) {
                try await c.listContexts().items.first { $0.name == "browser" }?.resets == 1
            }
            try await page.waitFor(
                "/\\d+ ms/.test(document.querySelector('tr[data-context=browser] .reset-ms').textContent)", "its reset time shown"
            )
            try await save(page, "contexts")

            // An error answer is shown from the API's envelope, naming the field.
            try await page.evaluate("document.getElementById('ctx-name').value = 'Not_A_Name'")
            try await page.click("#ctx-open ~ form button[type=submit]")
            try await page.waitFor("document.querySelector('.alert p')", "the error shown")
            let error = try await page.evaluate("document.querySelector('.alert p').textContent").stringValue ?? ""
            #expect(error.contains("name"), "\(error)")
            #expect(try await page.evaluate("document.querySelector('.alert p').dataset.code") == .string("invalid_argument"))

            try await page.click("tr[data-context=browser] button[data-action=close]")
            try await eventually("the context closed", within: 10) {
                try await c.listContexts().items.allSatisfy { $0.name != "browser" }
            }
            #expect(browser.dialogs.contains { $0.contains("Close browser?") }, "closing asked first")

            // A 400 px wide window: every page fits without scrolling sideways.
            try await page.resize(width: 400, height: 800)
            for (route, name) in [("", "overview"), ("vms", "vms"), ("vms/web-a", "vm"), ("apps/shop", "app")] {
                try await open(page, base + "/#/" + route)
                let width = try await page.evaluate("document.documentElement.scrollWidth").intValue ?? 0
                let widest = try await page.evaluate(
                    "[...document.querySelectorAll('main *')].filter(e => e.getBoundingClientRect().right > 400).slice(-3).map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right)).join('; ')"
                )
                #expect(width <= 400, "#/\(route) is \(width) px wide at 400: \(widest)")
                try await save(page, "\(name)-400px")
            }
        }
    }

    @Test("a page of another origin cannot make the browser change state through the API (no token on loopback)")
    func crossSiteRequests() async throws {
        try await withConsole { cluster, base, browser in
            _ = try await cluster.controller.createVM(VMSpec(name: "target", image: "tiny", cpus: 1, memoryMiB: 128))
            _ = try await cluster.waitFor("target", .running)
            // Another site, as the user might have open in another tab: it tries a fetch that
            // needs no permission to be sent, and a form posted into a hidden frame.
            let router = Router()
            router.get("/") { _, _ in
                Response(
                    status: .ok, headers: [.contentType: "text/html"],
                    body: .init(
                        byteBuffer: ByteBuffer(
                            string: """
                                <iframe name="sink"></iframe>
                                <form id="f" method="post" target="sink" action="\(base)/v1/vms/target/stop"></form>
                                <script>
                                fetch("\(base)/v1/vms", {method: "POST", mode: "no-cors", body: '{"name":"planted","image":"tiny"}'})
                                  .finally(() => document.getElementById("f").submit());
                                </script>
                                """)))
            }
            let other = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)))
            try await other.test(.live) { client in
                let page = try await browser.newPage()
                try await page.navigate("http://127.0.0.1:\(try #require(client.port))/")
                // Both reach the API, which refuses them.
                try await eventually("the fetch and the form refused with 403", within: 10) {
                    let metrics = try await HTTPClient.shared.execute(
                        HTTPClientRequest(url: base + "/metrics"), timeout: .seconds(5))
                    let text = String(buffer: try await metrics.body.collect(upTo: 1 << 20))
                    let refused = text.split(separator: "\n").filter {
                        $0.hasPrefix("vireo_http_requests_total{") && $0.contains(#"method="POST""#)
                            && $0.contains(#"status="403""#)
                    }
                    return refused.compactMap { line in line.split(separator: " ").last.flatMap { Double($0) } }.reduce(0, +) == 2
                }
            }
            let c = cluster.controller
            #expect(try await c.vm("target").intent == .running, "the forged stop was refused")
            #expect(await c.listVMs().items.map(\.name) == ["target"], "the forged create was refused")
        }
    }

    @Test("off loopback the console asks for a token, says when it is wrong, and works with the right one")
    func tokenLogin() async throws {
        let tokens = AccessTokens(admin: "admin-secret", join: "join-secret")
        try await withConsole(tokens: tokens) { _, base, browser in
            let page = try await browser.newPage()
            try await page.navigate(base + "/#/hosts")
            try await page.waitFor("document.getElementById('token')", "the sign-in form")
            try await save(page, "login")
            for (attempt, token) in ["wrong", "admin-secret"].enumerated() {
                try await page.evaluate("document.getElementById('token').value = \(BrowserPage.quoted(token))")
                try await page.click("form button[type=submit]")
                if attempt == 0 {
                    try await page.waitFor(
                        "document.querySelector('.login')?.textContent.includes('invalid token')", "the refusal shown")
                }
            }
            try await page.waitFor("document.querySelectorAll('tr[data-host]').length === 3", "the hosts listed")
            try await page.waitFor("document.getElementById('live').textContent === 'live'", "the event stream followed")
        }
    }
}

/// Serves `server` (its API, console and display WebSocket) on a loopback port and runs `body` with
/// its base URL and a headless browser; then closes the browser and the event streams (as
/// `ControllerLoops` does at shutdown, so the server need not wait for them) and checks that no
/// page had an uncaught script error.
func withServedConsole(
    _ server: VireoServer, _ body: @Sendable (_ base: String, _ browser: HeadlessChromium) async throws -> Void
) async throws {
    let app = Application(
        router: server.router(), server: server.httpServer(connections: ConnectionTasks()),
        configuration: .init(address: .hostname("127.0.0.1", port: 0)))
    try await app.test(.live) { client in
        let base = "http://127.0.0.1:\(try #require(client.port))"
        let browser = try HeadlessChromium()
        defer {
            browser.close()
            server.controller.events.close()
        }
        try await body(base, browser)
        #expect(browser.exceptions.isEmpty, "uncaught script errors: \(browser.exceptions)")
    }
}
