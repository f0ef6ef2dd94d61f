import Foundation
import Testing
import VireoAPI
import VireoController
import VireoModel
import VireoStore

/// The rebalancer wired into the controller: snapshots from heartbeats (CPU) and the telemetry
/// engine (objectives), dry runs, executed plans through ordinary migrations, stored outcomes.
/// Hosts and VMs are driven by hand (heartbeats on a manual clock), so every number is known.
@Suite("Rebalancing in the controller")
struct RebalanceControllerTests {
    /// shop-1 (app shop) and noisy on h1, filler on h2, 8 CPUs each.
    struct Scene {
        let plane: TestControlPlane
        let clock: ManualClock
        let hosts: [String: HostID]
        var cpu: [String: Double] = [:]
        var hostBusy: [String: Double] = [:]
        var requests = 0

        static func make(store: (any ClusterStore)? = nil) async throws -> Scene {
            let clock = ManualClock()
            let plane = try await TestControlPlane.make(hosts: ["h1", "h2"], store: store, now: { clock.now })
            let controller = plane.controller
            _ = try await controller.apply(try ManifestParser.parse(shopManifest))
            // Placement spreads: the filler takes h2, so noisy lands next to shop-1 without a pin.
            _ = try await controller.createVM(VMSpec(name: "filler", image: "tiny", cpus: 8, memoryMiB: 128))
            _ = try await controller.createVM(VMSpec(name: "noisy", image: "tiny", cpus: 1, memoryMiB: 128))
            var hosts: [String: HostID] = [:]
            for name in ["h1", "h2"] { hosts[name] = try await controller.host(name).id }
            #expect(try await controller.vm("shop-1").host == "h1")
            #expect(try await controller.vm("noisy").host == "h1")
            #expect(try await controller.vm("filler").host == "h2")
            return Scene(plane: plane, clock: clock, hosts: hosts)
        }

        /// Two seconds pass: each host reports its running VMs' CPU (cores) and its own, and shop
        /// pushes its latency.
        mutating func step(usage: [String: Double], latency: Double) async throws {
            clock.advance(2)
            let controller = plane.controller
            var perHost: [String: [InstanceReport]] = [:]
            for (name, cores) in usage.sorted(by: { $0.key < $1.key }) {
                let vm = try await controller.vm(name)
                guard let host = vm.host else { continue }
                cpu[name, default: 0] += cores * 2
                hostBusy[host, default: 0] += cores * 2
                perHost[host, default: []].append(
                    InstanceReport(id: vm.id, state: .running, generation: vm.generation, cpuSeconds: cpu[name]))
            }
            for (host, id) in hosts {
                _ = try await controller.heartbeat(
                    AgentHeartbeat(
                        hostID: id, instances: perHost[host] ?? [],
                        hostCPU: HostCPUUsage(busySeconds: hostBusy[host] ?? 0, capacity: 8)))
            }
            requests += 20
            _ = try await controller.ingest(
                app: "shop", exposition: shopExposition(requests: requests, latency: latency, queue: 3, at: clock.ms),
                at: clock.now)
            await controller.evaluateSLOs()
        }
    }

    /// h1 at 62% (above the 60% the slo policy calls contended); h2 at 58% once noisy is there.
    static let contended = ["shop-1": 0.5, "noisy": 4.5, "filler": 0.1]

