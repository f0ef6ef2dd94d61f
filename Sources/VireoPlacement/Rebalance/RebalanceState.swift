import VireoModel

/// How loaded a destination may become: `protected` where VMs with objectives run or would run
/// after the move, `other` elsewhere (a busy host whose VMs have no objectives hurts nobody).
struct LoadLimit {
    var protected: Double
    var other: Double
    var highest: Double { max(protected, other) }
}

/// The cluster as a plan unfolds: CPU demand and allocations per host, migrations per host,
/// updated as moves are planned so that each next move sees the effect of the earlier ones.
struct RebalanceState {
    let snapshot: RebalanceSnapshot
    let placement: PlacementSettings
    let costModel: MigrationCostModel
    let budget: MigrationBudget
    /// Host index by id.
    let hostIndex: [HostID: Int]
    /// Host index of each VM (nil if its host is not in the snapshot).
    private(set) var vmHost: [Int?]
    /// Recent mean CPU demand of each VM, cores.
    let vmDemand: [Double]
    /// VM indices per host.
    private(set) var residents: [[Int]]
    /// CPU demand per host, cores.
    private(set) var demand: [Double]
    private(set) var allocatedCPUs: [Int]
    private(set) var allocatedMemoryMiB: [Int]
    /// Anti-affinity groups per host, with a VM name holding each.
    private(set) var groups: [[String: String]]
    private(set) var hostMigrations: [Int]
    private(set) var clusterMigrations: Int
    private(set) var migrating: [Bool]
    /// Cores of the largest host: bounds how little a VM can add to any host's load.
    let maxCPUs: Int
    /// Applications that have objectives.
    let objectiveApps: Set<String>

    init(
        _ snapshot: RebalanceSnapshot, window: Int, placement: PlacementSettings, costModel: MigrationCostModel,
        budget: MigrationBudget
    ) {
        self.snapshot = snapshot
        self.placement = placement
        self.costModel = costModel
        self.budget = budget
        var hostIndex: [HostID: Int] = [:]
        hostIndex.reserveCapacity(snapshot.hosts.count)
        for (index, host) in snapshot.hosts.enumerated() where hostIndex[host.id] == nil { hostIndex[host.id] = index }
        self.hostIndex = hostIndex
        let hostCount = snapshot.hosts.count
        var residents = [[Int]](repeating: [], count: hostCount)
        var vmSum = [Double](repeating: 0, count: hostCount)
        var cpus = [Int](repeating: 0, count: hostCount)
        var memory = [Int](repeating: 0, count: hostCount)
        var groups = [[String: String]](repeating: [:], count: hostCount)
        var vmHost = [Int?](repeating: nil, count: snapshot.vms.count)
        var vmDemand = [Double](repeating: 0, count: snapshot.vms.count)
        for (index, vm) in snapshot.vms.enumerated() {
            vmDemand[index] = RebalanceState.recentMean(vm.cpuUsageHistory, window: window)
            guard let host = hostIndex[vm.host] else { continue }
            vmHost[index] = host
            residents[host].append(index)
            vmSum[host] += vmDemand[index]
            cpus[host] += vm.cpus
            memory[host] += vm.memoryMiB
            if let group = vm.antiAffinityGroup, groups[host][group] == nil { groups[host][group] = vm.name }
        }
        var demand = vmSum
        for (index, host) in snapshot.hosts.enumerated() where !host.cpuUsageHistory.isEmpty {
            // What the host measures includes what its VMs' counters miss (emulation, I/O threads).
            demand[index] = RebalanceState.recentMean(host.cpuUsageHistory, window: window) * Double(host.cpus)
        }
        var vmIndex: [VMID: Int] = [:]
        if !snapshot.migrations.isEmpty {
            for (index, vm) in snapshot.vms.enumerated() { vmIndex[vm.id] = index }
        }
        var hostMigrations = [Int](repeating: 0, count: hostCount)
        var migrating = [Bool](repeating: false, count: snapshot.vms.count)
        for migration in snapshot.migrations {
            if let source = hostIndex[migration.source] { hostMigrations[source] += 1 }
            if let destination = hostIndex[migration.destination] {
                hostMigrations[destination] += 1
                // The destination holds the incoming VM's allocation and will carry its demand.
                if let vm = vmIndex[migration.vm] {
                    cpus[destination] += snapshot.vms[vm].cpus
                    memory[destination] += snapshot.vms[vm].memoryMiB
                    demand[destination] += vmDemand[vm]
                }
            }
            if let vm = vmIndex[migration.vm] { migrating[vm] = true }
        }
        self.vmHost = vmHost
        self.vmDemand = vmDemand
        self.residents = residents
        self.demand = demand
        self.allocatedCPUs = cpus
        self.allocatedMemoryMiB = memory
        self.groups = groups
        self.hostMigrations = hostMigrations
        self.clusterMigrations = snapshot.migrations.count
        self.migrating = migrating
        self.maxCPUs = snapshot.hosts.map(\.cpus).max() ?? 0
        self.objectiveApps = Set(snapshot.applications.filter { !$0.objectives.isEmpty }.map(\.name))
    }

