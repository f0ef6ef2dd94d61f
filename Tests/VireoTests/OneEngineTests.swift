import Foundation
import Testing
import VireoAPI
import VireoController
import VireoModel
import VireoPlacement
import VireoSim

/// The simulator and the controller run one engine: the same policies on the same cluster model,
/// through the same feasibility chain.
@Suite("One engine")
struct OneEngineTests {
    /// `vms` VMs over `samples` five-minute samples, drawn from a seeded generator: bursty enough
    /// that every policy moves VMs.
    static func trace(vms: Int, samples: Int, seed: UInt64) -> UtilisationTrace {
        var random = SplitMix64(seed: seed)
        var values: [UInt16] = []
        for _ in 0..<vms {
            var level = Double.random(in: 0...0.6, using: &random)
            for _ in 0..<samples {
                level = min(1, max(0, level + Double.random(in: -0.25...0.25, using: &random)))
                values.append(UInt16(level * 10_000))
            }
        }
        return UtilisationTrace(
            source: "seed \(seed)", vmNames: (0..<vms).map { "vm\($0)" }, samplesPerVM: samples, samples: values)
    }

    /// Every plan of a run, as [VM, destination] pairs per step.
    static func decisions(
        _ trace: UtilisationTrace, policy: String, model: SimulationModel, hosts: Int = 24, steps: Int
    ) throws -> [[[Int]]] {
        let fleet = CloudSimFleet.fleet(hosts: hosts, trace: trace)
        let simulator = try Simulator(
            fleet: fleet, trace: trace, policy: try Policies.make(policy),
            settings: SimulationSettings(interval: 300, duration: Double(steps) * 300, model: model))
        var plans: [[[Int]]] = []
        _ = try simulator.run(decided: { _, _, plan in plans.append(plan.actions.map { [$0.vmIndex, $0.toIndex] }) })
        return plans
    }

    @Test("realistic model: changing the samples after step k leaves every decision up to step k unchanged")
    func causality() async throws {
        // Ten runs: on a thread of its own (`offPool`), not one of the few pool threads.
        let (changedEarly, changedLater) = try await offPool { try Self.causalityRuns() }
        #expect(changedEarly.isEmpty, "decisions up to step k changed for \(changedEarly)")
        // The later samples do change what the policies decide later: the comparison has teeth.
        #expect(changedLater >= 3, "only \(changedLater) policies decided differently after step k")
    }

    /// The policies whose decisions up to step k changed, and how many decided differently later.
    static func causalityRuns() throws -> ([String], Int) {
        let samples = 36
        let k = 15
        let original = Self.trace(vms: 60, samples: samples, seed: 7)
        var changed = original
        var random = SplitMix64(seed: 99)
        for vm in 0..<changed.vmCount {
            for sample in (k + 1)..<samples {
                changed.samples[vm * samples + sample] = UInt16.random(in: 0...10_000, using: &random)
            }
        }
        var changedEarly: [String] = []
        var changedLater = 0
        for policy in ["slo", "thr-mmt-0.8", "iqr-mmt-1.5", "lr-mmt-1.2", "threshold"] {
            let before = try Self.decisions(original, policy: policy, model: .realistic, steps: samples)
            let after = try Self.decisions(changed, policy: policy, model: .realistic, steps: samples)
            if Array(before.prefix(k + 1)) != Array(after.prefix(k + 1)) { changedEarly.append(policy) }
            if before != after { changedLater += 1 }
        }
        return (changedEarly, changedLater)
    }

