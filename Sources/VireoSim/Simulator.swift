import VireoModel
import VireoPlacement

/// What the simulated data centre obeys (docs/sim.md).
public enum SimulationModel: String, Sendable, CaseIterable, Codable {
    /// CloudSim 3.0.3's PlanetLab experiment, for comparison with its published results: memory is
    /// checked only when a VM starts, every migration has the whole link, a VM whose demand drops
    /// to 0 finishes.
    case cloudsim
    /// Real hosts' rules: memory is a hard limit for every policy at every step (a migrating VM
    /// holds it on both hosts), concurrent migrations share each host's link, VMs keep their
    /// memory (and their host on) when idle.
    case realistic

    /// The capacity rules every policy plans with.
    public var placement: PlacementSettings {
        switch self {
        case .cloudsim: .cloudSim
        case .realistic: .realistic
        }
    }
}

/// Timing of a run, in seconds of simulated time.
public struct SimulationSettings: Sendable, Equatable {
    /// Seconds between decision points.
    public var interval: Double
    /// The run stops here.
    public var duration: Double
    /// First decision point (CloudSim: 0.1 s; its events then recur every `interval`).
    public var firstDecision: Double
    /// CloudSim treats a VM whose demand is 0 at an accounting point (and that is not migrating)
    /// as finished and removes it for the rest of the run; true reproduces that.
    public var idleVMsFinish: Bool
    public var model: SimulationModel

    /// `idleVMsFinish` defaults to the model's rule (CloudSim: yes; realistic: VMs stay).
    public init(
        interval: Double = 300, duration: Double = 86_400, firstDecision: Double = 0.1, idleVMsFinish: Bool? = nil,
        model: SimulationModel = .cloudsim
    ) {
        self.interval = interval
        self.duration = duration
        self.firstDecision = firstDecision
        self.idleVMsFinish = idleVMsFinish ?? (model == .cloudsim)
        self.model = model
    }
}

/// Replays a utilisation trace through a placement policy in virtual time — the same policy
/// objects, on the same cluster model, that the controller runs — and measures energy, SLA
/// violations and migrations the way CloudSim 3.0.3 does (docs/sim.md).
///
/// At every decision point VM demands are read from the trace, every host is recorded (its
/// requested and allocated CPU, its utilisation), energy is accounted for the step since the
/// last record, and the policy's migrations are started; each migration ends after its memory
/// has crossed the link, which is recorded as a step of its own.
public final class Simulator {
    public let fleet: SimulationFleet
    public let trace: UtilisationTrace
    public let policy: any PlacementPolicy
    public let settings: SimulationSettings

    private var cluster: PlacementCluster
    private var ledger: SimulationLedger
    private var incoming: [[Int]]
    /// Migrations each host takes part in (realistic: they share its link).
    private var hostMigrations: [Int]
    private var pending: [(time: Double, vm: Int)] = []
    /// What each VM asks for at the current instant (see `updateDemand`).
    private var demand: [Double]

    /// Where VMs start, if not where the policy would place them (a recorded cluster's replay).
    public let start: [Int?]?

    public init(
        fleet: SimulationFleet, trace: UtilisationTrace, policy: any PlacementPolicy, settings: SimulationSettings = .init(),
        start: [Int?]? = nil
    ) throws(VireoError) {
        guard fleet.vms.count == trace.vmCount else {
            throw VireoError(.invalidArgument, "fleet has \(fleet.vms.count) VMs, trace has \(trace.vmCount)")
        }
        guard !fleet.hosts.isEmpty else { throw VireoError(.invalidArgument, "--hosts must be at least 1") }
        self.fleet = fleet
        self.trace = trace
        self.policy = policy
        self.settings = settings
        self.start = start
        cluster = PlacementCluster(
            now: 0, interval: settings.interval, settings: settings.model.placement, hosts: fleet.hosts, vms: fleet.vms)
        ledger = SimulationLedger(hostCount: fleet.hosts.count, onWhileHolding: settings.model == .realistic)
        incoming = Array(repeating: [], count: fleet.hosts.count)
        hostMigrations = Array(repeating: 0, count: fleet.hosts.count)
        demand = fleet.vms.map(\.size)
    }

