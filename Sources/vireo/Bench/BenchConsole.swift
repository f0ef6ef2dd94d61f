import ArgumentParser
import Foundation
import Hummingbird
import Prometheus
import VireoAgent
import VireoBrowser
import VireoController
import VireoDriverSimulated
import VireoHTTP
import VireoModel
import VireoStore

/// Result of `vireo bench console`.
struct ConsoleBenchResult: Codable {
    struct Page: Codable {
        /// The console's route (`#/vms`).
        var route: String
        /// From navigation (a fresh document each round) to the first frame with the page's data:
        /// the page, its script and Chart.js loaded, the API answered, the DOM built and painted.
        var readyP50Ms: Double
        var readyP99Ms: Double
        var readyMaxMs: Double
        /// The part after the script started: API calls, DOM building and the frame.
        var renderP50Ms: Double
        /// Rows or cards the page showed (checked against the cluster).
        var shown: Int
    }
    var hosts: Int
    var vms: Int
    var rounds: Int
    var browser: String
    var pages: [Page]
}

struct BenchConsole: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "console",
        abstract: "Time the web console in headless Chromium over a cluster of simulated hosts and VMs.",
        discussion: """
            Starts a controller in this process with --hosts simulated hosts (an agent each) and \
            --vms running VMs, serves its API and console on a loopback port, and loads each page \
            --rounds times as a new document in Debian's headless chromium. Each time is the page's \
            own measure, from navigation to the first frame that shows its data. Nothing leaves the \
            machine; the browser resolves no name and reaches only 127.0.0.1.
            """)

    @Option(help: "Simulated hosts.") var hosts: Int = 10
    @Option(help: "Running VMs, spread over the hosts.") var vms: Int = 1000
    @Option(help: "Loads of each page.") var rounds: Int = 10
    @Option(help: "The browser.") var chromium: String = HeadlessChromium.defaultPath
    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard (1...1000).contains(hosts) else { throw ValidationError("--hosts must be 1...1000 (got \(hosts))") }
        guard (0...100_000).contains(vms) else { throw ValidationError("--vms must be 0...100000 (got \(vms))") }
        guard (1...1000).contains(rounds) else { throw ValidationError("--rounds must be 1...1000 (got \(rounds))") }
    }

    func run() async throws {
        var settings = ControllerSettings()
        settings.heartbeatInterval = .milliseconds(500)
        let controller = try await Controller.open(store: try SQLiteStore(), settings: settings)
        let loops = Task { try await ControllerLoops(controller: controller).run() }
        // Each host has room for its share of the VMs.
        let perHost = (vms + hosts - 1) / hosts
        let driver = SimulatedDriver.Configuration(
            cpus: max(32, perHost), memoryMiB: max(131_072, perHost * 64), bootDelay: .milliseconds(10),
            stopDelay: .milliseconds(10))
        let agents = (0..<hosts).map { i in
            let agent = Agent(
                settings: .init(name: String(format: "host-%03d", i), heartbeatInterval: .milliseconds(500)),
                driver: SimulatedDriver(configuration: driver), link: controller)
            return Task { try await agent.run() }
        }
        defer {
            for agent in agents { agent.cancel() }
            loops.cancel()
        }
        try await benchWait("\(hosts) hosts ready", within: 60) {
            await controller.listHosts().items.filter { $0.state == .ready }.count == hosts
        }
        for i in 0..<vms {
            _ = try await controller.createVM(
                VMSpec(name: String(format: "vm-%05d", i), image: "tiny", cpus: 1, memoryMiB: 80))
            if i % 1000 == 999 { stderr("created \(i + 1)/\(vms) VMs") }
        }
        try await benchWait("\(vms) VMs running", within: 300) {
            var running = 0
            var after: String?
            repeat {
                let page = await controller.listVMs(after: after, limit: 1000)
                running += page.items.filter { $0.state == .running }.count
                after = page.next
            } while after != nil
            return running == vms
        }

        let (port, server) = try await Self.serve(controller)
        defer {
            controller.events.close()
            server.cancel()
        }
        let browser = try HeadlessChromium(path: chromium)
        defer { browser.close() }
        let version = try await browser.send("Browser.getVersion")["product"]?.stringValue ?? "chromium"
        let page = try await browser.newPage()
        let checks: [(route: String, count: String, expected: Int)] = [
            ("", "[...document.querySelectorAll('li[data-state] strong')].reduce((n, e) => n + Number(e.textContent), 0)", vms),
            ("vms", "document.querySelectorAll('tbody tr[data-vm]').length", vms),
            ("hosts", "document.querySelectorAll('tbody tr[data-host]').length", hosts),
        ]
        var pages: [ConsoleBenchResult.Page] = []
        for check in checks {
            var ready: [Double] = []
            var render: [Double] = []
            var shown = 0
            for round in 0..<rounds {
                // A query that changes makes each load a new document, not a move within one.
                try await page.navigate("http://127.0.0.1:\(port)/?round=\(round)#/\(check.route)")
                try await page.waitFor("document.querySelector('main[data-loaded]')", within: 60, "#/\(check.route) loaded")
                let marks = try await page.evaluate(
                    "[Number(document.querySelector('main').dataset.readyMs), Number(document.querySelector('main').dataset.renderMs), \(check.count)]"
                )
                let values = marks.arrayValue?.compactMap(\.doubleValue) ?? []
                guard values.count == 3 else { throw VireoError(.internal, "the page gave no timing: \(marks)") }
                stderr("#/\(check.route) load \(round + 1)/\(rounds): \(Int(values[0])) ms")
                ready.append(values[0])
                render.append(values[1])
                shown = Int(values[2])
            }
            guard shown == check.expected else {
                throw VireoError(.internal, "#/\(check.route) showed \(shown), expected \(check.expected)")
            }
            ready.sort()
            render.sort()
            pages.append(
                .init(
                    route: "#/\(check.route)", readyP50Ms: percentile(ready, 0.5), readyP99Ms: percentile(ready, 0.99),
                    readyMaxMs: ready.last ?? 0, renderP50Ms: percentile(render, 0.5), shown: shown))
        }
        if !browser.exceptions.isEmpty { throw VireoError(.internal, "script errors: \(browser.exceptions)") }
        let result = ConsoleBenchResult(hosts: hosts, vms: vms, rounds: rounds, browser: version, pages: pages)
        if output.output == .json { return try printJSON(result) }
        print("\(hosts) hosts, \(vms) VMs, \(rounds) loads of each page in \(version):")
        for p in pages {
            print(
                String(
                    format: "  %-8@ ready p50 %6.0f ms, p99 %6.0f ms, max %6.0f ms (script part p50 %5.0f ms), %d shown",
                    p.route, p.readyP50Ms, p.readyP99Ms, p.readyMaxMs, p.renderP50Ms, p.shown))
        }
    }

    /// Serves the API and the console on a free loopback port; returns the port and the server's task.
    static func serve(_ controller: Controller) async throws -> (Int, Task<Void, any Error>) {
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let server = VireoServer(controller: controller, tokens: nil, registry: PrometheusCollectorRegistry())
        let app = Application(
            router: server.router(), server: server.httpServer(connections: ConnectionTasks()),
            configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in
                continuation.yield(channel.localAddress?.port ?? 0)
                continuation.finish()
            })
        let task = Task { try await app.run() }
        for await port in ports where port > 0 { return (port, task) }
        task.cancel()
        throw VireoError(.internal, "the console's server did not start")
    }
}