    @Test(
        "realistic model: memory is a hard limit for every policy at every step, a moving VM holding it on both hosts",
        arguments: ["slo", "thr-mmt-0.8", "mad-mmt-2.5", "lrr-mmt-1.2", "dvfs"])
    func memoryHardLimit(policy: String) throws {
        let trace = Self.trace(vms: 80, samples: 24, seed: 3)
        // 80 VMs of 613-1740 MB on 40 hosts of 4 GB: memory, not CPU, decides how many share a host.
        let fleet = CloudSimFleet.fleet(hosts: 40, trace: trace)
        let simulator = try Simulator(
            fleet: fleet, trace: trace, policy: try Policies.make(policy),
            settings: SimulationSettings(duration: 24 * 300, model: .realistic))
        var checked = 0
        var worst = 0.0
        let (result, _) = try simulator.run(decided: { _, cluster, plan in
            var memory = [Double](repeating: 0, count: cluster.hostCount)
            for vm in 0..<cluster.vmCount where cluster.vmHost[vm] >= 0 {
                memory[cluster.vmHost[vm]] += cluster.vms[vm].memoryMiB
                if cluster.vmDestination[vm] >= 0 { memory[cluster.vmDestination[vm]] += cluster.vms[vm].memoryMiB }
            }
            // Apply the plan as the simulator will: each moving VM holds memory on its destination too.
            for move in plan.actions where cluster.vmDestination[move.vmIndex] < 0 {
                memory[move.toIndex] += cluster.vms[move.vmIndex].memoryMiB
            }
            for host in 0..<cluster.hostCount { worst = max(worst, memory[host] / cluster.hosts[host].memoryMiB) }
            checked += 1
        })
        #expect(checked == 24)
        #expect(worst <= 1, "a host held \(worst * 100)% of its memory")
        #expect(result.finishedVMs == 0, "in the realistic model idle VMs keep their memory")
        #expect(result.unplacedVMs == 0)
    }

    @Test("the controller's policies run in the simulator and CloudSim's on a live cluster, from one list of names")
    func everyPolicyEverywhere() throws {
        let trace = Self.trace(vms: 30, samples: 12, seed: 5)
        for name in Policies.names {
            let fleet = CloudSimFleet.fleet(hosts: 16, trace: trace)
            let (result, _) = try Simulator(
                fleet: fleet, trace: trace, policy: try Policies.make(name),
                settings: SimulationSettings(duration: 12 * 300, model: .realistic)
            ).run()
            #expect(result.policy == name)
            #expect(result.unplacedVMs == 0, "\(name)")
        }
        // The same names plan a live cluster (cores, not MIPS): h1 is at 95 %.
        let snapshot = RebalanceSnapshot(
            now: 0,
            hosts: [
                RebalanceHost(id: HostID("h1"), name: "h1", cpus: 4, memoryMiB: 8_192),
                RebalanceHost(id: HostID("h2"), name: "h2", cpus: 4, memoryMiB: 8_192),
            ],
            vms: [
                RebalanceVM(
                    id: VMID("a"), name: "a", host: HostID("h1"), cpus: 2, memoryMiB: 1_024, cpuUsageHistory: [1.9, 1.9, 1.9]),
                RebalanceVM(
                    id: VMID("b"), name: "b", host: HostID("h1"), cpus: 2, memoryMiB: 512, cpuUsageHistory: [1.9, 1.9, 1.9]),
                RebalanceVM(
                    id: VMID("c"), name: "c", host: HostID("h2"), cpus: 1, memoryMiB: 512, cpuUsageHistory: [0.2, 0.2, 0.2]),
            ])
        for name in ["thr-mmt-0.8", "threshold"] {
            let plan = try Policies.make(name).plan(snapshot)
            #expect(plan.actions.first?.fromName == "h1", "\(name): \(plan.actions)")
            #expect(plan.actions.first?.toName == "h2", "\(name): \(plan.actions)")
        }
        // MMT takes the VM with the least memory; threshold the busiest (a tie: by name).
        #expect(try Policies.make("thr-mmt-0.8").plan(snapshot).actions.first?.vmName == "b")
        if case .hostOverloaded(let host, let utilisation, _) = try Policies.make("thr-mmt-0.8").plan(snapshot).actions.first?
            .reason
        {
            #expect(host == "h1")
            #expect(abs(utilisation - 0.95) < 1e-9)
        } else {
            Issue.record("thr-mmt-0.8 gave no host-overloaded reason")
        }
    }

