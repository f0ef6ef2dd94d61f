/// The `slo` policy's scratch view while it plans: which VMs sit where, each host's current
/// demand and the recent history of its summed demand, with a best-fit search.
///
/// A host's predicted demand is the peak of the *sum* of its VMs' recent demand, not the sum of
/// their peaks: VMs rarely peak together, and packing on the sum of peaks wastes hosts.
struct PackingState {
    let cluster: ConsolidationCluster
    /// Samples of history looked at (the newest is the current demand).
    let window: Int
    /// MIPS added to every VM's history while the history is short.
    let vmMargin: [Double]
    var residents: [[Int]]
    /// Summed demand history per host, `window` values each, newest first, in MIPS.
    var history: [Double]
    /// Current (uncapped) requested MIPS per host.
    var current: [Double]
    /// Running hosts by room under `limit` at the start, least room first; hosts switched on
    /// while planning are appended.
    private(set) var order: [Int]
    private var orderRoom: [Double]
    let limit: Double
    /// Hosts ordered by idle watts per MIPS, the order idle hosts are switched on in.
    let switchOnOrder: [Int]

    init(cluster: ConsolidationCluster, window: Int, limit: Double, earlyMargin: Double) {
        self.cluster = cluster
        self.limit = limit
        let n = max(1, min(window, cluster.historyCount))
        self.window = n
        let marginFraction = cluster.historyCount < window ? earlyMargin : 0
        vmMargin = cluster.vmMIPS.map { $0 * marginFraction }
        residents = cluster.hostVMs
        history = Array(repeating: 0, count: cluster.hostCount * n)
        current = Array(repeating: 0, count: cluster.hostCount)
        for host in 0..<cluster.hostCount {
            for vm in cluster.hostVMs[host] {
                current[host] += cluster.vmRequestedMIPS[vm]
                for age in 0..<n { history[host * n + age] += Self.demand(vm, age, cluster, vmMargin) }
            }
        }
        var running = (0..<cluster.hostCount).filter { !cluster.hostVMs[$0].isEmpty }
        var rooms = [Double](repeating: 0, count: cluster.hostCount)
        for host in running { rooms[host] = limit * cluster.hosts[host].totalMIPS - Self.peak(host, history, n) }
        running.sort { (rooms[$0], $0) < (rooms[$1], $1) }
        order = running
        orderRoom = running.map { rooms[$0] }
        switchOnOrder = (0..<cluster.hostCount).sorted {
            let a = cluster.hosts[$0], b = cluster.hosts[$1]
            return (a.power.idle / a.totalMIPS, $0) < (b.power.idle / b.totalMIPS, $1)
        }
    }

    @inline(__always)
    static func demand(_ vm: Int, _ age: Int, _ cluster: ConsolidationCluster, _ margin: [Double]) -> Double {
        min(cluster.vmMIPS[vm], cluster.vmHistory(vm, age: age) * cluster.vmMIPS[vm] + margin[vm])
    }

    static func peak(_ host: Int, _ history: [Double], _ n: Int) -> Double {
        var peak = 0.0
        for age in 0..<n { peak = max(peak, history[host * n + age]) }
        return peak
    }

    /// Predicted (peak recent) demand of `host`, MIPS.
    func predicted(_ host: Int) -> Double { Self.peak(host, history, window) }

    /// Predicted demand of `vm` alone (its recent peak), MIPS.
    func predicted(vm: Int) -> Double {
        var peak = 0.0
        for age in 0..<window { peak = max(peak, Self.demand(vm, age, cluster, vmMargin)) }
        return peak
    }

    mutating func move(_ vm: Int, from source: Int, to target: Int) {
        if let index = residents[source].firstIndex(of: vm) { residents[source].remove(at: index) }
        residents[target].append(vm)
        current[source] -= cluster.vmRequestedMIPS[vm]
        current[target] += cluster.vmRequestedMIPS[vm]
        for age in 0..<window {
            let d = Self.demand(vm, age, cluster, vmMargin)
            history[source * window + age] -= d
            history[target * window + age] += d
        }
    }

    /// Whether `vm` may go to `host` without its current or recent-peak demand passing `limit`,
    /// onto a core that holds the whole VM.
    func accepts(_ vm: Int, _ host: Int) -> Bool {
        let model = cluster.hosts[host]
        let capacity = limit * model.totalMIPS
        guard model.coreMIPS >= cluster.vmMIPS[vm], current[host] + cluster.vmRequestedMIPS[vm] <= capacity else {
            return false
        }
        for age in 0..<window where history[host * window + age] + Self.demand(vm, age, cluster, vmMargin) > capacity {
            return false
        }
        return true
    }

    /// The running, unlocked host with the least room that takes `vm`; if none and `allowIdle`,
    /// the most efficient idle host that takes it (which is then running).
    mutating func bestHost(for vm: Int, locked: [Bool], allowIdle: Bool) -> Int? {
        var smallest = Double.infinity
        for age in 0..<window { smallest = min(smallest, Self.demand(vm, age, cluster, vmMargin)) }
        // Rooms only shrink while planning, so a host whose recorded room is below the VM's
        // smallest demand cannot take it.
        var low = 0, high = order.count
        while low < high {
            let mid = (low + high) / 2
            if orderRoom[mid] < smallest { low = mid + 1 } else { high = mid }
        }
        for index in low..<order.count {
            let host = order[index]
            if !locked[host] && !residents[host].isEmpty && accepts(vm, host) { return host }
        }
        guard allowIdle else { return nil }
        for host in switchOnOrder where !locked[host] && residents[host].isEmpty && accepts(vm, host) {
            order.append(host)
            orderRoom.append(.infinity)
            return host
        }
        return nil
    }
}
