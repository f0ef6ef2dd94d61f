import Foundation
import Hummingbird
import HummingbirdTesting
import Testing
import VireoAPI
import VireoClient
import VireoController
import VireoModel
import VireoStore

/// `GET /v1/history`: the recorded steps on a time axis, the window's migrations with the plan
/// that asked for them, parameters checked at the edge.
@Suite("Usage history API")
struct HistoryAPITests {
    /// Four recorded steps (0 s to 40 s): shop-1 moves from its host to the other at 24 s (asked
    /// for by hand at 20 s); at 30 s a plan asks to move it back, which has not started by 40 s.
    static func scene() async throws -> (scene: HistoryScene, from: String, to: String, back: MigrationID) {
        var scene = try await HistoryScene.make(archive: try SQLiteUsageArchive())
        let usage = ["shop-1": 0.5, "batch": 1.5]
        let resident = ["shop-1": 100]
        let from = try #require(try await scene.controller.vm("shop-1").host)
        let to = from == "h1" ? "h2" : "h1"
        try await scene.run(steps: 2, usage: usage, resident: resident)
        let move = try await scene.controller.migrateVM("shop-1", to: to)
        try await scene.advance(
            usage: usage, resident: resident,
            migrations: [to: [MigrationReport(id: move.id, state: .ready, incomingURI: "sim://\(to)/shop-1")]])
        try await scene.advance(
            usage: usage, resident: resident,
            migrations: [
                from: [
                    MigrationReport(
                        id: move.id, state: .completed,
                        stats: MigrationStats(totalTimeMs: 150, downtimeMs: 20, transferredBytes: 128 << 20))
                ]
            ])
        for _ in 0..<3 { try await scene.advance(usage: usage, resident: resident) }
        let back = try await scene.controller.migrateVM("shop-1", to: from, reason: "plan p-back (slo): shop burns")
        // The plan that asked for it, as the rebalancer stores it.
        var action = Plan.Action(
            vm: "shop-1", vmID: back.vmID, from: to, to: from,
            reason: .objectivePressure(
                application: "shop", objective: "latency", state: .breaching, burnRate: 5, lookbackSeconds: 300, host: to,
                relief: 0.5),
            application: "shop",
            objective: "latency", explanation: "shop burns",
            predicted: Plan.Prediction(
                sourceLoadBefore: 0.25, sourceLoadAfter: 0.2, destinationLoadBefore: 0.1, destinationLoadAfter: 0.15,
                migrationSeconds: 1, downtimeMs: 20, transferredMiB: 128))
        action.migration = back.id
        try await scene.plane.store.commit(
            StoreBatch(plans: [
                Plan(
                    id: "p-back", policy: "slo", trigger: .automatic, state: .executing, createdAt: scene.clock.now,
                    actions: [action], considered: [], notes: [])
            ]))
        for _ in 0..<5 { try await scene.advance(usage: usage, resident: resident) }
        return (scene, from, to, back.id)
    }

