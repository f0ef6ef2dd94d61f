/// The hosts PABFD has to look at: every busy host, and of the idle ones only the first of each
/// machine type. Idle hosts of one model are interchangeable — the same power rise, the same
/// room, no overload test — and a scan in host order would take the first of them anyway, so
/// skipping the rest changes no decision and makes a 10,000-host fleet with a few hundred busy
/// hosts cheap to search.
struct CandidateHosts {
    /// Busy hosts (load planned or recorded), ascending.
    private(set) var busy: [Int]
    /// Idle hosts per model, ascending, with the index of the first still idle.
    private var idleByModel: [[Int]]
    private var idleHead: [Int]
    private var isIdle: [Bool]

    /// What makes two empty hosts interchangeable.
    private struct HostType: Hashable {
        var model: String
        var cores: Int
        var coreCapacity: Double
        var memoryMiB: Double
        var link: Double
        var watts: [Double]?
        var ready: Bool
        var capabilities: UInt32
    }

    init(_ cluster: PlacementCluster, _ loads: HostLoads) {
        var types: [HostType: Int] = [:]
        var modelOf = [Int](repeating: 0, count: cluster.hostCount)
        for (index, host) in cluster.hosts.enumerated() {
            let type = HostType(
                model: host.model, cores: host.cores, coreCapacity: host.coreCapacity, memoryMiB: host.memoryMiB,
                link: host.linkMiBPerSecond, watts: host.power?.watts, ready: host.state == .ready,
                capabilities: host.capabilities.rawValue)
            if let known = types[type] {
                modelOf[index] = known
            } else {
                modelOf[index] = types.count
                types[type] = types.count
            }
        }
        let models = types.count
        busy = []
        idleByModel = Array(repeating: [], count: models)
        idleHead = Array(repeating: 0, count: models)
        isIdle = Array(repeating: false, count: cluster.hostCount)
        for host in 0..<cluster.hostCount {
            if loads.usedCPU(host) <= 1e-9 && cluster.hostUtilisation[host] == 0 && loads.vcpus[host] == 0 {
                isIdle[host] = true
                idleByModel[modelOf[host]].append(host)
            } else {
                busy.append(host)
            }
        }
    }

    /// Records that `host` now carries planned load.
    mutating func markBusy(_ host: Int) {
        guard isIdle[host] else { return }
        isIdle[host] = false
        var low = 0, high = busy.count
        while low < high {
            let mid = (low + high) / 2
            if busy[mid] < host { low = mid + 1 } else { high = mid }
        }
        busy.insert(host, at: low)
    }

    /// Calls `body` for the candidate hosts that are not excluded, in host order.
    func forEach(excluding excluded: [Bool], _ body: (Int) -> Void) {
        var heads: [Int] = []
        for model in idleByModel.indices {
            var index = idleHead[model]
            let list = idleByModel[model]
            while index < list.count && (!isIdle[list[index]] || excluded[list[index]]) { index += 1 }
            if index < list.count { heads.append(list[index]) }
        }
        heads.sort()
        var next = 0
        for host in busy {
            while next < heads.count && heads[next] < host {
                body(heads[next])
                next += 1
            }
            if !excluded[host] { body(host) }
        }
        while next < heads.count {
            body(heads[next])
            next += 1
        }
    }
}
