import Foundation
import VireoModel

/// The result of placing one VM: the chosen host (if any) and a verdict for every host.
public struct PlacementDecision: Sendable, Equatable {
    public var chosen: HostID?
    /// One verdict per host of the cluster, in cluster order.
    public var verdicts: [HostVerdict]
    /// Where the chosen host's verdict is in `verdicts`, when the placement that made it knows.
    var chosenIndex: Int?

    init(chosen: HostID?, verdicts: [HostVerdict], chosenIndex: Int? = nil) {
        self.chosen = chosen
        self.verdicts = verdicts
        self.chosenIndex = chosenIndex
    }

    /// The index of the chosen host's verdict, nil if none was chosen.
    var chosenVerdictIndex: Int? {
        guard let chosen else { return nil }
        if let chosenIndex, verdicts.indices.contains(chosenIndex), verdicts[chosenIndex].hostID == chosen {
            return chosenIndex
        }
        return verdicts.firstIndex { $0.hostID == chosen }
    }

    public var chosenVerdict: HostVerdict? { chosenVerdictIndex.map { verdicts[$0] } }
}

/// Initial placement of a live cluster's new VM: the feasibility chain, then the spread scorer.
///
/// Pure and synchronous: the same cluster and request always give the same decision, so a plan
/// can be computed, shown (`--explain`) and checked before anything is changed.
public enum InitialPlacement {
    public static func place(_ vm: PlacementVM, in cluster: PlacementCluster) -> PlacementDecision {
        let (findings, best) = scan(vm, in: cluster)
        let table = cluster.table
        let verdicts = findings.indices.map { findings[$0].verdict(table.ids[$0], table.names[$0]) }
        return PlacementDecision(chosen: best.map { table.ids[$0] }, verdicts: verdicts, chosenIndex: best)
    }

    /// `place(_:in:)` and its `explanation(decidedAt:keep:)` at once, making verdicts only for the
    /// hosts the explanation keeps: the controller places each new VM this way, so that a cluster
    /// of 10,000 hosts costs one pass of arithmetic per VM, not 10,000 verdicts.
    public static func placeExplained(
        _ vm: PlacementVM, in cluster: PlacementCluster, decidedAt: Date, keep: Int = 16
    ) -> (chosen: HostID?, explanation: PlacementExplanation) {
        let (findings, best) = scan(vm, in: cluster)
        let table = cluster.table
        let (kept, omitted) = PlacementDecision.first(
            keep, of: findings.count, chosen: best,
            precedes: {
                table.sortedByName
                    ? findings[$0].precedes(findings[$1], $0, $1)
                    : findings[$0].precedes(findings[$1], table.names[$0], table.names[$1])
            },
            kind: { findings[$0].filtered?.kind ?? "scored" })
        let explanation = PlacementExplanation(
            chosenHost: best.map { table.names[$0] }, decidedAt: decidedAt,
            verdicts: kept.map { findings[$0].verdict(table.ids[$0], table.names[$0]) }, omitted: omitted)
        return (best.map { table.ids[$0] }, explanation)
    }

    /// What each host makes of the VM, in cluster order, and the best host: the highest score,
    /// ties to the earlier host (callers sort by name), so the decision is deterministic.
    static func scan(_ vm: PlacementVM, in cluster: PlacementCluster) -> (findings: [HostFinding], best: Int?) {
        let loads = HostLoads(cluster)
        let candidate = Candidate(new: vm)
        let chain = FeasibilityChain(purpose: .start)
        var findings: [HostFinding] = []
        findings.reserveCapacity(cluster.hostCount)
        var best: (index: Int, score: Double)?
        for host in 0..<cluster.hostCount {
            switch chain.check(candidate, on: host, loads) {
            case .filtered(let reason): findings.append(HostFinding(filtered: reason))
            case .fits:
                let score = Scorers.spread(candidate, on: host, loads)
                if best.map({ score.total > $0.score }) ?? true { best = (host, score.total) }
                findings.append(HostFinding(score: score))
            }
        }
        return (findings, best?.index)
    }

    /// The verdict for one host: the first filter it fails, or its score.
    public static func evaluate(_ vm: PlacementVM, on host: Int, in cluster: PlacementCluster) -> HostVerdict {
        evaluate(Candidate(new: vm), on: host, HostLoads(cluster), FeasibilityChain(purpose: .start))
    }