    @Test("the feasibility chain reports the first filter a host fails, the same for placement and moves")
    func chainReasons() {
        let hosts = [
            PlacementHost(id: HostID("a"), name: "a", cores: 2, coreCapacity: 1000, memoryMiB: 1_024),
            PlacementHost(id: HostID("b"), name: "b", cores: 2, coreCapacity: 400, memoryMiB: 8_192),
            PlacementHost(id: HostID("c"), name: "c", cores: 1, coreCapacity: 1000, memoryMiB: 8_192),
            PlacementHost(id: HostID("d"), name: "d", cores: 4, coreCapacity: 1000, memoryMiB: 8_192),
        ]
        var cluster = PlacementCluster(settings: .realistic, hosts: hosts)
        let vm = PlacementVM(id: VMID("v"), name: "v", vcpus: 1, vcpuCapacity: 800, memoryMiB: 2_048)
        var other = PlacementVM(id: VMID("w"), name: "w", vcpus: 1, vcpuCapacity: 900, memoryMiB: 512)
        other.antiAffinityGroup = nil
        cluster = PlacementCluster(settings: .realistic, hosts: hosts, vms: [other])
        cluster.start(0, on: 2)
        let loads = HostLoads(cluster)
        let chain = FeasibilityChain(purpose: .start)
        let candidate = Candidate(new: vm)
        func reason(_ host: Int) -> FilterReason? {
            if case .filtered(let reason) = chain.check(candidate, on: host, loads) { return reason }
            return nil
        }
        #expect(reason(0) == .insufficientMemory(requestedMiB: 2_048, freeMiB: 1_024))
        #expect(reason(1) == .coreTooSmall(needed: 800, core: 400))
        #expect(reason(2) == .insufficientCPUCapacity(requested: 800, free: 100))
        #expect(reason(3) == nil)
        // Live clusters count vCPUs instead of demand.
        var live = cluster
        live.settings = .live
        live.settings.cpuOvercommit = 1
        let liveLoads = HostLoads(live)
        if case .filtered(let reason) = chain.check(Candidate(new: vm), on: 2, liveLoads) {
            #expect(reason == .insufficientCPU(requested: 1, free: 0))
        } else {
            Issue.record("host c has no vCPU left")
        }
    }
}

@Suite("Mixed hypervisors")
struct MixedHypervisorTests {
    @Test("a live move to a host of another hypervisor family is filtered with its reason; one of the same family fits")
    func chainRefusesOtherFamily() {
        let hosts = [
            PlacementHost(id: HostID("q1"), name: "q1", cores: 4, memoryMiB: 8_192, family: "qemu"),
            PlacementHost(id: HostID("l1"), name: "l1", cores: 4, memoryMiB: 8_192, family: "libvirt/QEMU"),
            PlacementHost(id: HostID("q2"), name: "q2", cores: 4, memoryMiB: 8_192, family: "qemu"),
        ]
        var cluster = PlacementCluster(
            settings: .live, hosts: hosts, vms: [PlacementVM(id: VMID("v"), name: "v", vcpus: 1, memoryMiB: 512)])
        cluster.start(0, on: 0)
        let loads = HostLoads(cluster)
        var moving = Candidate(new: cluster.vms[0])
        moving.source = 0
        let chain = FeasibilityChain(purpose: .move)
        #expect(chain.check(moving, on: 1, loads) == .filtered(.otherHypervisor(source: "qemu", destination: "libvirt/QEMU")))
        #expect(chain.passes(moving, on: 2, loads))
        // A new VM may start on any family.
        #expect(FeasibilityChain(purpose: .start).passes(Candidate(new: cluster.vms[0]), on: 1, loads))
        #expect(FilterReason.otherHypervisor(source: "qemu", destination: "libvirt/QEMU").kind == "hypervisor")
    }

    @Test("vireo migrate to a host of another family is refused saying why, and nothing is started")
    func migrateRefused() async throws {
        let cluster = try await LocalCluster.start(hosts: ["h1", "h2"])
        defer { cluster.stop() }
        _ = try await cluster.controller.createVM(VMSpec(name: "a", image: "tiny", cpus: 1, memoryMiB: 128))
        _ = try await cluster.waitFor("a", .running)
        _ = try await cluster.controller.register(
            AgentRegistration(
                name: "lv",
                fingerprint: HostFingerprint(
                    cpus: 4, memoryMiB: 4096, driver: "libvirt", capabilities: [.liveMigration],
                    attributes: [HostFingerprint.migrationFamilyAttribute: "libvirt/QEMU"])))
        let error = await #expect(throws: VireoError.self) { try await cluster.controller.migrateVM("a", to: "lv") }
        #expect(error?.code == .failedPrecondition)
        #expect(error?.message.contains("another hypervisor family (libvirt/QEMU, the VM is on simulated)") == true)
        #expect(try await cluster.controller.listMigrations(vm: nil, limit: 10).items.isEmpty)
        // vm show says so for every other host.
        let moves = try #require(try await cluster.controller.vm("a").liveMoves)
        let other = try #require(moves.first { $0.hostName == "lv" })
        #expect(other.filtered == .otherHypervisor(source: "simulated", destination: "libvirt/QEMU"))
        #expect(moves.first { $0.hostName != "lv" }?.filtered == nil, "the other simulated host can take it")
    }
}

