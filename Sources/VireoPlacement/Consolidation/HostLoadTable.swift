/// A policy's scratch copy of what each host carries while it plans: VMs can be added and
/// removed hypothetically without touching the cluster.
public struct HostLoadTable: Sendable {
    /// Sum over the host's VMs of their requests capped at one core (what they can be given).
    public private(set) var cappedMIPS: [Double]
    /// Sum of the uncapped requests.
    public private(set) var requestedMIPS: [Double]
    /// Memory of the VMs placed (checked only when VMs start).
    public private(set) var memoryMB: [Double]
    public private(set) var vmCount: [Int]
    /// Host utilisation history, `ConsolidationCluster.historyCapacity` slots per host, newest
    /// first: the sum of its VMs' utilisation x VM MIPS / host MIPS. Empty unless asked for.
    public private(set) var history: [Double]
    public let historyCount: Int
    /// Host constants copied out of the cluster once per plan, so the hot loops read flat arrays.
    public let totalMIPS: [Double]
    public let coreMIPS: [Double]
    public let memoryCapacity: [Double]
    /// Power table points, 11 per host.
    private let watts: [Double]

    public init(_ cluster: ConsolidationCluster, withHistory: Bool) {
        let hosts = cluster.hostCount
        cappedMIPS = Array(repeating: 0, count: hosts)
        requestedMIPS = Array(repeating: 0, count: hosts)
        memoryMB = Array(repeating: 0, count: hosts)
        vmCount = Array(repeating: 0, count: hosts)
        historyCount = withHistory ? cluster.historyCount : 0
        history = withHistory ? Array(repeating: 0, count: hosts * ConsolidationCluster.historyCapacity) : []
        totalMIPS = cluster.hosts.map(\.totalMIPS)
        coreMIPS = cluster.hosts.map(\.coreMIPS)
        memoryCapacity = cluster.hosts.map(\.memoryMB)
        watts = cluster.hosts.flatMap(\.power.watts)
        for host in 0..<hosts {
            for vm in cluster.hostVMs[host] { add(vm, to: host, cluster) }
        }
    }

    /// MIPS in use on `host` (never more than it has).
    @inline(__always)
    public func usedMIPS(_ host: Int, _ cluster: ConsolidationCluster) -> Double {
        min(cappedMIPS[host], totalMIPS[host])
    }

    /// Watts of `host` at `utilisation` (its power curve, read from the flat table).
    @inline(__always)
    public func power(_ host: Int, at utilisation: Double) -> Double {
        let u = min(max(utilisation, 0), 1) * 10
        let lower = min(Int(u), 9)
        let base = host * 11 + lower
        return watts[base] + (watts[base + 1] - watts[base]) * (u - Double(lower))
    }

    /// Writes into `buffer` the history `host` would have with `vm` added (trimmed) and returns
    /// its length, without changing the table.
    public func copyHistory(_ host: Int, adding vm: Int, _ cluster: ConsolidationCluster, into buffer: inout [Double]) -> Int {
        let base = host * ConsolidationCluster.historyCapacity
        let scale = cluster.vmMIPS[vm] / totalMIPS[host]
        var count = historyCount
        for age in 0..<count { buffer[age] = history[base + age] + scale * cluster.vmHistory(vm, age: age) }
        while count > 0 && buffer[count - 1] <= 1e-12 { count -= 1 }
        return count
    }

    /// Requested MIPS / host MIPS: the utilisation the overload detectors judge.
    @inline(__always)
    public func utilisation(_ host: Int, _ cluster: ConsolidationCluster) -> Double {
        requestedMIPS[host] / totalMIPS[host]
    }

    public mutating func add(_ vm: Int, to host: Int, _ cluster: ConsolidationCluster) {
        change(vm, host, cluster, sign: 1)
    }

    public mutating func remove(_ vm: Int, from host: Int, _ cluster: ConsolidationCluster) {
        change(vm, host, cluster, sign: -1)
    }

    private mutating func change(_ vm: Int, _ host: Int, _ cluster: ConsolidationCluster, sign: Double) {
        cappedMIPS[host] += sign * min(cluster.vmRequestedMIPS[vm], coreMIPS[host])
        requestedMIPS[host] += sign * cluster.vmRequestedMIPS[vm]
        memoryMB[host] += sign * cluster.vmMemoryMB[vm]
        vmCount[host] += sign > 0 ? 1 : -1
        if historyCount > 0 {
            let base = host * ConsolidationCluster.historyCapacity
            let scale = sign * cluster.vmMIPS[vm] / totalMIPS[host]
            for age in 0..<historyCount { history[base + age] += scale * cluster.vmHistory(vm, age: age) }
        }
    }

    /// The host's history, newest first, with the (oldest) trailing zeros removed.
    public func hostHistory(_ host: Int) -> [Double] {
        var values = [Double](repeating: 0, count: ConsolidationCluster.historyCapacity)
        let count = copyHistory(host, into: &values)
        return Array(values[0..<count])
    }

    /// Copies the host's trimmed history into the front of `buffer` (at least
    /// `historyCapacity` long) and returns how many values it has.
    public func copyHistory(_ host: Int, into buffer: inout [Double]) -> Int {
        let base = host * ConsolidationCluster.historyCapacity
        var count = historyCount
        // Removing VMs can leave tiny rounding residues; treat them as zero.
        while count > 0 && history[base + count - 1] <= 1e-12 { count -= 1 }
        for age in 0..<count { buffer[age] = history[base + age] }
        return count
    }

    /// Whether `vm`, asking for its request now, fits `host`: one core big enough, enough free
    /// MIPS. Memory is not checked: CloudSim's VMs reserve memory only when they are created.
    @inline(__always)
    public func fits(_ vm: Int, on host: Int, _ cluster: ConsolidationCluster) -> Bool {
        let request = cluster.vmRequestedMIPS[vm]
        return coreMIPS[host] >= request && totalMIPS[host] - usedMIPS(host, cluster) >= request
    }

    /// As `fits`, and the host's memory holds the VM too (placement when VMs start).
    public func fitsAtStart(_ vm: Int, on host: Int, _ cluster: ConsolidationCluster) -> Bool {
        fits(vm, on: host, cluster) && memoryMB[host] + cluster.vmMemoryMB[vm] <= memoryCapacity[host]
    }
}
