/// CloudSim's dynamic consolidation (Beloglazov & Buyya 2012): an overload detector (THR, IQR,
/// MAD, LR, LRR), minimum-migration-time VM selection (MMT) and power-aware best-fit-decreasing
/// placement (PABFD), plus evacuation of the least-utilised hosts.
public final class CloudSimConsolidation: ConsolidationPolicy {
    public let name: String
    public let detector: OverloadDetector
    public var powerAccounting: PowerAccounting { .followsUtilisation }

    public init(name: String, detector: OverloadDetector) {
        self.name = name
        self.detector = detector
    }

    /// PABFD in VM order, every VM asking for its full MIPS, memory checked. As in CloudSim, the
    /// overload test sees only the VM being placed (the others' tasks have not started yet).
    public func initialPlacement(_ cluster: ConsolidationCluster) -> [Int?] {
        var load = HostLoadTable(cluster, withHistory: detector.needsHistory)
        var candidates = CandidateHosts(cluster, load)
        let excluded = [Bool](repeating: false, count: cluster.hostCount)
        var placement = [Int?](repeating: nil, count: cluster.vmCount)
        for vm in 0..<cluster.vmCount {
            if let host = bestHost(for: vm, excluded: excluded, load: load, candidates, cluster, checkMemory: true) {
                load.add(vm, to: host, cluster)
                candidates.markBusy(host)
                placement[vm] = host
            }
        }
        return placement
    }

    /// Decision intervals the longest migration takes, for LR's look-ahead (set per plan).
    private var migrationIntervals = 1.0

    public func plan(_ cluster: ConsolidationCluster) -> [PlannedMigration] {
        var load = HostLoadTable(cluster, withHistory: detector.needsHistory)
        let hostCount = cluster.hostCount
        migrationIntervals = longestMigrationIntervals(cluster)

        // 1. Overloaded hosts.
        var overloaded: [Int] = []
        for host in 0..<hostCount where isOverloaded(host, load, cluster, migrationIntervals) {
            overloaded.append(host)
        }
        var excluded = [Bool](repeating: false, count: hostCount)
        for host in overloaded { excluded[host] = true }

        // 2. MMT: take the smallest-memory VMs off each overloaded host until it is not.
        var selected: [Int] = []
        for host in overloaded {
            var remaining = cluster.hostVMs[host].filter { !cluster.vmMigrating[$0] }
            while !remaining.isEmpty {
                var pick = 0
                for i in 1..<remaining.count where cluster.vmMemoryMB[remaining[i]] < cluster.vmMemoryMB[remaining[pick]] {
                    pick = i
                }
                let vm = remaining.remove(at: pick)
                selected.append(vm)
                load.remove(vm, from: host, cluster)
                if !isOverloaded(host, load, cluster, migrationIntervals) { break }
            }
        }

        // 3. PABFD for the selected VMs.
        var candidates = CandidateHosts(cluster, load)
        var plan: [PlannedMigration] = []
        var plannedIn: [Int: [Int]] = [:]
        for vm in sortedByRequest(selected, cluster) {
            if let target = bestHost(for: vm, excluded: excluded, load: load, candidates, cluster, checkMemory: false) {
                load.add(vm, to: target, cluster)
                candidates.markBusy(target)
                plan.append(PlannedMigration(vm: vm, target: target))
                plannedIn[target, default: []].append(vm)
            }
        }

        // 4. Evacuate under-utilised hosts, least utilised first, never onto switched-off hosts.
        var candidateExcluded = excluded
        for host in 0..<hostCount where cluster.hostUtilisation[host] == 0 {
            candidateExcluded[host] = true
            excluded[host] = true
        }
        let order = (0..<hostCount).filter { cluster.hostUtilisation[$0] > 0 && cluster.hostUtilisation[$0] < 1 }
            .sorted { (cluster.hostUtilisation[$0], $0) < (cluster.hostUtilisation[$1], $1) }
        for host in order where !candidateExcluded[host] {
            let resident = cluster.hostVMs[host]
            if !resident.isEmpty && resident.allSatisfy({ cluster.vmMigrating[$0] }) { continue }
            candidateExcluded[host] = true
            excluded[host] = true
            let vms = (resident + (plannedIn[host] ?? [])).filter { !cluster.vmMigrating[$0] }
            if vms.isEmpty { continue }
            var moves: [PlannedMigration] = []
            for vm in sortedByRequest(vms, cluster) {
                guard
                    let target = bestHost(
                        for: vm, excluded: excluded, load: load, candidates, cluster, checkMemory: false)
                else {
                    for move in moves { load.remove(move.vm, from: move.target, cluster) }
                    moves.removeAll()
                    break
                }
                load.add(vm, to: target, cluster)
                moves.append(PlannedMigration(vm: vm, target: target))
            }
            for move in moves { candidateExcluded[move.target] = true }
            plan += moves
        }
        return plan
    }