@Suite("Typed plan reasons")
struct TypedPlanReasonTests {
    @Test("a plan stored before reasons were typed still reads, keeping what it recorded")
    func legacyPlanDecodes() throws {
        let legacy = """
            {"id":"p-1","policy":"slo","trigger":"manual","state":"completed","createdAt":"2026-12-01T10:00:00Z",
             "actions":[{"vm":"noisy","vmID":"a1","from":"h1","to":"h2","reason":"objective-pressure",
               "application":"shop","objective":"latency","explanation":"shop/latency is breaching",
               "predicted":{"sourceLoadBefore":0.6,"sourceLoadAfter":0.1,"destinationLoadBefore":0.5,
               "destinationLoadAfter":0.9,"migrationSeconds":1,"downtimeMs":20,"transferredMiB":64},
               "outcome":"completed","downtimeMs":20}],
             "considered":[{"vm":"shop-1","host":"h1","moved":false,"reason":"pinned to h1",
               "destinations":[{"host":"h3","filtered":"host is unreachable"}]}],
             "notes":[]}
            """
        let plan = try decodeJSON(Plan.self, legacy)
        #expect(plan.actions.first?.reason == .recorded(kind: "objective-pressure"))
        #expect(plan.actions.first?.reason.kind == "objective-pressure")
        #expect(plan.actions.first?.outcome == .migration(.completed))
        #expect(plan.considered.first?.reason == .recorded(sentence: "pinned to h1"))
        #expect(plan.considered.first?.destinations.first?.filtered == .recorded(sentence: "host is unreachable"))
        // Written again, it reads back the same (typed from now on).
        #expect(try decodeJSON(Plan.self, String(decoding: try VireoJSON.encoder().encode(plan), as: UTF8.self)) == plan)
    }

    @Test("typed reasons round-trip through JSON")
    func roundTrip() throws {
        let reasons: [MoveReason] = [
            .objectivePressure(
                application: "shop", objective: "latency", state: .breaching, burnRate: 12, lookbackSeconds: 300,
                host: "h1", relief: 0.5),
            .hostOverThreshold(host: "h1", load: 0.9, threshold: 0.8),
            .hostOverloaded(host: "h2", utilisation: 0.97, test: "iqr-mmt-1.5"),
            .consolidation(host: "h3", utilisation: 0.2, limit: 0.5),
        ]
        for reason in reasons {
            let data = try JSONEncoder().encode(reason)
            #expect(try JSONDecoder().decode(MoveReason.self, from: data) == reason)
        }
        let filter = FilterReason.doesNotConverge(.dirtyRateExceedsBandwidth(dirtyMiBPerSecond: 300, bandwidthMiBPerSecond: 100))
        #expect(try JSONDecoder().decode(FilterReason.self, from: JSONEncoder().encode(filter)) == filter)
        let notMoved = NotMovedReason.sourceCannotMigrate(.missingCapability(.liveMigration))
        #expect(try JSONDecoder().decode(NotMovedReason.self, from: JSONEncoder().encode(notMoved)) == notMoved)
    }
}

