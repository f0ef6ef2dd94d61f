import VireoPlacement

/// Each host's last record (requested and allocated CPU, utilisation) and the totals the metrics
/// are made of. CloudSim's rules: a host that was off at the start of a step draws nothing;
/// otherwise the step costs the mean of its power at the start and at the end. A host is off when
/// its utilisation is 0 — or, where VMs keep their memory when idle (`onWhileHolding`), when it
/// holds no VM at all.
struct SimulationLedger {
    let onWhileHolding: Bool
    var utilisation: [Double]
    var on: [Bool]
    var allocated: [Double]
    var requested: [Double]
    /// Requested and allocated CPU of VMs migrating away, at the last record.
    var migratingRequested: Double = 0
    var migratingAllocated: Double = 0
    /// Requested CPU of all VMs at the last record.
    var totalRequested: Double = 0
    /// Hosts with allocated < requested at the last record.
    var shortHosts = 0

    var energyJoules: Double = 0
    var activeSeconds: Double = 0
    var shortSeconds: Double = 0
    var migrationLossSeconds: Double = 0
    var requestedSeconds: Double = 0

    init(hostCount: Int, onWhileHolding: Bool) {
        self.onWhileHolding = onWhileHolding
        utilisation = Array(repeating: 0, count: hostCount)
        on = Array(repeating: false, count: hostCount)
        allocated = Array(repeating: 0, count: hostCount)
        requested = Array(repeating: 0, count: hostCount)
    }

    /// Closes the step from `start` to `end` with the current demand, then records it.
    mutating func account(
        until end: Double, from start: Double, cluster: PlacementCluster, demand: [Double], incoming: [[Int]],
        alwaysFull: Bool
    ) {
        let dt = end - start
        if dt > 0 {
            for host in 0..<cluster.hostCount where on[host] {
                activeSeconds += dt
                if allocated[host] < requested[host] { shortSeconds += dt }
            }
            migrationLossSeconds += (migratingRequested - migratingAllocated) * dt
            requestedSeconds += totalRequested * dt
        }
        let previous = utilisation
        let wasOn = on
        record(cluster: cluster, demand: demand, incoming: incoming)
        guard dt > 0 else { return }
        for host in 0..<cluster.hostCount {
            let power = cluster.hosts[host].power ?? .unmetered(cores: cluster.hosts[host].cores)
            if alwaysFull {
                energyJoules += power.peak * dt
            } else if wasOn[host] {
                energyJoules += (power.power(at: previous[host]) + power.power(at: utilisation[host])) / 2 * dt
            }
        }
    }

    /// Records every host's state from the cluster as it is now (no time passes), each VM asking
    /// for `demand[vm]`.
    mutating func record(cluster: PlacementCluster, demand vmDemand: [Double], incoming: [[Int]]) {
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
                on[host] = false
                allocated[host] = 0
                requested[host] = 0
                continue
            }
            let core = model.coreCapacity
            let capacity = model.capacity
            func capped(_ vm: Int) -> Double { min(vmDemand[vm], Double(cluster.vms[vm].vcpus) * core) }
            var demand = 0.0
            for vm in residents { demand += capped(vm) }
            for vm in arriving { demand += 0.1 * capped(vm) }
            let scaled = demand > capacity
            let factor = scaled ? capacity / demand : 1
            var hostAllocated = 0.0
            var hostRequested = 0.0
            for vm in residents {
                let request = vmDemand[vm]
                let given = scaled ? (capped(vm) * factor).rounded(.down) : capped(vm)
                hostRequested += request
                hostAllocated += given
                if cluster.isMigrating(vm) {
                    // The VM gets 10 % less while it migrates; the host still counts all of it.
                    let vmGiven = scaled ? (capped(vm) * factor * 0.9).rounded(.down) : capped(vm) * 0.9
                    migratingRequested += request
                    migratingAllocated += vmGiven
                }
            }
            for vm in arriving {
                let reserved = 0.1 * capped(vm)
                hostAllocated += scaled ? (reserved * factor).rounded(.down) : reserved
                hostRequested += vmDemand[vm]
            }
            totalRequested += residents.reduce(0) { $0 + vmDemand[$1] }
            allocated[host] = hostAllocated
            requested[host] = hostRequested
            utilisation[host] = min(1, hostAllocated / capacity)
            on[host] = utilisation[host] > 0 || onWhileHolding
            if hostAllocated < hostRequested { shortHosts += 1 }
        }
    }
}
