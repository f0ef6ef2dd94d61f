import Foundation
import Hummingbird
import HummingbirdTesting
import Prometheus
import Testing
import VireoAPI
import VireoAgent
import VireoClient
import VireoController
import VireoDriverSimulated
import VireoHTTP
import VireoModel

@Suite("Console output kept per VM")
struct ConsoleTailTests {
    @Test("output already taken in is skipped; a log that starts over is new output")
    func merging() {
        var tail = ConsoleTail()
        tail.append(ConsoleChunk(offset: 0, next: 6, text: "hello\n"))
        tail.append(ConsoleChunk(offset: 6, next: 12, text: "world\n"))
        // A heartbeat whose answer was lost is sent again, with a little more.
        tail.append(ConsoleChunk(offset: 6, next: 15, text: "world\nok\n"))
        tail.append(ConsoleChunk(offset: 6, next: 12, text: "world\n"))
        #expect(tail.text == "hello\nworld\nok\n")
        #expect(tail.next == 15)
        #expect(tail.written == 15)
        tail.append(ConsoleChunk(offset: 0, next: 7, text: "again\n\n"))
        #expect(tail.text == "hello\nworld\nok\nagain\n\n")
        #expect(tail.next == 7)
        #expect(tail.written == 22)
        #expect(tail.text(after: 15) == "again\n\n")
        #expect(tail.text(after: 22) == "")
    }

    @Test("only the last bytes are kept, starting at a whole character")
    func retention() {
        var tail = ConsoleTail()
        tail.append(ConsoleChunk(offset: 0, next: 10, text: "ééééé"), retaining: 5)  // 10 bytes
        #expect(tail.text == "éé")  // the 5 last bytes start inside a character
        #expect(tail.written == 10)
        #expect(tail.text(after: 0) == "éé", "a position no longer kept gives everything kept")
        #expect(tail.text(after: 8) == "é")
    }

    @Test("the last N lines")
    func lastLines() {
        #expect(ConsoleTail.lastLines(2, of: "a\nb\nc\n") == "b\nc\n")
        #expect(ConsoleTail.lastLines(2, of: "a\nb\nc") == "b\nc")
        #expect(ConsoleTail.lastLines(5, of: "a\nb\n") == "a\nb\n")
        #expect(ConsoleTail.lastLines(0, of: "a\n") == "")
        #expect(ConsoleTail.lastLines(1, of: "") == "")
    }
}

@Suite("VM address and console through agents")
struct AgentReportTests {
    /// The cluster's controller behind its HTTP routes, in process.
    func api(_ controller: Controller) -> Application<RouterResponder<VireoRequestContext>> {
        let server = VireoServer(controller: controller, tokens: nil, registry: PrometheusCollectorRegistry())
        return Application(router: server.router(), configuration: .init(address: .hostname("127.0.0.1", port: 0)))
    }

    @Test("the address a host reports is on the VM while it runs, and gone once it stops")
    func address() async throws {
        let cluster = try await LocalCluster.start(settings: .steady)
        defer { cluster.stop() }
        let c = cluster.controller
        _ = try await c.createVM(VMSpec(name: "a", image: "tiny", cpus: 1, memoryMiB: 128))
        _ = try await cluster.waitFor("a", .running)
        try await eventually("address reported") { try await c.vm("a").address != nil }
        let address = try #require(try await c.vm("a").address)
        #expect(address.hasPrefix("198.18.") && address.hasSuffix(":80"))
        try await api(c).test(.router) { client in
            let shown = try decodeJSON(VMView.self, try await client.request(.get, "/v1/vms/a").body)
            #expect(shown.address == address)
            let listed = try decodeJSON(VMPage.self, try await client.request(.get, "/v1/vms").body)
            #expect(listed.items.first?.address == address)
        }
        // Heartbeats that report the same thing change nothing a cache depends on.
        let version = c.version
        try await Task.sleep(for: .milliseconds(300))
        #expect(c.version == version)

        let stopping = try await c.stopVM("a")
        #expect(stopping.address == nil, "a VM on its way down has no address")
        let stopped = try await cluster.waitFor("a", .stopped)
        #expect(stopped.address == nil)
        _ = try await c.startVM("a")
        _ = try await cluster.waitFor("a", .running)
        try await eventually("address back after a restart") { try await c.vm("a").address == address }
    }

