/// The `slo` policy: each VM's objective is that its CPU demand is met, so hosts are packed
/// against a *predicted* demand with headroom, and a migration is started only when it protects
/// an objective or when it empties a host for good.
///
/// - Demand prediction: a VM's next demand is a high percentile of its recent utilisation plus a
///   margin of its size (more margin while the history is short).
/// - Placement: best fit against `targetUtilisation` of each host's MIPS on the predicted
///   demand, only onto hosts whose core can hold the whole VM; a host is switched on only when no
///   running host can take the VM, and then the one with the lowest idle watts per MIPS.
/// - Overload: a host whose current demand exceeds `overloadUtilisation` or whose predicted
///   demand exceeds its capacity sheds the fewest, cheapest (least memory) VMs that bring it
///   back under the target.
/// - Consolidation: a host whose predicted demand is under `evacuationUtilisation` is emptied
///   only if all its VMs fit elsewhere under the target; the emptied hosts and the VMs just moved
///   are left alone for a cool-down, so nothing is moved back and forth.
public final class SLOConsolidation: ConsolidationPolicy {
    public struct Settings: Sendable, Equatable {
        /// Fraction of a host's MIPS the predicted demand may fill when placing.
        public var targetUtilisation: Double
        /// Current demand above this fraction makes a host shed VMs.
        public var overloadUtilisation: Double
        /// Hosts predicted under this fraction are emptied when their VMs fit elsewhere.
        public var evacuationUtilisation: Double
        /// Utilisation samples the prediction looks back over.
        public var window: Int
        /// Percentile (0...1) of the window taken as the predicted demand.
        public var percentile: Double
        /// Headroom added to the prediction, as a fraction of the VM's size.
        public var margin: Double
        /// Decision intervals a moved VM stays put unless its host is overloaded.
        public var coolDownIntervals: Int
        /// At most this fraction of the running hosts is emptied per decision point.
        public var evacuationsPerRound: Double

        public init(
            targetUtilisation: Double = 0.8, overloadUtilisation: Double = 0.95, evacuationUtilisation: Double = 0.4,
            window: Int = 12, percentile: Double = 0.9, margin: Double = 0.05, coolDownIntervals: Int = 24,
            evacuationsPerRound: Double = 0.1
        ) {
            self.targetUtilisation = targetUtilisation
            self.overloadUtilisation = overloadUtilisation
            self.evacuationUtilisation = evacuationUtilisation
            self.window = window
            self.percentile = percentile
            self.margin = margin
            self.coolDownIntervals = coolDownIntervals
            self.evacuationsPerRound = evacuationsPerRound
        }
    }

    public let name: String
    public let settings: Settings
    public var powerAccounting: PowerAccounting { .followsUtilisation }

    public init(name: String = "slo", settings: Settings = .init()) {
        self.name = name
        self.settings = settings
    }

    /// Best fit at full MIPS (every VM asks for all of it when it starts), memory checked, onto
    /// the most efficient hosts first.
    public func initialPlacement(_ cluster: ConsolidationCluster) -> [Int?] {
        var load = HostLoadTable(cluster, withHistory: false)
        var placement = [Int?](repeating: nil, count: cluster.vmCount)
        let order = hostsByEfficiency(cluster)
        for vm in 0..<cluster.vmCount {
            var best: Int?
            var bestFree = Double.infinity
            for host in order where load.fitsAtStart(vm, on: host, cluster) {
                let free = cluster.hosts[host].totalMIPS - load.usedMIPS(host, cluster) - cluster.vmMIPS[vm]
                if load.vmCount[host] > 0 && free < bestFree {
                    bestFree = free
                    best = host
                }
            }
            if best == nil { best = order.first { load.fitsAtStart(vm, on: $0, cluster) } }
            if let host = best {
                load.add(vm, to: host, cluster)
                placement[vm] = host
            }
        }
        return placement
    }