    /// Does the VM belong to an application with objectives?
    func hasObjectives(_ vm: Int) -> Bool {
        snapshot.vms[vm].application.map { objectiveApps.contains($0) } ?? false
    }

    /// The load `vm` may bring `destination` to under `limit`.
    func limit(_ limit: LoadLimit, for vm: Int, on destination: Int) -> Double {
        if hasObjectives(vm) || residents[destination].contains(where: hasObjectives) { return limit.protected }
        return limit.other
    }

    /// Mean of the last `window` samples (all of them if fewer); 0 without samples.
    static func recentMean(_ samples: [Double], window: Int) -> Double {
        CPUHistory.recentMean(samples, window: window) ?? 0
    }

    /// CPU demand over cores (0 for a host without cores).
    func load(_ host: Int) -> Double {
        let cpus = snapshot.hosts[host].cpus
        return cpus > 0 ? demand[host] / Double(cpus) : 0
    }

    func hostName(_ host: Int) -> String { snapshot.hosts[host].name }

    var clusterBudgetLeft: Bool { clusterMigrations < budget.perCluster }

    func hostBudgetLeft(_ host: Int) -> Bool { hostMigrations[host] < budget.perHost }

    /// Why `host` cannot send its VMs, if it cannot.
    func sourceProblem(_ host: Int) -> FilterReason? {
        let source = snapshot.hosts[host]
        if source.state != .ready { return .hostNotReady(state: source.state) }
        if !source.capabilities.contains(CapabilitySet([.liveMigration])) { return .missingCapability(.liveMigration) }
        return nil
    }

    /// Can `destination` take `vm`, and at what predicted load and cost?
    /// `loadLimit`: refuse destinations whose predicted load would exceed it.
    /// `returnBlockSeconds`: refuse the host the VM left less than this long ago.
    func evaluate(
        _ vm: Int, on destination: Int, loadLimit: LoadLimit?, returnBlockSeconds: Double = 0
    ) -> (RebalanceHostVerdict, MigrationCost?) {
        let host = snapshot.hosts[destination]
        let request = snapshot.vms[vm]
        func filtered(_ reason: RebalanceFilterReason) -> (RebalanceHostVerdict, MigrationCost?) {
            (RebalanceHostVerdict(host: host.name, filtered: reason, loadAfter: nil), nil)
        }
        if host.state != .ready { return filtered(.placement(.hostNotReady(state: host.state))) }
        if request.previousHost == host.id, let movedAt = request.lastMovedAt,
            snapshot.now - movedAt < returnBlockSeconds
        {
            return filtered(.recentlyLeft(secondsAgo: snapshot.now - movedAt, blockSeconds: returnBlockSeconds))
        }
        if !host.capabilities.contains(CapabilitySet([.liveMigration])) {
            return filtered(.placement(.missingCapability(.liveMigration)))
        }
        let cpuCapacity = Int((Double(host.cpus) * placement.cpuOvercommit).rounded(.down))
        let memoryCapacity = Int((Double(host.memoryMiB) * placement.memoryOvercommit).rounded(.down))
        let freeCPU = max(0, cpuCapacity - allocatedCPUs[destination])
        let freeMemory = max(0, memoryCapacity - allocatedMemoryMiB[destination])
        if request.cpus > freeCPU {
            return filtered(.placement(.insufficientCPU(requested: request.cpus, free: freeCPU)))
        }
        if request.memoryMiB > freeMemory {
            return filtered(.placement(.insufficientMemory(requestedMiB: request.memoryMiB, freeMiB: freeMemory)))
        }
        if let group = request.antiAffinityGroup, let holder = groups[destination][group] {
            return filtered(.antiAffinity(group: group, vm: holder))
        }
        if !hostBudgetLeft(destination) { return filtered(.hostMigrationBudget(limit: budget.perHost)) }
        let loadAfter = host.cpus > 0 ? (demand[destination] + vmDemand[vm]) / Double(host.cpus) : .infinity
        if let loadLimit {
            let limit = limit(loadLimit, for: vm, on: destination)
            if loadAfter > limit { return filtered(.wouldOverload(predicted: loadAfter, limit: limit)) }
        }
        let bandwidth = min(host.linkMiBPerSecond, vmHost[vm].map { snapshot.hosts[$0].linkMiBPerSecond } ?? 0)
        switch costModel.cost(
            memoryMiB: Double(request.memoryMiB), dirtyMiBPerSecond: request.dirtyRateMiBPerSecond,
            bandwidthMiBPerSecond: bandwidth)
        {
        case .failure(let error): return filtered(.doesNotConverge(error))
        case .success(let cost):
            return (RebalanceHostVerdict(host: host.name, filtered: nil, loadAfter: loadAfter), cost)
        }
    }