    @Test("console output reaches GET /v1/vms/{vm}/logs; tail and after select from it; unknown VM is 404")
    func logsInProcess() async throws {
        let cluster = try await LocalCluster.start(settings: .steady)
        defer { cluster.stop() }
        let c = cluster.controller
        _ = try await c.createVM(VMSpec(name: "a", image: "tiny", cpus: 1, memoryMiB: 128))
        _ = try await cluster.waitFor("a", .running)
        try await eventually("boot and ready lines arrive") { try await c.console("a").text.contains("a ready") }
        let versionBefore = c.version
        try await api(c).test(.router) { client in
            let full = try await client.execute(uri: "/v1/vms/a/logs", method: .get) { $0 }
            #expect(full.status == .ok)
            #expect(full.headers[.contentType]?.hasPrefix("text/plain") == true)
            let text = String(buffer: full.body)
            #expect(text == "[simulated] booting a: 1 vCPU, 128 MiB, image tiny\n[simulated] a ready\n")
            let position = try #require(full.headers[HTTPFields.Element.Name("Vireo-Log-Position")!].flatMap { UInt64($0) })
            #expect(position == UInt64(text.utf8.count))

            #expect(try await client.request(.get, "/v1/vms/a/logs?tail=1").body == "[simulated] a ready\n")
            #expect(try await client.request(.get, "/v1/vms/a/logs?after=\(position)").body == "")
            let missing = try await client.request(.get, "/v1/vms/nope/logs")
            #expect(missing.status == 404)
            expectEnvelope(missing.body, code: .notFound)
            #expect(try await client.request(.get, "/v1/vms/a/logs?tail=-1").status == 400)
        }
        #expect(c.version == versionBefore, "console output does not invalidate cached responses")

        // A stop adds a line; `after` returns only that.
        let position = try await c.console("a").written
        _ = try await c.stopVM("a")
        _ = try await cluster.waitFor("a", .stopped)
        try await eventually("power-off line arrives") { try await c.console("a").text.hasSuffix("a powered off\n") }
        #expect(try await c.console("a").text(after: position) == "[simulated] a powered off\n")

        // The output goes with its VM.
        _ = try await c.createVM(VMSpec(name: "b", image: "tiny", cpus: 1, memoryMiB: 128))
        #expect(try await c.console("b").text == "")
        _ = try await c.deleteVM("a")
        try await eventually("a removed") { (try? await c.vm("a")) == nil }
        await #expect(throws: VireoError.self) { try await c.console("a") }
    }

    @Test("address and console travel over the HTTP link as they do in process")
    func overHTTP() async throws {
        let plane = try await TestControlPlane.make(hosts: [])
        let c = plane.controller
        let app = Application(
            router: plane.server.router(), configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        try await app.test(.live) { client in
            let port = try #require(client.port)
            let link = VireoClient(server: "http://127.0.0.1:\(port)", timeout: .seconds(5))
            let driver = SimulatedDriver(configuration: .init(bootDelay: .milliseconds(50)))
            let agent = Agent(settings: .init(name: "remote", heartbeatInterval: .milliseconds(50)), driver: driver, link: link)
            let task = Task { try await agent.run() }
            defer { task.cancel() }
            try await eventually("agent registered") { await c.listHosts().items.count == 1 }
            _ = try await c.createVM(VMSpec(name: "a", image: "tiny", cpus: 1, memoryMiB: 128))
            try await eventually("running with an address") { try await c.vm("a").address != nil }
            try await eventually("console arrives over HTTP") { try await c.console("a").text.contains("a ready") }
            let (text, position) = try await link.vmLogs("a", tail: 1)
            #expect(text == "[simulated] a ready\n")
            #expect(position > 0)
        }
    }
}
