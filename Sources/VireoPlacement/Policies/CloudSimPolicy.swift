import VireoModel

/// CloudSim's dynamic consolidation (Beloglazov & Buyya 2012): an overload detector (THR, IQR,
/// MAD, LR, LRR), minimum-migration-time VM selection (MMT) and power-aware best-fit-decreasing
/// placement (PABFD), plus evacuation of the least-utilised hosts.
///
/// Destinations go through the shared feasibility chain (with no migration budget: CloudSim has
/// none), then through the detector: a busy host that would be overloaded with the VM is refused.
public struct CloudSimPolicy: PlacementPolicy {
    public let name: String
    public let detector: OverloadDetector

    public init(name: String, detector: OverloadDetector) {
        self.name = name
        self.detector = detector
    }

    private var historyDepth: Int { detector.needsHistory ? PlacementCluster.historyCapacity : 0 }

    /// PABFD in VM order (every VM asking for its whole size under CloudSim's start rule), memory checked. As in CloudSim, the
    /// overload test sees only the VM being placed (the others' tasks have not started yet).
    public func initialPlacement(_ cluster: PlacementCluster) -> [Int?] {
        var loads = HostLoads(cluster, historyDepth: historyDepth, withPower: true)
        var candidates = CandidateHosts(cluster, loads)
        let excluded = [Bool](repeating: false, count: cluster.hostCount)
        let chain = FeasibilityChain(purpose: .start)
        var placement = [Int?](repeating: nil, count: cluster.vmCount)
        for vm in 0..<cluster.vmCount {
            if cluster.vmHost[vm] >= 0 {
                placement[vm] = cluster.vmHost[vm]
                continue
            }
            let host = bestHost(
                for: vm, excluded: excluded, loads: loads, candidates, chain: chain, migrationIntervals: 1, atStart: true)
            if let host {
                loads.add(vm, to: host)
                candidates.markBusy(host)
                placement[vm] = host
            }
        }
        return placement
    }

    public func plan(_ cluster: PlacementCluster) -> RebalancePlan {
        var loads = HostLoads(cluster, historyDepth: historyDepth, withPower: true)
        let hostCount = cluster.hostCount
        let intervals = longestMigrationIntervals(cluster)
        let chain = FeasibilityChain(purpose: .move)
        var plan = RebalancePlan(policy: name)
        var before = (0..<hostCount).map { loads.load($0) }
        func record(_ vm: Int, from source: Int, to target: Int, _ reason: MoveReason) {
            let memory = cluster.vms[vm].memoryMiB
            let link = cluster.hosts[target].linkMiBPerSecond
            let seconds = link > 0 ? memory / link : .infinity
            plan.actions.append(
                PlannedMove(
                    vm: vm, from: source, to: target, in: cluster, reason: reason,
                    sourceLoad: HostLoadChange(
                        host: cluster.hosts[source].name, before: before[source], after: loads.load(source)),
                    destinationLoad: HostLoadChange(
                        host: cluster.hosts[target].name, before: before[target], after: loads.load(target)),
                    cost: MigrationCost(totalSeconds: seconds, downtimeSeconds: 0, transferredMiB: memory, iterations: 1)))
        }

        // 1. Overloaded hosts.
        var overloaded: [(host: Int, utilisation: Double)] = []
        for host in 0..<hostCount where isOverloaded(host, loads, intervals) {
            overloaded.append((host, loads.load(host)))
        }
        var excluded = [Bool](repeating: false, count: hostCount)
        for (host, _) in overloaded { excluded[host] = true }

        // 2. MMT: take the smallest-memory VMs off each overloaded host until it is not.
        var selected: [(vm: Int, source: Int, utilisation: Double)] = []
        for (host, utilisation) in overloaded {
            var remaining = loads.residents[host].filter { !cluster.isMigrating($0) }
            while !remaining.isEmpty {
                var pick = 0
                for i in 1..<remaining.count
                where cluster.vms[remaining[i]].memoryMiB < cluster.vms[remaining[pick]].memoryMiB {
                    pick = i
                }
                let vm = remaining.remove(at: pick)
                selected.append((vm, host, utilisation))
                loads.remove(vm, from: host)
                if !isOverloaded(host, loads, intervals) { break }
            }
        }

        // 3. PABFD for the selected VMs.
        var candidates = CandidateHosts(cluster, loads)
        var plannedIn: [Int: [Int]] = [:]
        var origin: [Int: Int] = [:]
        for (vm, source, utilisation) in sortedByRequest(selected, cluster) {
            let target = bestHost(
                for: vm, excluded: excluded, loads: loads, candidates, chain: chain, migrationIntervals: intervals,
                atStart: false)
            guard let target else { continue }
            loads.add(vm, to: target)
            candidates.markBusy(target)
            record(
                vm, from: source, to: target,
                .hostOverloaded(host: cluster.hosts[source].name, utilisation: utilisation, test: name))
            plannedIn[target, default: []].append(vm)
            origin[vm] = source
        }

        // 4. Evacuate under-utilised hosts, least utilised first, never onto switched-off hosts.
        var candidateExcluded = excluded
        for host in 0..<hostCount where cluster.hostUtilisation[host] == 0 {
            candidateExcluded[host] = true
            excluded[host] = true
        }
        let order = (0..<hostCount).filter { cluster.hostUtilisation[$0] > 0 && cluster.hostUtilisation[$0] < 1 }
            .sorted { (cluster.hostUtilisation[$0], $0) < (cluster.hostUtilisation[$1], $1) }
        before = (0..<hostCount).map { loads.load($0) }
        // Where memory counts, free memory only shrinks while hosts are emptied (the emptied host
        // is excluded as a destination): a VM with more memory than any host had free fails, and
        // so does the evacuation of its host — known without scanning every host for it.
        var mostFreeMemory = Double.infinity
        if cluster.settings.memoryAlwaysCounts {
            mostFreeMemory = (0..<hostCount).map { loads.memoryLimit[$0] - loads.memoryMiB[$0] }.max() ?? 0
        }
        for host in order where !candidateExcluded[host] {
            let resident = cluster.hostVMs[host]
            if !resident.isEmpty && resident.allSatisfy({ cluster.isMigrating($0) }) { continue }
            candidateExcluded[host] = true
            excluded[host] = true
            let vms = (resident + (plannedIn[host] ?? [])).filter { !cluster.isMigrating($0) }
            if vms.isEmpty || vms.contains(where: { cluster.vms[$0].memoryMiB > mostFreeMemory }) { continue }
            var moves: [(vm: Int, target: Int)] = []
            for (vm, _, _) in sortedByRequest(vms.map { ($0, host, 0) }, cluster) {
                let target = bestHost(
                    for: vm, excluded: excluded, loads: loads, candidates, chain: chain, migrationIntervals: intervals,
                    atStart: false)
                guard let target else {
                    for move in moves { loads.remove(move.vm, from: move.target) }
                    moves.removeAll()
                    break
                }
                loads.add(vm, to: target)
                moves.append((vm, target))
            }
            for move in moves {
                candidateExcluded[move.target] = true
                // A VM planned onto this host in step 3 is planned again: CloudSim counts both.
                let source = cluster.vmHost[move.vm] == host ? host : (origin[move.vm] ?? host)
                record(
                    move.vm, from: source, to: move.target,
                    .consolidation(host: cluster.hosts[host].name, utilisation: cluster.hostUtilisation[host], limit: 1))
            }
        }
        return plan
    }