    /// Runs the whole trace. `progress(done, total)` is called after each decision point, and
    /// `decided(step, cluster, plan)` with each plan and the cluster it was made from, before its
    /// migrations start.
    public func run(
        progress: (Int, Int) -> Void = { _, _ in },
        decided: (Int, PlacementCluster, RebalancePlan) -> Void = { _, _, _ in }
    ) throws(VireoError) -> (SimulationResult, [IntervalSample]) {
        let clock = ContinuousClock()
        let started = clock.now
        if settings.model == .realistic {
            // A VM starts asking for what its first sample says, not for its whole size (CloudSim's
            // start rule): the sample is taken at 0 s, when the VMs are placed.
            updateDemand(at: 0)
            cluster.vmDemand = demand
        }
        let placement = start ?? policy.initialPlacement(cluster)
        // As in CloudSim, a VM that fits no host when it is created never runs.
        var unplaced = 0
        for vm in 0..<cluster.vmCount {
            guard let host = placement[vm] else {
                unplaced += 1
                continue
            }
            cluster.start(vm, on: host)
        }
        guard unplaced < cluster.vmCount else {
            throw VireoError(
                .invalidArgument, "no VM fits any of the \(cluster.hostCount) hosts at the start; add hosts (--hosts)")
        }
        let alwaysFull = policy.powerAccounting == .alwaysFullPower
        var series: [IntervalSample] = []
        var decisions: [Double] = []
        var t = settings.firstDecision
        while t < settings.duration {
            decisions.append(t)
            t += settings.interval
        }
        var lastRecord = 0.0
        var migrations = 0
        var energyAtDecision: [Double] = []
        for (index, now) in decisions.enumerated() {
            finishMigrations(until: now, lastRecord: &lastRecord, alwaysFull: alwaysFull)
            updateDemand(at: now)
            ledger.account(
                until: now, from: lastRecord, cluster: cluster, demand: demand, incoming: incoming, alwaysFull: alwaysFull)
            retireIdleVMs()
            lastRecord = now
            energyAtDecision.append(ledger.energyJoules)
            cluster.now = now
            cluster.hostUtilisation = ledger.utilisation
            observe()
            let active = ledger.on.reduce(0) { $1 ? $0 + 1 : $0 }
            let overloaded = ledger.shortHosts
            let plan = policy.plan(cluster)
            decided(index, cluster, plan)
            let started = startMigrations(plan.actions, at: now)
            migrations += started
            if started > 0 { ledger.record(cluster: cluster, demand: demand, incoming: incoming) }
            series.append(
                IntervalSample(time: now, activeHosts: active, overloadedHosts: overloaded, energyKWh: 0, migrations: started))
            progress(index + 1, decisions.count)
        }
        finishMigrations(until: settings.duration, lastRecord: &lastRecord, alwaysFull: alwaysFull)
        energyAtDecision.append(ledger.energyJoules)
        for i in series.indices { series[i].energyKWh = (energyAtDecision[i + 1] - energyAtDecision[i]) / 3.6e6 }
        let wall = clock.now - started
        let energy = ledger.energyJoules / 3.6e6
        let slatah = ledger.activeSeconds > 0 ? ledger.shortSeconds / ledger.activeSeconds : 0
        let pdm = ledger.requestedSeconds > 0 ? ledger.migrationLossSeconds / ledger.requestedSeconds : 0
        let result = SimulationResult(
            policy: policy.name, trace: trace.source, model: settings.model, hosts: cluster.hostCount,
            vms: cluster.vmCount - unplaced, unplacedVMs: unplaced, finishedVMs: finished,
            energyKWh: energy, slatah: slatah, pdm: pdm, slav: slatah * pdm, esv: energy * slatah * pdm,
            migrations: migrations,
            wallSeconds: Double(wall.components.seconds) + Double(wall.components.attoseconds) / 1e18)
        return (result, series)
    }

