import Foundation
import Testing
import VireoModel

@testable import VireoPlacement

@Suite("Initial placement")
struct PlacementTests {
    func host(
        _ name: String, cpus: Int = 8, memoryMiB: Int = 8192, state: HostState = .ready, usedCPUs: Int = 0,
        usedMiB: Int = 0, capabilities: Set<Capability> = []
    ) -> PlacementHost {
        PlacementHost(
            id: HostID(name + "-id"), name: name, state: state, cores: cpus, memoryMiB: Double(memoryMiB),
            capabilities: CapabilitySet(capabilities), reservedVCPUs: usedCPUs, reservedMemoryMiB: Double(usedMiB))
    }

    func request(
        cpus: Int, memoryMiB: Int, pinnedHost: String? = nil, requiredCapabilities: Set<Capability> = []
    ) -> PlacementVM {
        PlacementVM(
            id: VMID("new"), name: "new", vcpus: cpus, memoryMiB: Double(memoryMiB), pinnedHost: pinnedHost,
            requiredCapabilities: CapabilitySet(requiredCapabilities))
    }

    @Test("every host gets a verdict: why it was filtered or how it scored")
    func reasonsForEveryHost() throws {
        let snapshot = PlacementCluster(hosts: [
            host("a", usedMiB: 8000),
            host("b", state: .unreachable),
            host("c", cpus: 1, usedCPUs: 4),
            host("d", usedMiB: 4096),
            host("e"),
        ])
        let decision = InitialPlacement.place(request(cpus: 1, memoryMiB: 512), in: snapshot)
        #expect(decision.verdicts.count == 5)
        #expect(decision.verdicts[0].filtered == .insufficientMemory(requestedMiB: 512, freeMiB: 192))
        #expect(decision.verdicts[1].filtered == .hostNotReady(state: .unreachable))
        #expect(decision.verdicts[2].filtered == .insufficientCPU(requested: 1, free: 0))
        #expect(decision.verdicts[3].score != nil)
        #expect(decision.chosen == HostID("e-id"), "the emptiest host wins")
        let d = try #require(decision.verdicts[3].score)
        let e = try #require(decision.verdicts[4].score)
        #expect(e.total > d.total)
    }

    @Test("a pinned VM only goes to its host")
    func pinned() {
        let snapshot = PlacementCluster(hosts: [host("a"), host("b", usedMiB: 4096)])
        let decision = InitialPlacement.place(request(cpus: 1, memoryMiB: 256, pinnedHost: "b"), in: snapshot)
        #expect(decision.chosen == HostID("b-id"))
        #expect(decision.verdicts[0].filtered == .notPinnedHost(pinned: "b"))
    }

    @Test("hosts whose driver lacks a required capability are filtered")
    func capabilities() {
        let snapshot = PlacementCluster(hosts: [host("a"), host("b", capabilities: [.liveMigration])])
        let vm = request(cpus: 1, memoryMiB: 256, requiredCapabilities: [.liveMigration])
        let decision = InitialPlacement.place(vm, in: snapshot)
        #expect(decision.chosen == HostID("b-id"))
        #expect(decision.verdicts[0].filtered == .missingCapability(.liveMigration))
    }

    @Test("no host fits: nothing chosen, every reason kept")
    func nothingFits() {
        let snapshot = PlacementCluster(hosts: [host("a", memoryMiB: 256), host("b", state: .unreachable)])
        let decision = InitialPlacement.place(request(cpus: 1, memoryMiB: 512), in: snapshot)
        #expect(decision.chosen == nil)
        #expect(decision.verdicts.allSatisfy { $0.filtered != nil })
    }

    @Test("CPU overcommit is a setting")
    func overcommit() {
        let snapshot = PlacementCluster(hosts: [host("a", cpus: 2, usedCPUs: 2)])
        let vm = request(cpus: 1, memoryMiB: 128)
        var cluster = snapshot
        cluster.settings.cpuOvercommit = 1
        #expect(InitialPlacement.place(vm, in: cluster).chosen == nil)
        cluster.settings.cpuOvercommit = 2
        #expect(InitialPlacement.place(vm, in: cluster).chosen != nil)
    }

