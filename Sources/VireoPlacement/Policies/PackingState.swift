import VireoModel

/// `slo`'s scratch view while it packs: which VMs sit where, each host's current demand and the
/// recent history of its summed demand, with a best-fit search; every destination also passes the
/// shared feasibility chain (memory, cores) on the shared host loads.
///
/// A host's predicted demand is the peak of the *sum* of its VMs' recent demand, not the sum of
/// their peaks: VMs rarely peak together, and packing on the sum of peaks wastes hosts.
struct PackingState {
    let cluster: PlacementCluster
    var loads: HostLoads
    let chain: FeasibilityChain
    /// Samples of history looked at (the newest is the current demand).
    let window: Int
    /// Each VM's size, and the CPU added to every VM's history while the history is short.
    let size: [Double]
    let vmMargin: [Double]
    var residents: [[Int]]
    /// Summed demand history per host, `window` values each, newest first, in CPU units.
    var history: [Double]
    /// Current (uncapped) demand per host.
    var current: [Double]
    /// Running hosts by room under `limit` at the start, least room first; hosts switched on
    /// while planning are appended.
    private(set) var order: [Int]
    private var orderRoom: [Double]
    let limit: Double
    /// Hosts ordered by idle watts per unit of CPU, the order idle hosts are switched on in.
    let switchOnOrder: [Int]

    init(cluster: PlacementCluster, settings: PackingSettings) {
        self.cluster = cluster
        loads = HostLoads(cluster)
        chain = FeasibilityChain(purpose: .move, wholeVCPUOnCore: true)
        limit = settings.targetUtilisation
        let n = max(1, min(settings.window, cluster.historyCount))
        window = n
        let marginFraction = cluster.historyCount < settings.window ? settings.margin : 0
        size = cluster.vms.map(\.size)
        vmMargin = size.map { $0 * marginFraction }
        residents = cluster.hostVMs
        history = Array(repeating: 0, count: cluster.hostCount * n)
        current = Array(repeating: 0, count: cluster.hostCount)
        for host in 0..<cluster.hostCount {
            for vm in cluster.hostVMs[host] {
                current[host] += cluster.vmDemand[vm]
                for age in 0..<n { history[host * n + age] += Self.demand(vm, age, cluster, size, vmMargin) }
            }
        }
        var running = (0..<cluster.hostCount).filter { !cluster.hostVMs[$0].isEmpty }
        var rooms = [Double](repeating: 0, count: cluster.hostCount)
        for host in running { rooms[host] = limit * cluster.hosts[host].capacity - Self.peak(host, history, n) }
        running.sort { (rooms[$0], $0) < (rooms[$1], $1) }
        order = running
        orderRoom = running.map { rooms[$0] }
        switchOnOrder = Self.hostsByEfficiency(cluster).order
    }

    /// Hosts by idle watts per unit of the resource that binds — CPU, or memory where it counts
    /// and the VMs fill more of the cluster's memory than of its CPU — most efficient first (ties:
    /// cluster order).
    static func hostsByEfficiency(_ cluster: PlacementCluster) -> (order: [Int], memoryBinds: Bool) {
        var memoryBinds = false
        if cluster.settings.memoryAlwaysCounts {
            let cpu = cluster.vmDemand.reduce(0, +) / max(1e-9, cluster.hosts.map(\.capacity).reduce(0, +))
            let memory = cluster.vms.map(\.memoryMiB).reduce(0, +) / max(1e-9, cluster.hosts.map(\.memoryMiB).reduce(0, +))
            memoryBinds = memory > cpu
        }
        let idle = cluster.hosts.map { host in
            (host.power ?? .unmetered(cores: host.cores)).idle / max(memoryBinds ? host.memoryMiB : host.capacity, 1e-9)
        }
        return ((0..<cluster.hostCount).sorted { (idle[$0], $0) < (idle[$1], $1) }, memoryBinds)
    }

    @inline(__always)
    static func demand(_ vm: Int, _ age: Int, _ cluster: PlacementCluster, _ size: [Double], _ margin: [Double]) -> Double {
        min(size[vm], cluster.vmHistory(vm, age: age) * size[vm] + margin[vm])
    }

    static func peak(_ host: Int, _ history: [Double], _ n: Int) -> Double {
        var peak = 0.0
        for age in 0..<n { peak = max(peak, history[host * n + age]) }
        return peak
    }

    /// Current demand over capacity.
    func load(_ host: Int) -> Double { current[host] / max(cluster.hosts[host].capacity, 1e-9) }

    /// Predicted (peak recent) demand of `host`.
    func predicted(_ host: Int) -> Double { Self.peak(host, history, window) }

    /// Predicted demand of `vm` alone (its recent peak).
    func predicted(vm: Int) -> Double {
        var peak = 0.0
        for age in 0..<window { peak = max(peak, Self.demand(vm, age, cluster, size, vmMargin)) }
        return peak
    }

    mutating func move(_ vm: Int, from source: Int, to target: Int) {
        if let index = residents[source].firstIndex(of: vm) { residents[source].remove(at: index) }
        residents[target].append(vm)
        loads.remove(vm, from: source)
        loads.add(vm, to: target)
        current[source] -= cluster.vmDemand[vm]
        current[target] += cluster.vmDemand[vm]
        for age in 0..<window {
            let d = Self.demand(vm, age, cluster, size, vmMargin)
            history[source * window + age] -= d
            history[target * window + age] += d
        }
    }

    /// Whether `vm` may go to `host`: the feasibility chain passes, and neither its current nor
    /// its recent-peak demand would pass `limit`.
    func accepts(_ vm: Int, _ host: Int, _ candidate: Candidate) -> Bool {
        let capacity = limit * loads.capacity[host]
        // Cheapest first: the current demand, then the chain (memory, cores), then the history.
        guard current[host] + cluster.vmDemand[vm] <= capacity, chain.passes(candidate, on: host, loads) else {
            return false
        }
        for age in 0..<window
        where history[host * window + age] + Self.demand(vm, age, cluster, size, vmMargin) > capacity {
            return false
        }
        return true
    }

    /// The running, unlocked host with the least room that takes `vm`; if none and `allowIdle`,
    /// the most efficient idle host that takes it (which is then running).
    mutating func bestHost(for vm: Int, locked: [Bool], allowIdle: Bool) -> Int? {
        var smallest = Double.infinity
        for age in 0..<window { smallest = min(smallest, Self.demand(vm, age, cluster, size, vmMargin)) }
        let candidate = loads.candidate(vm)
        // Rooms only shrink while planning, so a host whose recorded room is below the VM's
        // smallest demand cannot take it.
        var low = 0
        var high = order.count
        while low < high {
            let mid = (low + high) / 2
            if orderRoom[mid] < smallest { low = mid + 1 } else { high = mid }
        }
        for index in low..<order.count {
            let host = order[index]
            if !locked[host] && !residents[host].isEmpty && accepts(vm, host, candidate) { return host }
        }
        guard allowIdle else { return nil }
        for host in switchOnOrder where !locked[host] && residents[host].isEmpty && accepts(vm, host, candidate) {
            order.append(host)
            orderRoom.append(.infinity)
            return host
        }
        return nil
    }
}