    public func plan(_ cluster: ConsolidationCluster) -> [PlannedMigration] {
        let predicted = (0..<cluster.vmCount).map { predictedDemand($0, cluster) }
        var state = PackingState(cluster: cluster, predicted: predicted)
        var plan: [PlannedMigration] = []
        var locked = [Bool](repeating: false, count: cluster.hostCount)
        let coolDown = Double(settings.coolDownIntervals) * cluster.interval

        // 1. Protect objectives: shed VMs from hosts that are or will be short of CPU.
        for host in 0..<cluster.hostCount where !cluster.hostVMs[host].isEmpty {
            let model = cluster.hosts[host]
            let current = cluster.hostVMs[host].reduce(0) { $0 + cluster.vmRequestedMIPS[$1] }
            guard current > settings.overloadUtilisation * model.totalMIPS || state.predicted[host] > model.totalMIPS
            else { continue }
            locked[host] = true
            let limit = settings.targetUtilisation * model.totalMIPS
            // Cheapest first: small memory moves fast; VMs in cool-down last.
            let candidates = cluster.hostVMs[host].filter { !cluster.vmMigrating[$0] }.sorted { a, b in
                let coolA = cluster.time - cluster.vmLastMigrationStart[a] < coolDown
                let coolB = cluster.time - cluster.vmLastMigrationStart[b] < coolDown
                if coolA != coolB { return !coolA }
                return (cluster.vmMemoryMB[a], -predicted[a], a) < (cluster.vmMemoryMB[b], -predicted[b], b)
            }
            // A single VM that is enough, else the biggest ones until the host is under target.
            var toMove: [Int] = []
            if let one = candidates.first(where: { state.predicted[host] - predicted[$0] <= limit }) {
                toMove = [one]
            } else {
                var excess = state.predicted[host] - limit
                for vm in candidates.sorted(by: { predicted[$0] > predicted[$1] }) where excess > 0 {
                    toMove.append(vm)
                    excess -= predicted[vm]
                }
            }
            for vm in toMove {
                guard let target = state.bestHost(for: vm, limit: settings.targetUtilisation, locked: locked, allowIdle: true)
                else { continue }
                state.move(vm, from: host, to: target)
                locked[target] = true
                plan.append(PlannedMigration(vm: vm, target: target))
            }
        }

        // 2. Consolidate: empty the least-loaded hosts whose VMs all fit on other running hosts.
        let running = (0..<cluster.hostCount).filter { !cluster.hostVMs[$0].isEmpty }
        var budget = max(1, Int(settings.evacuationsPerRound * Double(running.count)))
        let low = running.filter {
            !locked[$0] && state.predicted[$0] < settings.evacuationUtilisation * cluster.hosts[$0].totalMIPS
        }.sorted { (state.predicted[$0] / cluster.hosts[$0].totalMIPS, $0) < (state.predicted[$1] / cluster.hosts[$1].totalMIPS, $1) }
        for host in low where budget > 0 && !locked[host] {
            let vms = state.residents[host]
            if vms.isEmpty || vms.contains(where: { cluster.vmMigrating[$0] }) { continue }
            locked[host] = true
            var moves: [PlannedMigration] = []
            for vm in vms.sorted(by: { predicted[$0] > predicted[$1] }) {
                guard let target = state.bestHost(for: vm, limit: settings.targetUtilisation, locked: locked, allowIdle: false)
                else { break }
                state.move(vm, from: host, to: target)
                moves.append(PlannedMigration(vm: vm, target: target))
            }
            if moves.count < vms.count {
                for move in moves.reversed() { state.move(move.vm, from: move.target, to: host) }
                continue
            }
            for move in moves { locked[move.target] = true }
            plan += moves
            budget -= 1
        }
        return plan
    }

    /// Predicted MIPS of `vm` for the next interval.
    func predictedDemand(_ vm: Int, _ cluster: ConsolidationCluster) -> Double {
        let n = min(cluster.historyCount, settings.window)
        let size = cluster.vmMIPS[vm]
        let current = cluster.vmRequestedMIPS[vm]
        guard n > 0 else { return min(size, current + settings.margin * size) }
        var samples = (0..<n).map { cluster.vmHistory(vm, age: $0) }
        samples.sort()
        let rank = min(n - 1, Int((settings.percentile * Double(n - 1)).rounded(.up)))
        // With little history the percentile is the maximum; add more margin until it fills.
        let margin = settings.margin * (n < settings.window / 2 ? 3 : 1)
        return min(size, max(current, samples[rank] * size) + margin * size)
    }

    private func hostsByEfficiency(_ cluster: ConsolidationCluster) -> [Int] {
        (0..<cluster.hostCount).sorted {
            let a = cluster.hosts[$0], b = cluster.hosts[$1]
            return (a.power.idle / a.totalMIPS, $0) < (b.power.idle / b.totalMIPS, $1)
        }
    }
}
