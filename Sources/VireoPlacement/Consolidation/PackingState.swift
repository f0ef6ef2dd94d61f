/// The `slo` policy's scratch view while it plans: which VMs sit where, and each host's
/// predicted and current demand, with best-fit search against a utilisation limit.
struct PackingState {
    let cluster: ConsolidationCluster
    /// Predicted MIPS per VM.
    let vmPredicted: [Double]
    var residents: [[Int]]
    /// Predicted MIPS per host.
    var predicted: [Double]
    /// Current (uncapped) requested MIPS per host.
    var current: [Double]
    /// Hosts ordered by idle watts per MIPS, the order idle hosts are switched on in.
    let switchOnOrder: [Int]

    init(cluster: ConsolidationCluster, predicted vmPredicted: [Double]) {
        self.cluster = cluster
        self.vmPredicted = vmPredicted
        residents = cluster.hostVMs
        predicted = Array(repeating: 0, count: cluster.hostCount)
        current = Array(repeating: 0, count: cluster.hostCount)
        for host in 0..<cluster.hostCount {
            for vm in cluster.hostVMs[host] {
                predicted[host] += vmPredicted[vm]
                current[host] += cluster.vmRequestedMIPS[vm]
            }
        }
        switchOnOrder = (0..<cluster.hostCount).sorted {
            let a = cluster.hosts[$0], b = cluster.hosts[$1]
            return (a.power.idle / a.totalMIPS, $0) < (b.power.idle / b.totalMIPS, $1)
        }
    }

    mutating func move(_ vm: Int, from source: Int, to target: Int) {
        if let index = residents[source].firstIndex(of: vm) { residents[source].remove(at: index) }
        residents[target].append(vm)
        predicted[source] -= vmPredicted[vm]
        predicted[target] += vmPredicted[vm]
        current[source] -= cluster.vmRequestedMIPS[vm]
        current[target] += cluster.vmRequestedMIPS[vm]
    }

    /// Whether `vm` may go to `host` under `limit` (a fraction of the host's MIPS).
    @inline(__always)
    func accepts(_ vm: Int, _ host: Int, limit: Double) -> Bool {
        let model = cluster.hosts[host]
        return model.coreMIPS >= cluster.vmMIPS[vm]
            && predicted[host] + vmPredicted[vm] <= limit * model.totalMIPS
            && current[host] + cluster.vmRequestedMIPS[vm] <= limit * model.totalMIPS
    }

    /// The running, unlocked host that `vm` fills best (least predicted room left); if none and
    /// `allowIdle`, the most efficient idle host that takes it.
    func bestHost(for vm: Int, limit: Double, locked: [Bool], allowIdle: Bool) -> Int? {
        var best: Int?
        var leastRoom = Double.infinity
        for host in 0..<cluster.hostCount where !locked[host] && !residents[host].isEmpty {
            guard accepts(vm, host, limit: limit) else { continue }
            let room = limit * cluster.hosts[host].totalMIPS - predicted[host] - vmPredicted[vm]
            if room < leastRoom {
                leastRoom = room
                best = host
            }
        }
        if best == nil && allowIdle {
            best = switchOnOrder.first { !locked[$0] && residents[$0].isEmpty && accepts(vm, $0, limit: limit) }
        }
        return best
    }
}
