import VireoPlacement

/// Each host's last record (requested and allocated MIPS, utilisation) and the totals the
/// metrics are made of. CloudSim's rules: a host whose utilisation was 0 at the start of a step
/// is off (0 J); otherwise the step costs the mean of its power at the start and at the end.
struct SimulationLedger {
    var utilisation: [Double]
    var allocated: [Double]
    var requested: [Double]
    /// Requested and allocated MIPS of VMs migrating away, at the last record.
    var migratingRequested: Double = 0
    var migratingAllocated: Double = 0
    /// Requested MIPS of all VMs at the last record.
    var totalRequested: Double = 0
    /// Hosts with allocated < requested at the last record.
    var shortHosts = 0

    var energyJoules: Double = 0
    var activeSeconds: Double = 0
    var shortSeconds: Double = 0
    var migrationLossMIPSSeconds: Double = 0
    var requestedMIPSSeconds: Double = 0

    init(hostCount: Int) {
        utilisation = Array(repeating: 0, count: hostCount)
        allocated = Array(repeating: 0, count: hostCount)
        requested = Array(repeating: 0, count: hostCount)
    }

    /// Closes the step from `start` to `end` with the current demand, then records it.
    mutating func account(
        until end: Double, from start: Double, cluster: ConsolidationCluster, incoming: [[Int]], alwaysFull: Bool
    ) {
        let dt = end - start
        if dt > 0 {
            for host in 0..<cluster.hostCount where utilisation[host] > 0 {
                activeSeconds += dt
                if allocated[host] < requested[host] { shortSeconds += dt }
            }
            migrationLossMIPSSeconds += (migratingRequested - migratingAllocated) * dt
            requestedMIPSSeconds += totalRequested * dt
        }
        let previous = utilisation
        record(cluster: cluster, incoming: incoming)
        guard dt > 0 else { return }
        for host in 0..<cluster.hostCount {
            let power = cluster.hosts[host].power
            if alwaysFull {
                energyJoules += power.peak * dt
            } else if previous[host] > 0 {
                energyJoules += (power.power(at: previous[host]) + power.power(at: utilisation[host])) / 2 * dt
            }
        }
    }

    /// Records every host's state from the cluster as it is now (no time passes).
    mutating func record(cluster: ConsolidationCluster, incoming: [[Int]]) {
        migratingRequested = 0
        migratingAllocated = 0
        totalRequested = 0
        shortHosts = 0
        for host in 0..<cluster.hostCount {
            let model = cluster.hosts[host]
            let residents = cluster.hostVMs[host]
            let arriving = incoming[host]
            if residents.isEmpty && arriving.isEmpty {
                utilisation[host] = 0
                allocated[host] = 0
                requested[host] = 0
                continue
            }
            let core = model.coreMIPS
            let capacity = model.totalMIPS
            var demand = 0.0
            for vm in residents { demand += min(cluster.vmRequestedMIPS[vm], core) }
            for vm in arriving { demand += 0.1 * min(cluster.vmRequestedMIPS[vm], core) }
            let scaled = demand > capacity
            let factor = scaled ? capacity / demand : 1
            var hostAllocated = 0.0
            var hostRequested = 0.0
            for vm in residents {
                let request = cluster.vmRequestedMIPS[vm]
                let capped = min(request, core)
                let given = scaled ? (capped * factor).rounded(.down) : capped
                hostRequested += request
                hostAllocated += given
                if cluster.vmMigrating[vm] {
                    // The VM gets 10 % less while it migrates; the host still counts all of it.
                    let vmGiven = scaled ? (capped * factor * 0.9).rounded(.down) : capped * 0.9
                    migratingRequested += request
                    migratingAllocated += vmGiven
                }
            }
            for vm in arriving {
                let request = cluster.vmRequestedMIPS[vm]
                let reserved = 0.1 * min(request, core)
                hostAllocated += scaled ? (reserved * factor).rounded(.down) : reserved
                hostRequested += request
            }
            totalRequested += residents.reduce(0) { $0 + cluster.vmRequestedMIPS[$1] }
            allocated[host] = hostAllocated
            requested[host] = hostRequested
            utilisation[host] = min(1, hostAllocated / capacity)
            if hostAllocated < hostRequested { shortHosts += 1 }
        }
    }
}