@Suite("Sim from the cluster's own history")
struct ClusterReplayTests {
    /// Two 4-core hosts over six one-minute steps: web stays on h1; batch moves from h1 to h2 at
    /// step 3; idle starts only at step 2, on h2.
    static func history() -> ClusterHistory {
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        func host(_ name: String) -> ClusterHistory.Host {
            ClusterHistory.Host(
                name: name, id: HostID(name), cpus: 4, memoryMiB: 8_192, driver: "simulated",
                capabilities: [.liveMigration], attributes: [:], cpuLoad: nil)
        }
        let vms = [
            ClusterHistory.VM(
                name: "web", id: VMID("web"), cpus: 2, memoryMiB: 1_024, app: "shop", host: Array(repeating: "h1", count: 6),
                cpuCores: [1, 1, 1.5, 1.5, 1, 1], residentMiB: nil),
            ClusterHistory.VM(
                name: "batch", id: VMID("batch"), cpus: 2, memoryMiB: 2_048, app: nil,
                host: ["h1", "h1", "h1", "h2", "h2", "h2"], cpuCores: [2, 2, 2.5, 2, 2, 2], residentMiB: nil),
            ClusterHistory.VM(
                name: "idle", id: VMID("idle"), cpus: 1, memoryMiB: 512, app: nil, host: [nil, nil, "h2", "h2", "h2", "h2"],
                cpuCores: [nil, nil, 0.1, 0.1, 0.1, 0.1], residentMiB: nil),
        ]
        let move = ClusterHistory.Migration(
            id: MigrationID("m1"), vm: "batch", vmID: VMID("batch"), from: "h1", to: "h2", state: .completed,
            reason: "plan p-1 (threshold): h1 hot", requestedAt: t0.addingTimeInterval(170), startedAt: nil,
            endedAt: t0.addingTimeInterval(175), downtimeMs: 30, plan: "p-1", policy: "threshold")
        return ClusterHistory(
            from: t0, to: t0.addingTimeInterval(360), stepSeconds: 60, hosts: [host("h1"), host("h2")], vms: vms,
            applications: [], migrations: [move])
    }

    @Test("the history becomes a trace in cores, a fleet of the real hosts, and the recorded placement")
    func conversion() throws {
        let replay = try ClusterReplay(Self.history())
        #expect(replay.steps == 6 && replay.stepSeconds == 60)
        #expect(replay.fleet.hosts.map(\.name) == ["h1", "h2"])
        #expect(replay.fleet.hosts.allSatisfy { $0.cores == 4 && $0.coreCapacity == 1 && $0.power != nil })
        #expect(replay.fleet.vms.map(\.vcpus) == [2, 2, 1])
        // batch at 2.5 of its 2 cores is capped at its size; idle asks for nothing before it runs.
        #expect(replay.trace.sample(0, at: 120) == 0.75)
        #expect(replay.trace.sample(1, at: 120) == 1)
        #expect(replay.trace.sample(2, at: 0) == 0)
        #expect(replay.recorded[1] == [0, 0, 0, 1, 1, 1])
        #expect(replay.start == [0, 0, 1])
        #expect(replay.migrations.map(\.policy) == ["threshold"])
    }

    @Test("what the cluster did replays as a policy, and any policy replays from the same start")
    func replay() throws {
        let replay = try ClusterReplay(Self.history())
        var moves: [[Int]] = []
        let (recorded, _) = try Simulator(
            fleet: replay.fleet, trace: replay.trace, policy: replay.policy, settings: replay.settings, start: replay.start
        ).run(decided: { step, _, plan in moves += plan.actions.map { [step, $0.vmIndex, $0.toIndex] } })
        #expect(moves == [[3, 1, 1]], "batch goes to h2 at step 3, as it did")
        #expect(recorded.migrations == 1)
        #expect(recorded.model == .realistic)
        for name in ["threshold", "iqr-mmt-1.5", "slo"] {
            let (result, _) = try Simulator(
                fleet: replay.fleet, trace: replay.trace, policy: try Policies.make(name), settings: replay.settings,
                start: replay.start
            ).run()
            #expect(result.vms == 3 && result.unplacedVMs == 0, "\(name)")
            #expect(result.energyKWh > 0, "\(name)")
        }
    }

    @Test("a window without a complete step, or where nothing ran, is refused saying so")
    func emptyHistory() {
        var empty = Self.history()
        empty.to = empty.from
        #expect(throws: VireoError.self) { try ClusterReplay(empty) }
        var nothing = Self.history()
        nothing.vms = nothing.vms.map { vm in
            var vm = vm
            vm.host = vm.host.map { _ in nil }
            return vm
        }
        #expect(throws: VireoError.self) { try ClusterReplay(nothing) }
    }
}