    @Test("an application burning its budget on a busy host gets the neighbour moved: dry run, execution, stored outcome")
    func sloMovesTheNeighbour() async throws {
        var scene = try await Scene.make()
        let controller = scene.plane.controller
        for _ in 0..<20 { try await scene.step(usage: Self.contended, latency: 0.2) }
        #expect(try await controller.app("shop").objectives.first { $0.name == "latency" }?.state == .breaching)
        // What the planner sees is shown on the hosts: h1 runs 5 of its 8 cores.
        #expect(abs((try await controller.host("h1").cpuLoad ?? 0) - 0.625) < 1e-9)

        let fixed = scene
        try await scene.plane.test { client in
            // Dry run: the reasons, and nothing changes.
            let dry = try await client.request(.post, "/v1/plans")
            #expect(dry.status == 200, "\(dry.body)")
            let plan = try decodeJSON(Plan.self, dry.body)
            #expect(plan.state == .dryRun && plan.policy == "slo")
            let move = try #require(plan.actions.first, "\(dry.body)")
            #expect(plan.actions.count == 1)
            #expect(move.vm == "noisy" && move.from == "h1" && move.to == "h2")
            #expect(move.application == "shop" && move.objective == "latency")
            // The reason arrives typed over the API, with what the policy weighed.
            if case .objectivePressure(let app, let objective, let state, let burn, _, let host, let relief) = move.reason {
                #expect(app == "shop" && objective == "latency" && state == .breaching && host == "h1")
                #expect(burn > 1 && relief > 0 && relief <= 1)
            } else {
                Issue.record("not an objective-pressure move: \(move.reason)")
            }
            #expect(move.explanation.contains("shop/latency is breaching"), "\(move.explanation)")
            #expect(
                abs(move.predicted.sourceLoadBefore - 0.625) < 1e-9 && abs(move.predicted.sourceLoadAfter - 0.0625) < 1e-9,
                "\(move.predicted)")
            #expect((move.predicted.benefit ?? 0) > 2 * (move.predicted.weightedCost ?? .infinity))
            let considered = Dictionary(uniqueKeysWithValues: plan.considered.map { ($0.vm, $0) })
            #expect(considered["noisy"]?.moved == true)
            #expect(considered["noisy"]?.destinations.map(\.host) == ["h2"])
            #expect(considered["shop-1"]?.moved == false && considered["shop-1"]?.reason != nil)
            #expect(try decodeJSON(PlanList.self, try await client.request(.get, "/v1/plans").body).items.isEmpty)
            #expect(try await controller.listMigrations().items.isEmpty)

            // The baseline sees the same busy host; unknown policies are refused naming the field.
            let threshold = try decodeJSON(
                Plan.self, try await client.request(.post, "/v1/plans", body: #"{"policy":"threshold-0.5"}"#).body)
            #expect(threshold.actions.map(\.reason.kind) == ["host-over-threshold"])
            for bad in [#"{"policy":"thresh"}"#, #"{"policy":"threshold-2"}"#, #"{"execute":"yes"}"#, #"{"when":1}"#] {
                let refused = try await client.request(.post, "/v1/plans", body: bad)
                #expect(refused.status == 400, "\(bad)")
                #expect(!expectEnvelope(refused.body, code: .invalidArgument).isEmpty)
            }

            // Execute: the migration starts with the plan's reason, and the plan is stored.
            let executed = try await client.request(.post, "/v1/plans", body: #"{"execute":true}"#)
            #expect(executed.status == 201, "\(executed.body)")
            let stored = try decodeJSON(Plan.self, executed.body)
            #expect(stored.state == .executing && stored.trigger == .manual && stored.id.hasPrefix("p-"))
            let migrationID = try #require(stored.actions.first?.migration)
            let migration = try await controller.migration(migrationID.rawValue)
            #expect(migration.reason.contains(stored.id) && migration.reason.contains("shop/latency"))
            #expect(try decodeJSON(Plan.self, try await client.request(.get, "/v1/plans/\(stored.id)").body) == stored)
            #expect(try await client.request(.get, "/v1/plans/p-nope").status == 404)

            // The hosts carry it out; the plan settles with the outcome.
            try await completeMigration(migrationID, scene: fixed)
            try await controller.settlePlans()
            let done = try decodeJSON(Plan.self, try await client.request(.get, "/v1/plans/\(stored.id)").body)
            #expect(done.state == .completed, "\(done)")
            #expect(done.actions.first?.outcome == .migration(.completed) && done.actions.first?.downtimeMs == 20)
            #expect(try await controller.vm("noisy").host == "h2")
            let events = controller.events.events(after: 0).filter { $0.kind == .plan }
            #expect(events.map(\.to) == ["executing", "completed"])
        }

        // Right after, the objective still shows the old windows: the policy waits (hysteresis).
        try await scene.step(usage: ["shop-1": 0.5, "filler": 0.1], latency: 0.2)
        let waiting = try await controller.plan()
        #expect(waiting.actions.isEmpty)
        #expect(waiting.notes.contains { $0.contains("waiting") }, "\(waiting.notes)")

        // The plan outlives the controller.
        let clock = scene.clock
        let reopened = try await Controller.open(store: scene.plane.store, now: { clock.now })
        #expect(try await reopened.listPlans().items.map(\.state) == [.completed])
    }

    @Test("a busy host whose applications meet their objectives is left alone by slo, not by threshold")
    func misleadingCounters() async throws {
        var scene = try await Scene.make()
        // h1 at 94%: busy, but shop meets its objectives.
        for _ in 0..<20 { try await scene.step(usage: ["shop-1": 0.5, "noisy": 7, "filler": 0.1], latency: 0.02) }
        let controller = scene.plane.controller
        #expect(try await controller.app("shop").objectives.first { $0.name == "latency" }?.state == .ok)
        let slo = try await controller.plan(policy: "slo")
        #expect(slo.actions.isEmpty)
        #expect(slo.notes.contains { $0.contains("no application burns its error budget") }, "\(slo.notes)")
        let threshold = try await controller.plan(policy: "threshold")
        #expect(threshold.actions.map(\.vm) == ["noisy"])
        #expect(threshold.actions.first?.explanation.contains("above 80%") == true, "\(threshold.actions)")
        // CloudSim's heuristics run on the live cluster too, with their own typed reason. At 80 %
        // THR moves nothing: noisy (7 cores) would overload h2 (89 %); at 90 % it may.
        #expect(try await controller.plan(policy: "thr-mmt-0.8").actions.isEmpty)
        let thr = try await controller.plan(policy: "thr-mmt-0.9")
        #expect(thr.policy == "thr-mmt-0.9")
        #expect(thr.actions.first.map { [$0.vm, $0.from, $0.to] } == ["noisy", "h1", "h2"], "\(thr)")
        guard case .hostOverloaded(let host, let utilisation, let test)? = thr.actions.first?.reason else {
            Issue.record("not a host-overloaded move: \(thr.actions)")
            return
        }
        #expect(host == "h1" && utilisation > 0.9 && test == "thr-mmt-0.9")
        await #expect(throws: VireoError.self) { try await controller.plan(policy: "thr-mmt-7") }
    }

    @Test("the cluster's policy plans on its own; a failed move fails the plan and the VM stays; settings persist")
    func automaticAndFailure() async throws {
        var scene = try await Scene.make()
        let controller = scene.plane.controller
        let fixed = scene
        try await fixed.plane.test { client in
            for bad in [#"{"policy":"sometimes"}"#, #"{"policy":"slo","intervalSeconds":0}"#, #"{}"#] {
                let refused = try await client.request(.put, "/v1/rebalance", body: bad)
                #expect(refused.status == 400, "\(bad)")
            }
            #expect(
                try decodeJSON(RebalanceStatus.self, try await client.request(.get, "/v1/rebalance").body).settings.policy == nil)
            let set = try await client.request(.put, "/v1/rebalance", body: #"{"policy":"slo","intervalSeconds":1}"#)
            #expect(set.status == 200, "\(set.body)")
        }
        // Nothing suffers: the loop plans, finds nothing, stores nothing.
        for _ in 0..<5 {
            try await scene.step(usage: Self.contended, latency: 0.02)
            try await controller.rebalanceIfDue()
        }
        #expect(try await controller.listPlans().items.isEmpty)
        #expect(await controller.rebalanceStatus().lastPlan?.notes.isEmpty == false)
        // Now it suffers: the loop moves noisy.
        var plan: Plan?
        for _ in 0..<20 where plan == nil {
            try await scene.step(usage: Self.contended, latency: 0.2)
            try await controller.rebalanceIfDue()
            plan = try await controller.listPlans().items.first
        }
        let started = try #require(plan)
        #expect(started.trigger == .automatic && started.actions.map(\.vm) == ["noisy"])
        // The destination fails: the migration fails, the plan fails, noisy stays on h1.
        let migrationID = try #require(started.actions.first?.migration)
        _ = try await controller.heartbeat(
            AgentHeartbeat(
                hostID: scene.hosts["h2"]!, instances: [],
                migrations: [MigrationReport(id: migrationID, state: .failed, message: "no room", settled: true)]))
        try await controller.settlePlans()
        let failed = try await controller.storedPlan(started.id)
        #expect(failed.state == .failed)
        #expect(failed.message?.contains("no room") == true, "\(failed.message ?? "")")
        #expect(try await controller.vm("noisy").host == "h1")

        let clock = scene.clock
        let reopened = try await Controller.open(store: scene.plane.store, now: { clock.now })
        #expect(await reopened.rebalanceStatus().settings == RebalanceSettings(policy: "slo", intervalSeconds: 1))
    }

    /// The destination listens, the source sends and reports the figures.
    func completeMigration(_ id: MigrationID, scene: Scene) async throws {
        let controller = scene.plane.controller
        _ = try await controller.heartbeat(
            AgentHeartbeat(
                hostID: scene.hosts["h2"]!, instances: [],
                migrations: [MigrationReport(id: id, state: .ready, incomingURI: "sim://h2/x")]))
        _ = try await controller.heartbeat(
            AgentHeartbeat(
                hostID: scene.hosts["h1"]!, instances: [],
                migrations: [
                    MigrationReport(
                        id: id, state: .completed,
                        stats: MigrationStats(totalTimeMs: 900, downtimeMs: 20, transferredBytes: 130 << 20))
                ]))
        #expect(try await controller.migration(id.rawValue).state == .completed)
    }
}
