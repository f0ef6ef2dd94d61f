/// The hosts PABFD has to look at: every busy host, and of the idle ones only the first of each
/// machine model. Idle hosts of one model are interchangeable — the same power rise, the same
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

    init(_ cluster: ConsolidationCluster, _ load: HostLoadTable) {
        var models: [PowerHostModel] = []
        var modelOf = [Int](repeating: 0, count: cluster.hostCount)
        for host in 0..<cluster.hostCount {
            if let index = models.firstIndex(of: cluster.hosts[host]) {
                modelOf[host] = index
            } else {
                modelOf[host] = models.count
                models.append(cluster.hosts[host])
            }
        }
        busy = []
        idleByModel = Array(repeating: [], count: models.count)
        idleHead = Array(repeating: 0, count: models.count)
        isIdle = Array(repeating: false, count: cluster.hostCount)
        for host in 0..<cluster.hostCount {
            if load.usedMIPS(host, cluster) <= 1e-9 && cluster.hostUtilisation[host] == 0 {
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
