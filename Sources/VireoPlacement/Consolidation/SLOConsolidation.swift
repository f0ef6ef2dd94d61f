/// The `slo` policy: each VM's objective is that its CPU demand is met, so hosts are packed
/// against a *predicted* demand with headroom, and a migration is started only when it protects
/// an objective or when it empties a host for good.
///
/// - Demand prediction: a host's next demand is the peak, over the last `window` samples, of the
///   summed demand of the VMs it would hold (VMs rarely peak together, so this is far below the
///   sum of their peaks); while the history is short every VM gets a margin of its size.
/// - Placement: best fit against `targetUtilisation` of each host's MIPS, for both the predicted
///   and the current demand, only onto hosts whose core can hold the whole VM; a host is
///   switched on only when no running host can take the VM, and then the one with the lowest
///   idle watts per MIPS.
/// - Overload: a host whose current demand exceeds `overloadUtilisation` sheds the fewest,
///   cheapest (least memory) VMs that bring it back under the target.
/// - Consolidation: a host whose predicted demand is under `evacuationUtilisation` is emptied
///   only if all its VMs fit elsewhere under the target, at most `evacuationsPerRound` of the
///   running hosts per decision point once the history fills the window (no limit before); a
///   host holding a VM moved within the cool-down is not emptied, so nothing is moved back and
///   forth.
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
        /// Headroom added to the prediction, as a fraction of the VM's size.
        public var margin: Double
        /// Decision intervals a moved VM stays put unless its host is overloaded.
        public var coolDownIntervals: Int
        /// At most this fraction of the running hosts is emptied per decision point.
        public var evacuationsPerRound: Double

        public init(
            targetUtilisation: Double = 0.85, overloadUtilisation: Double = 0.95, evacuationUtilisation: Double = 0.5,
            window: Int = 12, margin: Double = 0.1, coolDownIntervals: Int = 12, evacuationsPerRound: Double = 0.25
        ) {
            self.targetUtilisation = targetUtilisation
            self.overloadUtilisation = overloadUtilisation
            self.evacuationUtilisation = evacuationUtilisation
            self.window = window
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
        var state = PackingState(
            cluster: cluster, window: settings.window, limit: settings.targetUtilisation, earlyMargin: settings.margin)
        var plan: [PlannedMigration] = []
        var locked = [Bool](repeating: false, count: cluster.hostCount)
        let coolDown = Double(settings.coolDownIntervals) * cluster.interval

        // 1. Protect objectives: shed VMs from hosts whose demand is at or near their capacity.
        for host in 0..<cluster.hostCount where !cluster.hostVMs[host].isEmpty {
            let capacity = cluster.hosts[host].totalMIPS
            guard state.current[host] > settings.overloadUtilisation * capacity else { continue }
            locked[host] = true
            let limit = settings.targetUtilisation * capacity
            // Cheapest first: little memory moves fast; VMs in cool-down last.
            let candidates = cluster.hostVMs[host].filter { !cluster.vmMigrating[$0] }.sorted { a, b in
                let coolA = cluster.time - cluster.vmLastMigrationStart[a] < coolDown
                let coolB = cluster.time - cluster.vmLastMigrationStart[b] < coolDown
                if coolA != coolB { return !coolA }
                return (cluster.vmMemoryMB[a], -cluster.vmRequestedMIPS[a], a)
                    < (cluster.vmMemoryMB[b], -cluster.vmRequestedMIPS[b], b)
            }
            // One VM that is enough, else the busiest ones until the host is under its target.
            var toMove: [Int] = []
            if let one = candidates.first(where: { state.current[host] - cluster.vmRequestedMIPS[$0] <= limit }) {
                toMove = [one]
            } else {
                var excess = state.current[host] - limit
                for vm in candidates.sorted(by: { cluster.vmRequestedMIPS[$0] > cluster.vmRequestedMIPS[$1] })
                where excess > 0 {
                    toMove.append(vm)
                    excess -= cluster.vmRequestedMIPS[vm]
                }
            }
            for vm in toMove {
                guard let target = state.bestHost(for: vm, locked: locked, allowIdle: true) else { continue }
                state.move(vm, from: host, to: target)
                locked[target] = true
                plan.append(PlannedMigration(vm: vm, target: target))
            }
        }

        // 2. Consolidate: empty the least-loaded hosts whose VMs all fit on other running hosts.
        let running = (0..<cluster.hostCount).filter { !cluster.hostVMs[$0].isEmpty }
        // While the history is short (right after the start, when every VM was placed at its full
        // size) there is nothing to protect yet but much to consolidate: no budget then.
        let share = cluster.historyCount < settings.window ? 1 : settings.evacuationsPerRound
        var budget = max(1, Int(share * Double(running.count)))
        var attempts = 4 * budget
        let low = running.compactMap { host -> (Int, Double)? in
            let fraction = state.predicted(host) / cluster.hosts[host].totalMIPS
            return !locked[host] && fraction < settings.evacuationUtilisation ? (host, fraction) : nil
        }.sorted { ($0.1, $0.0) < ($1.1, $1.0) }
        for (host, _) in low where budget > 0 && attempts > 0 && !locked[host] {
            let vms = state.residents[host]
            // A host holding a VM moved within the cool-down keeps it: no moving back and forth.
            if vms.isEmpty
                || vms.contains(where: {
                    cluster.vmMigrating[$0] || cluster.time - cluster.vmLastMigrationStart[$0] < coolDown
                })
            {
                continue
            }
            attempts -= 1
            locked[host] = true
            var moves: [PlannedMigration] = []
            let biggestFirst = vms.map { ($0, state.predicted(vm: $0)) }.sorted { ($0.1, $1.0) > ($1.1, $0.0) }
            for (vm, _) in biggestFirst {
                guard let target = state.bestHost(for: vm, locked: locked, allowIdle: false) else { break }
                state.move(vm, from: host, to: target)
                moves.append(PlannedMigration(vm: vm, target: target))
            }
            if moves.count < vms.count {
                for move in moves.reversed() { state.move(move.vm, from: move.target, to: host) }
                continue
            }
            plan += moves
            budget -= 1
        }
        return plan
    }

    private func hostsByEfficiency(_ cluster: ConsolidationCluster) -> [Int] {
        (0..<cluster.hostCount).sorted {
            let a = cluster.hosts[$0], b = cluster.hosts[$1]
            return (a.power.idle / a.totalMIPS, $0) < (b.power.idle / b.totalMIPS, $1)
        }
    }
}
