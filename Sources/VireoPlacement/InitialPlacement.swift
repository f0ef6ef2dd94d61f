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
        let loads = HostLoads(cluster)
        let candidate = Candidate(new: vm)
        let chain = FeasibilityChain(purpose: .start)
        var verdicts: [HostVerdict] = []
        verdicts.reserveCapacity(cluster.hostCount)
        var best: (index: Int, score: Double)?
        for host in 0..<cluster.hostCount {
            let verdict = evaluate(candidate, on: host, loads, chain)
            if let score = verdict.score {
                // Ties go to the earlier host in cluster order (callers sort by name), so the
                // decision is deterministic.
                if best.map({ score.total > $0.score }) ?? true { best = (verdicts.count, score.total) }
            }
            verdicts.append(verdict)
        }
        return PlacementDecision(
            chosen: best.map { verdicts[$0.index].hostID }, verdicts: verdicts, chosenIndex: best?.index)
    }

    /// The verdict for one host: the first filter it fails, or its score.
    public static func evaluate(_ vm: PlacementVM, on host: Int, in cluster: PlacementCluster) -> HostVerdict {
        evaluate(Candidate(new: vm), on: host, HostLoads(cluster), FeasibilityChain(purpose: .start))
    }

    static func evaluate(_ vm: Candidate, on host: Int, _ loads: HostLoads, _ chain: FeasibilityChain) -> HostVerdict {
        let table = loads.cluster.table
        switch chain.check(vm, on: host, loads) {
        case .filtered(let reason): return HostVerdict(hostID: table.ids[host], hostName: table.names[host], filtered: reason)
        case .fits:
            return HostVerdict(
                hostID: table.ids[host], hostName: table.names[host], score: Scorers.spread(vm, on: host, loads))
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