    /// The demand at `seconds`. CloudSim's model interpolates between samples, so between two
    /// samples — at its decision points too, 0.1 s after a sample — the demand already leans
    /// towards the next one; the realistic model holds each sample until the next is taken, so
    /// nothing depends on a sample not yet taken.
    private func updateDemand(at seconds: Double) {
        if settings.model == .cloudsim {
            for vm in 0..<cluster.vmCount { demand[vm] = trace.utilisation(vm, at: seconds) * cluster.vms[vm].size }
        } else {
            for vm in 0..<cluster.vmCount { demand[vm] = trace.sample(vm, at: seconds) * cluster.vms[vm].size }
        }
    }

    /// What the policy sees at a decision point: each VM's demand now, and its history of them.
    private func observe() {
        cluster.vmDemand = demand
        cluster.appendHistory((0..<cluster.vmCount).map { cluster.vmDemand[$0] / cluster.vms[$0].size })
    }

    /// Starts the planned migrations; returns how many were started (a VM planned twice counts
    /// twice and goes to its last target).
    private func startMigrations(_ moves: [PlannedMove], at now: Double) -> Int {
        var started = 0
        var startedNow: [Int] = []
        for move in moves {
            let vm = move.vmIndex
            let target = move.toIndex
            guard target >= 0, target < cluster.hostCount, cluster.vmHost[vm] >= 0 else { continue }
            if cluster.isMigrating(vm) {
                let previous = cluster.vmDestination[vm]
                guard previous != target else { continue }
                if let index = incoming[previous].firstIndex(of: vm) { incoming[previous].remove(at: index) }
                hostMigrations[previous] -= 1
                hostMigrations[target] += 1
                pending.removeAll { $0.vm == vm }
            } else if cluster.vmHost[vm] == target {
                continue
            } else {
                hostMigrations[cluster.vmHost[vm]] += 1
                hostMigrations[target] += 1
            }
            cluster.beginMove(vm, to: target)
            incoming[target].append(vm)
            startedNow.append(vm)
            started += 1
        }
        // A VM planned twice in one plan appears twice; it is timed once, to its last target.
        var timed = Set<Int>()
        for vm in startedNow where cluster.isMigrating(vm) && timed.insert(vm).inserted {
            let source = cluster.vmHost[vm]
            let target = cluster.vmDestination[vm]
            var link = cluster.hosts[target].linkMiBPerSecond
            if settings.model == .realistic {
                // Migrations running through a host share its link; a migration's share is fixed when
                // it starts, by the busier of its two hosts.
                link = min(
                    cluster.hosts[source].linkMiBPerSecond / Double(max(1, hostMigrations[source])),
                    link / Double(max(1, hostMigrations[target])))
            }
            pending.append((now + cluster.vms[vm].memoryMiB / link, vm))
        }
        pending.sort { ($0.time, $0.vm) < ($1.time, $1.vm) }
        return started
    }

    /// Completes every migration due before `limit`, one accounting step per completion time.
    private func finishMigrations(until limit: Double, lastRecord: inout Double, alwaysFull: Bool) {
        while let first = pending.first, first.time < limit {
            let now = first.time
            updateDemand(at: now)
            ledger.account(
                until: now, from: lastRecord, cluster: cluster, demand: demand, incoming: incoming, alwaysFull: alwaysFull)
            lastRecord = now
            while let next = pending.first, next.time == now {
                pending.removeFirst()
                let vm = next.vm
                let source = cluster.vmHost[vm]
                let target = cluster.vmDestination[vm]
                if let index = incoming[target].firstIndex(of: vm) { incoming[target].remove(at: index) }
                hostMigrations[source] -= 1
                hostMigrations[target] -= 1
                cluster.completeMove(vm)
            }
            ledger.record(cluster: cluster, demand: demand, incoming: incoming)
            retireIdleVMs()
        }
    }

    /// VMs that finished (see `SimulationSettings.idleVMsFinish`).
    private(set) var finished = 0

    private func retireIdleVMs() {
        guard settings.idleVMsFinish else { return }
        for host in 0..<cluster.hostCount where !cluster.hostVMs[host].isEmpty {
            let done = cluster.hostVMs[host].filter { !cluster.isMigrating($0) && demand[$0] == 0 }
            for vm in done { cluster.stop(vm) }
            finished += done.count
        }
    }
}