    /// Host indices by current load, least loaded first (ties: snapshot order). Valid until the
    /// next `apply`.
    func hostsByLoad() -> [Int] {
        let loads = snapshot.hosts.indices.map { load($0) }
        return snapshot.hosts.indices.sorted { (loads[$0], $0) < (loads[$1], $1) }
    }

    /// The destination with the lowest predicted load after the move (ties: snapshot order),
    /// and the verdicts on the destinations.
    ///
    /// Small clusters (at most `4 × keep` hosts) get a verdict for every host. Large ones are
    /// scanned in `order` (from `hostsByLoad()`), least loaded first, stopping once no further
    /// host can beat the best one (its load plus the VM's share of the largest host already
    /// exceeds it); verdicts are condensed to the first of each filter kind and counts by kind
    /// (`scored`: fitted but worse; `not-evaluated`: more loaded than the chosen host).
    func bestDestination(
        for vm: Int, loadLimit: LoadLimit?, returnBlockSeconds: Double = 0, order: [Int]? = nil, keep: Int = 16
    ) -> (
        best: (host: Int, loadAfter: Double, cost: MigrationCost)?, verdicts: DestinationVerdicts
    ) {
        let source = vmHost[vm]
        var best: (host: Int, loadAfter: Double, cost: MigrationCost)?
        var verdicts: [RebalanceHostVerdict] = []
        var omitted: [String: Int] = [:]
        let hostCount = snapshot.hosts.count
        let keepAll = hostCount <= keep * 4 || order == nil
        let scan = keepAll ? Array(0..<hostCount) : (order ?? [])
        let smallestShare = maxCPUs > 0 ? vmDemand[vm] / Double(maxCPUs) : 0
        var scored = 0
        var evaluated = 0
        for destination in scan {
            if !keepAll {
                let bound = load(destination) + smallestShare
                if let best, bound >= best.loadAfter { break }
                if let loadLimit, bound > loadLimit.highest { break }
            }
            evaluated += 1
            guard destination != source else { continue }
            let (verdict, cost) = evaluate(
                vm, on: destination, loadLimit: loadLimit, returnBlockSeconds: returnBlockSeconds)
            if let loadAfter = verdict.loadAfter, let cost, best.map({ loadAfter < $0.loadAfter }) ?? true {
                best = (destination, loadAfter, cost)
            }
            if keepAll {
                verdicts.append(verdict)
            } else if let filtered = verdict.filtered {
                // The first of each kind of filter keeps its sentence; the rest are counted.
                if omitted[filtered.kind] == nil && verdicts.count < keep {
                    verdicts.append(verdict)
                    omitted[filtered.kind] = 0
                } else {
                    omitted[filtered.kind, default: 0] += 1
                }
            } else {
                scored += 1
            }
        }
        if !keepAll {
            if let best {
                verdicts.insert(
                    RebalanceHostVerdict(host: hostName(best.host), filtered: nil, loadAfter: best.loadAfter), at: 0)
                scored -= 1
            }
            omitted["scored"] = scored
            omitted["not-evaluated"] = scan.count - evaluated
        }
        omitted = omitted.filter { $0.value > 0 }
        return (best, DestinationVerdicts(verdicts: verdicts, omitted: omitted))
    }

    /// Records a planned move: demand, allocations and budgets follow the VM.
    mutating func apply(_ vm: Int, to destination: Int) {
        guard let source = vmHost[vm] else { return }
        let request = snapshot.vms[vm]
        demand[source] = max(0, demand[source] - vmDemand[vm])
        demand[destination] += vmDemand[vm]
        allocatedCPUs[source] -= request.cpus
        allocatedCPUs[destination] += request.cpus
        allocatedMemoryMiB[source] -= request.memoryMiB
        allocatedMemoryMiB[destination] += request.memoryMiB
        if let group = request.antiAffinityGroup {
            if groups[source][group] == request.name { groups[source][group] = nil }
            groups[destination][group] = request.name
        }
        residents[source].removeAll { $0 == vm }
        residents[destination].append(vm)
        vmHost[vm] = destination
        hostMigrations[source] += 1
        hostMigrations[destination] += 1
        clusterMigrations += 1
        migrating[vm] = true
    }

    /// A planned move with its loads before and after, for the plan.
    mutating func record(
        _ vm: Int, to destination: Int, cost: MigrationCost, reason: MoveReason, explanation: String,
        effect: ObjectiveEffect?
    ) -> PlannedMove? {
        guard let source = vmHost[vm] else { return nil }
        let sourceBefore = load(source)
        let destinationBefore = load(destination)
        apply(vm, to: destination)
        let request = snapshot.vms[vm]
        return PlannedMove(
            vm: request.id, vmName: request.name, from: snapshot.hosts[source].id, fromName: hostName(source),
            to: snapshot.hosts[destination].id, toName: hostName(destination), reason: reason,
            explanation: explanation, objectiveEffect: effect,
            sourceLoad: HostLoadChange(host: hostName(source), before: sourceBefore, after: load(source)),
            destinationLoad: HostLoadChange(
                host: hostName(destination), before: destinationBefore, after: load(destination)),
            cost: cost)
    }
}