    @Test("the recorded steps on the time axis, with names, and the window's migrations with the plan that asked for them")
    func serves() async throws {
        let (scene, from, to, back) = try await Self.scene()
        let checker = ResponseChecker(openAPI: try OpenAPITests())
        try await scene.plane.test { client in
            let response = try await client.request(.get, "/v1/history?since=60&step=10")
            #expect(response.status == 200, "\(response.body.prefix(300))")
            checker.check(
                method: .get, route: "/v1/history", status: response.status, contentType: "application/json",
                body: response.body)
            let history = try decodeJSON(ClusterHistory.self, response.body)
            // At 40 s: six steps back from the last complete one, the first two before anything ran.
            #expect(history.from == HistoryScene.t0.addingTimeInterval(-20))
            #expect(history.to == HistoryScene.t0.addingTimeInterval(40))
            #expect(history.stepSeconds == 10 && history.steps == 6)
            #expect(history.hosts.map(\.name) == ["h1", "h2"])
            let h1 = try #require(history.hosts.first)
            #expect(h1.id == scene.hosts["h1"] && h1.cpus == 8 && h1.memoryMiB == 16_384 && h1.driver == "simulated")
            #expect(h1.capabilities == [.liveMigration, .pause] && h1.cpuLoad?.count == 6)

            let vms = Dictionary(uniqueKeysWithValues: history.vms.map { ($0.name, $0) })
            let shop = try #require(vms["shop-1"])
            #expect(shop.id == (try await scene.controller.vm("shop-1").id) && shop.app == "shop")
            #expect(shop.cpus == 1 && shop.memoryMiB == 128)
            #expect(shop.host == [nil, nil, from, from, to, to])
            #expect(near(shop.cpuCores, [nil, nil, 0.5, 0.5, 0.5, 0.5]), "\(shop.cpuCores)")
            #expect(shop.residentMiB == [nil, nil, 100, 100, 100, 100])
            // Nothing measured idle's memory: no series of nulls, the key is left out.
            #expect(vms["idle"]?.residentMiB == nil && vms["idle"]?.cpuCores == Array(repeating: nil, count: 6))
            let raw = try decodeJSON(JSONValue.self, response.body)
            let rawIdle = raw["vms"]?.arrayValue?.first { $0["name"] == .string("idle") }
            #expect(rawIdle?["residentMiB"] == nil && rawIdle?["cpuCores"]?.arrayValue?.first == .null)

            let shopApp = try #require(history.applications.first)
            #expect(shopApp.name == "shop" && shopApp.objectives.first?.target == 0.05)
            #expect(shopApp.state == [nil, nil] + scene.recordedStates.map { Optional($0) })

            #expect(history.migrations.count == 2)
            let moved = try #require(history.migrations.first)
            #expect(moved.vm == "shop-1" && moved.from == from && moved.to == to && moved.state == .completed)
            #expect(moved.requestedAt == HistoryScene.t0.addingTimeInterval(20))
            #expect(moved.endedAt == HistoryScene.t0.addingTimeInterval(24) && moved.downtimeMs == 20)
            #expect(moved.reason == "requested" && moved.plan == nil && moved.policy == nil)
            let planned = try #require(history.migrations.last)
            #expect(planned.id == back && planned.from == to && planned.to == from && planned.state == .pending)
            #expect(planned.plan == "p-back" && planned.policy == "slo" && planned.startedAt == nil)

            // The DTO round-trips through its JSON.
            let encoded = try VireoJSON.encoder().encode(history)
            #expect(try VireoJSON.decoder().decode(ClusterHistory.self, from: encoded) == history)

            // Coarser steps fold the recorded ones: the mean, the host at the end, the worst state.
            let coarse = try decodeJSON(
                ClusterHistory.self, try await client.request(.get, "/v1/history?since=1m&step=20").body)
            #expect(coarse.from == history.from && coarse.to == history.to && coarse.steps == 3)
            let coarseShop = try #require(coarse.vms.first { $0.name == "shop-1" })
            #expect(coarseShop.host == [nil, from, to])
            #expect(near(coarseShop.cpuCores, [nil, 0.5, 0.5]))
            let states = scene.recordedStates
            #expect(
                coarse.applications.first?.state == [nil, SLOState.worst(states[0...1]), SLOState.worst(states[2...3])])

            // By default: a day in recording steps; the moves of 20 s ago are still in it.
            let day = try decodeJSON(ClusterHistory.self, try await client.request(.get, "/v1/history").body)
            #expect(day.stepSeconds == 10 && day.steps == 8_640 && day.migrations.count == 2)
            #expect(day.vms.first { $0.name == "shop-1" }?.host.suffix(4) == [from, from, to, to])
        }
        #expect(checker.failures == [], "\(checker.failures)")
        #expect(checker.checked.count == 1)
    }

    @Test("a bad since or step is refused with 400, naming the parameter and the value")
    func refuses() async throws {
        let plane = try await TestControlPlane.make(settings: HistoryScene.settings())
        try await plane.test { client in
            for (query, parameter, value) in [
                ("since=soon", "since", "'soon'"), ("since=0", "since", "'0'"), ("since=-5", "since", "'-5'"),
                ("since=400d", "since", "'400d'"), ("since=30d", "since", "'30d'"), ("step=7", "step", "'7'"),
                ("step=0", "step", "'0'"), ("step=12.5", "step", "'12.5'"), ("step=8d", "step", "'8d'"),
                ("since=1h&step=x", "step", "'x'"),
            ] {
                let response = try await client.request(.get, "/v1/history?\(query)")
                #expect(response.status == 400, "\(query)")
                let message = expectEnvelope(response.body, code: .invalidArgument)
                #expect(message.hasPrefix(parameter + ":") && message.contains(value), "\(query): \(message)")
            }
            // 30 days in 10 s steps is too many: the message says what to do.
            let tooMany = expectEnvelope(try await client.request(.get, "/v1/history?since=30d").body, code: .invalidArgument)
            #expect(tooMany.contains("259200 steps") && tooMany.contains("larger step"), "\(tooMany)")
            #expect(try await client.request(.get, "/v1/history?since=30d&step=3m").status == 200)
        }
    }

    @Test("a restarted controller serves the history recorded before, through the client")
    func restart() async throws {
        let directory = temporaryDirectory()
        let clock = ManualClock(HistoryScene.t0)
        var first = try await HistoryScene.make(
            store: try SQLiteStore(path: directory + "/vireo.db"),
            archive: try SQLiteUsageArchive(path: directory + "/history.db"), clock: clock)
        try await first.run(steps: 3, usage: ["shop-1": 0.5], resident: ["shop-1": 64])
        let hosts = first.hosts

        // A new controller over the same files; an hour passes before anyone asks.
        clock.advance(3_600)
        let second = try await TestControlPlane.make(
            hosts: [], store: try SQLiteStore(path: directory + "/vireo.db"), settings: HistoryScene.settings(),
            now: { clock.now }, history: try SQLiteUsageArchive(path: directory + "/history.db"))
        let app = Application(
            router: second.server.router(), configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        try await app.test(.live) { client in
            let port = try #require(client.port)
            let vireo = VireoClient(server: "http://127.0.0.1:\(port)", timeout: .seconds(5))
            let history = try await vireo.history(since: "2h", step: "1m")
            #expect(history.stepSeconds == 60 && history.steps == 120)
            let shop = try #require(history.vms.first { $0.name == "shop-1" })
            // The three 10 s steps fall in the window's first minute after t0.
            let index = Int(HistoryScene.t0.timeIntervalSince(history.from) / 60)
            #expect(near([shop.cpuCores[index]], [0.5]), "\(shop.cpuCores[index].map { "\($0)" } ?? "nil")")
            #expect(shop.residentMiB?[index] == 64)
            #expect(shop.host[index] != nil && shop.host.compactMap { $0 }.count == 1)
            #expect(history.hosts.map(\.id).sorted() == hosts.values.sorted())
            await #expect(throws: VireoError.self) { _ = try await vireo.history(step: "7") }
        }
    }
}