    @Test("the same snapshot always gives the same decision; ties go to the first host")
    func deterministic() {
        let snapshot = PlacementCluster(hosts: (0..<50).map { host("h\($0)") })
        let vm = request(cpus: 1, memoryMiB: 128)
        let first = InitialPlacement.place(vm, in: snapshot)
        #expect(first.chosen == HostID("h0-id"))
        for _ in 0..<5 { #expect(InitialPlacement.place(vm, in: snapshot) == first) }
    }

    @Test("the kept verdicts are the first of a full sort (chosen, then by score, filtered last, ties by name)")
    func keptVerdictsMatchASort() {
        var random = SystemRandomNumberGenerator()
        for round in 0..<50 {
            // Few distinct scores, so ties (broken by name) are common.
            let verdicts = (0..<(20 + round * 7)).map { i -> HostVerdict in
                let id = HostID("h\(i)")
                if Int.random(in: 0..<4, using: &random) == 0 {
                    return HostVerdict(hostID: id, hostName: "h\(i)", filtered: .hostNotReady(state: .unreachable))
                }
                let total = Double(Int.random(in: 0..<5, using: &random)) / 4
                return HostVerdict(
                    hostID: id, hostName: "h\(i)", score: HostScore(cpuFreeAfter: total, memoryFreeAfter: total, total: total))
            }
            let chosen = verdicts.filter { $0.score != nil }.randomElement(using: &random)?.hostID
            let decision = PlacementDecision(chosen: chosen, verdicts: verdicts.shuffled(using: &random))
            let sorted = verdicts.sorted { a, b in
                if a.hostID == chosen { return b.hostID != chosen }
                if b.hostID == chosen { return false }
                switch (a.score, b.score) {
                case (let x?, let y?): return x.total != y.total ? x.total > y.total : a.hostName < b.hostName
                case (.some, nil): return true
                case (nil, .some): return false
                case (nil, nil): return a.hostName < b.hostName
                }
            }
            let explanation = decision.explanation(decidedAt: Date(timeIntervalSince1970: 0), keep: 16)
            #expect(explanation.verdicts == Array(sorted.prefix(16)), "round \(round)")
            var omitted: [String: Int] = [:]
            for verdict in sorted.dropFirst(16) { omitted[verdict.filtered?.kind ?? "scored", default: 0] += 1 }
            #expect(explanation.omitted == omitted, "round \(round)")
        }
    }

    @Test("placing with its explanation at once decides and explains exactly as placing, then explaining")
    func placeExplainedMatches() {
        var random = SystemRandomNumberGenerator()
        for round in 0..<40 {
            // Equal loads make ties; some hosts full, unreachable, or lacking a capability.
            let hosts = (0..<(5 + round * 5)).map { i in
                host(
                    "h\(String(format: "%03d", (i * 37) % 1000))", cpus: 8, memoryMiB: 8192,
                    state: Int.random(in: 0..<6, using: &random) == 0 ? .unreachable : .ready,
                    usedCPUs: 4 * Int.random(in: 0..<3, using: &random), usedMiB: 2048 * Int.random(in: 0..<5, using: &random),
                    capabilities: Bool.random(using: &random) ? [.liveMigration] : [])
            }
            let cluster = PlacementCluster(hosts: hosts)
            let vm = request(
                cpus: Int.random(in: 1...8, using: &random), memoryMiB: 1024 * Int.random(in: 1...8, using: &random),
                pinnedHost: round % 10 == 9 ? hosts.randomElement(using: &random)?.name : nil,
                requiredCapabilities: round % 4 == 3 ? [.liveMigration] : [])
            let time = Date(timeIntervalSince1970: 1_800_000_000)
            let decision = InitialPlacement.place(vm, in: cluster)
            let (chosen, explanation) = InitialPlacement.placeExplained(vm, in: cluster, decidedAt: time, keep: 16)
            #expect(chosen == decision.chosen, "round \(round)")
            #expect(explanation == decision.explanation(decidedAt: time, keep: 16), "round \(round)")
        }
    }

    @Test("explanations of large clusters keep the chosen host, the best alternatives and counts")
    func condensedExplanation() {
        var hosts = (0..<100).map { host("h\($0)", usedMiB: $0 * 10) }
        hosts += (0..<30).map { host("full\($0)", usedMiB: 8192) }
        let decision = InitialPlacement.place(request(cpus: 1, memoryMiB: 128), in: PlacementCluster(hosts: hosts))
        let explanation = decision.explanation(decidedAt: Date(timeIntervalSince1970: 0), keep: 10)
        #expect(explanation.chosenHost == "h0")
        #expect(explanation.verdicts.count == 10)
        #expect(explanation.verdicts.first?.hostName == "h0")
        #expect(explanation.omitted == ["scored": 90, "capacity": 30])
    }
}