    static func evaluate(_ vm: Candidate, on host: Int, _ loads: HostLoads, _ chain: FeasibilityChain) -> HostVerdict {
        let table = loads.cluster.table
        let finding: HostFinding
        switch chain.check(vm, on: host, loads) {
        case .filtered(let reason): finding = HostFinding(filtered: reason)
        case .fits: finding = HostFinding(score: Scorers.spread(vm, on: host, loads))
        }
        return finding.verdict(table.ids[host], table.names[host])
    }
}

/// A host's verdict without its name and ID: the first filter it fails, or its score.
struct HostFinding {
    var filtered: FilterReason?
    var score: HostScore?

    func verdict(_ id: HostID, _ name: String) -> HostVerdict {
        HostVerdict(hostID: id, hostName: name, filtered: filtered, score: score)
    }

    /// The explanation's order: by score (best first), then the filtered; ties by name (or by
    /// anything in the order of names).
    func precedes<Name: Comparable>(_ other: HostFinding, _ name: Name, _ otherName: Name) -> Bool {
        switch (score, other.score) {
        case (let x?, let y?): return x.total != y.total ? x.total > y.total : name < otherName
        case (.some, nil): return true
        case (nil, .some): return false
        case (nil, nil): return name < otherName
        }
    }
}

/// How hosts that pass the filters are ranked — one set for every policy, each ranking with the
/// one its strategy needs: spread (the controller's new VMs), least load after the move (`slo`'s
/// relief, `threshold`: the chain's `Fit.loadAfter`), least power rise (CloudSim's PABFD), least
/// room left (`slo`'s packing).
public enum Scorers {
    /// Watts `host` would add by taking `demand` more CPU, from its utilisation as last measured
    /// (an idle host's rise counts from its idle power, as CloudSim does). Lower is better. The
    /// loads must have been made `withPower`.
    @inline(__always)
    public static func powerRise(_ demand: Double, on host: Int, _ loads: HostLoads) -> Double {
        let total = loads.capacity[host]
        return loads.power(host, at: (loads.usedCPU(host) + demand) / total)
            - loads.power(host, at: loads.cluster.hostUtilisation[host])
    }

    /// The fraction of the host's scarcer resource — CPU, or memory where the cluster counts it —
    /// left after taking `vm`. Lower is a tighter (better) fit.
    @inline(__always)
    public static func roomLeft(_ vm: Candidate, on host: Int, _ loads: HostLoads) -> Double {
        var room = (loads.capacity[host] - loads.usedCPU(host) - vm.demand) / loads.capacity[host]
        if loads.cluster.settings.memoryAlwaysCounts {
            room = min(room, (loads.memoryLimit[host] - loads.memoryMiB[host] - vm.memoryMiB) / loads.memoryLimit[host])
        }
        return room
    }

    /// Spread: prefer the host that keeps the most headroom on its scarcer resource (vCPUs or
    /// memory), with the average as a tie-breaker. Spreading leaves room for VMs to grow and for
    /// migrations. Where vCPUs are not counted, CPU headroom is free CPU after the VM's demand.
    public static func spread(_ vm: Candidate, on host: Int, _ loads: HostLoads) -> HostScore {
        let cpuFreeAfter: Double
        if loads.vcpuLimit[host] != .max {
            let limit = loads.vcpuLimit[host]
            cpuFreeAfter = limit > 0 ? Double(max(0, limit - loads.vcpus[host]) - vm.vcpus) / Double(limit) : 0
        } else {
            let capacity = loads.capacity[host]
            cpuFreeAfter = capacity > 0 ? (capacity - loads.usedCPU(host) - vm.demand) / capacity : 0
        }
        let memoryLimit = loads.memoryLimit[host]
        let memoryFreeAfter = memoryLimit > 0 ? (max(0, memoryLimit - loads.memoryMiB[host]) - vm.memoryMiB) / memoryLimit : 0
        let total = 0.75 * min(cpuFreeAfter, memoryFreeAfter) + 0.25 * (cpuFreeAfter + memoryFreeAfter) / 2
        return HostScore(cpuFreeAfter: cpuFreeAfter, memoryFreeAfter: memoryFreeAfter, total: total)
    }
}