    // MARK: - Parts

    private func isOverloaded(_ host: Int, _ load: HostLoadTable, _ cluster: ConsolidationCluster, _ intervals: Double) -> Bool {
        var scratch = [Double](repeating: 0, count: ConsolidationCluster.historyCapacity)
        let count = detector.needsHistory ? load.copyHistory(host, into: &scratch) : 0
        return detector.isOverloaded(
            utilisation: load.utilisation(host, cluster), scratch: &scratch, count: count, migrationIntervals: intervals)
    }

    /// Decision intervals the longest migration takes (1 for CloudSim's VMs and links).
    private func longestMigrationIntervals(_ cluster: ConsolidationCluster) -> Double {
        guard let memory = cluster.vmMemoryMB.max(), let host = cluster.hosts.first else { return 1 }
        return (host.migrationSeconds(memoryMB: memory) / cluster.interval).rounded(.up)
    }

    /// Largest request first; equal requests keep their order.
    private func sortedByRequest(_ vms: [Int], _ cluster: ConsolidationCluster) -> [Int] {
        vms.enumerated().sorted { a, b in
            let ra = cluster.vmRequestedMIPS[a.element], rb = cluster.vmRequestedMIPS[b.element]
            return ra != rb ? ra > rb : a.offset < b.offset
        }.map(\.element)
    }

    /// PABFD: among hosts not excluded that fit the VM and (if busy) would not become
    /// overloaded, the one whose power rises least. An idle host's rise is counted from its
    /// idle power, as CloudSim does; the first host wins ties.
    func bestHost(
        for vm: Int, excluded: [Bool], load: HostLoadTable, _ candidates: CandidateHosts,
        _ cluster: ConsolidationCluster, checkMemory: Bool
    ) -> Int? {
        let request = cluster.vmRequestedMIPS[vm]
        var best: Int?
        var smallestIncrease = Double.infinity
        let intervals = migrationIntervals
        var scratch = [Double](repeating: 0, count: ConsolidationCluster.historyCapacity)
        let table = load
        candidates.forEach(excluding: excluded) { host in
            guard checkMemory ? table.fitsAtStart(vm, on: host, cluster) : table.fits(vm, on: host, cluster) else {
                return
            }
            let used = table.usedMIPS(host, cluster)
            let total = table.totalMIPS[host]
            let increase =
                table.power(host, at: (used + request) / total) - table.power(host, at: cluster.hostUtilisation[host])
            guard increase < smallestIncrease else { return }
            if used > 1e-9 {
                // Would the host be overloaded with the VM? (Judged without changing the table.)
                // When VMs are created their tasks have not started, so in CloudSim the VMs already
                // on a host ask for nothing and only the new VM counts, with no history yet.
                let count =
                    detector.needsHistory && !checkMemory
                    ? table.copyHistory(host, adding: vm, cluster, into: &scratch) : 0
                let utilisation = checkMemory ? request / total : (table.requestedMIPS[host] + request) / total
                if detector.isOverloaded(
                    utilisation: utilisation, scratch: &scratch, count: count, migrationIntervals: intervals)
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
