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

    public init(_ cluster: ConsolidationCluster, withHistory: Bool) {
        let hosts = cluster.hostCount
        cappedMIPS = Array(repeating: 0, count: hosts)
        requestedMIPS = Array(repeating: 0, count: hosts)
        memoryMB = Array(repeating: 0, count: hosts)
        vmCount = Array(repeating: 0, count: hosts)
        historyCount = withHistory ? cluster.historyCount : 0
        history = withHistory ? Array(repeating: 0, count: hosts * ConsolidationCluster.historyCapacity) : []
        for host in 0..<hosts {
            for vm in cluster.hostVMs[host] { add(vm, to: host, cluster) }
        }
    }

    /// MIPS in use on `host` (never more than it has).
    @inline(__always)
    public func usedMIPS(_ host: Int, _ cluster: ConsolidationCluster) -> Double {
        min(cappedMIPS[host], cluster.hosts[host].totalMIPS)
    }

    /// Requested MIPS / host MIPS: the utilisation the overload detectors judge.
    @inline(__always)
    public func utilisation(_ host: Int, _ cluster: ConsolidationCluster) -> Double {
        requestedMIPS[host] / cluster.hosts[host].totalMIPS
    }

    public mutating func add(_ vm: Int, to host: Int, _ cluster: ConsolidationCluster) {
        change(vm, host, cluster, sign: 1)
    }

    public mutating func remove(_ vm: Int, from host: Int, _ cluster: ConsolidationCluster) {
        change(vm, host, cluster, sign: -1)
    }

    private mutating func change(_ vm: Int, _ host: Int, _ cluster: ConsolidationCluster, sign: Double) {
        cappedMIPS[host] += sign * cluster.cappedRequest(vm, on: host)
        requestedMIPS[host] += sign * cluster.vmRequestedMIPS[vm]
        memoryMB[host] += sign * cluster.vmMemoryMB[vm]
        vmCount[host] += sign > 0 ? 1 : -1
        if historyCount > 0 {
            let base = host * ConsolidationCluster.historyCapacity
            let scale = sign * cluster.vmMIPS[vm] / cluster.hosts[host].totalMIPS
            for age in 0..<historyCount { history[base + age] += scale * cluster.vmHistory(vm, age: age) }
        }
    }

    /// The host's history, newest first, with the (oldest) trailing zeros removed.
    public func hostHistory(_ host: Int) -> [Double] {
        let base = host * ConsolidationCluster.historyCapacity
        var count = historyCount
        // Removing VMs can leave tiny negative rounding residues; treat them as zero.
        while count > 0 && history[base + count - 1] <= 1e-12 { count -= 1 }
        return Array(history[base..<base + count])
    }

    /// Whether `vm`, asking for its request now, fits `host`: one core big enough, enough free
    /// MIPS. Memory is not checked: CloudSim's VMs reserve memory only when they are created.
    @inline(__always)
    public func fits(_ vm: Int, on host: Int, _ cluster: ConsolidationCluster) -> Bool {
        let request = cluster.vmRequestedMIPS[vm]
        let model = cluster.hosts[host]
        return model.coreMIPS >= request && model.totalMIPS - usedMIPS(host, cluster) >= request
    }

    /// As `fits`, and the host's memory holds the VM too (placement when VMs start).
    public func fitsAtStart(_ vm: Int, on host: Int, _ cluster: ConsolidationCluster) -> Bool {
        fits(vm, on: host, cluster) && memoryMB[host] + cluster.vmMemoryMB[vm] <= cluster.hosts[host].memoryMB
    }
}