    // MARK: - Parts

    private func isOverloaded(_ host: Int, _ loads: HostLoads, _ intervals: Double) -> Bool {
        var scratch = [Double](repeating: 0, count: PlacementCluster.historyCapacity)
        let count = detector.needsHistory ? loads.copyHistory(host, into: &scratch) : 0
        return detector.isOverloaded(
            utilisation: loads.load(host), scratch: &scratch, count: count, migrationIntervals: intervals)
    }

    /// Decision intervals the longest migration takes (1 for CloudSim's VMs and links).
    private func longestMigrationIntervals(_ cluster: PlacementCluster) -> Double {
        guard let memory = cluster.vms.map(\.memoryMiB).max(), let host = cluster.hosts.first,
            host.linkMiBPerSecond > 0, cluster.interval > 0
        else { return 1 }
        return (memory / host.linkMiBPerSecond / cluster.interval).rounded(.up)
    }

    /// Largest request first; equal requests keep their order.
    private func sortedByRequest(_ vms: [(vm: Int, source: Int, utilisation: Double)], _ cluster: PlacementCluster) -> [(
        vm: Int, source: Int, utilisation: Double
    )] {
        vms.enumerated().sorted { a, b in
            let ra = cluster.vmDemand[a.element.vm], rb = cluster.vmDemand[b.element.vm]
            return ra != rb ? ra > rb : a.offset < b.offset
        }.map(\.element)
    }

    /// PABFD: among hosts not excluded that pass the feasibility chain and (if busy) would not
    /// become overloaded, the one whose power rises least. An idle host's rise is counted from
    /// its idle power, as CloudSim does; the first host wins ties.
    func bestHost(
        for vm: Int, excluded: [Bool], loads: HostLoads, _ candidates: CandidateHosts, chain: FeasibilityChain,
        migrationIntervals: Double, atStart: Bool
    ) -> Int? {
        let candidate = loads.candidate(vm)
        let request = candidate.demand
        var best: Int?
        var smallestIncrease = Double.infinity
        var scratch = [Double](repeating: 0, count: PlacementCluster.historyCapacity)
        candidates.forEach(excluding: excluded) { host in
            guard chain.passes(candidate, on: host, loads) else { return }
            let used = loads.usedCPU(host)
            let total = loads.capacity[host]
            let increase = Scorers.powerRise(request, on: host, loads)
            guard increase < smallestIncrease else { return }
            if used > 1e-9 {
                // Would the host be overloaded with the VM? (Judged without changing the loads.)
                // When VMs are created their tasks have not started, so in CloudSim the VMs already
                // on a host ask for nothing and only the new VM counts, with no history yet.
                let count =
                    detector.needsHistory && !atStart ? loads.copyHistory(host, adding: vm, into: &scratch) : 0
                let utilisation = atStart ? request / total : (loads.demand[host] + request) / total
                if detector.isOverloaded(
                    utilisation: utilisation, scratch: &scratch, count: count, migrationIntervals: migrationIntervals)
                {
                    return
                }
            }
            smallestIncrease = increase
            best = host
        }
        return best
    }
}
