import VireoModel
import VireoPlacement

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

    public init(interval: Double = 300, duration: Double = 86_400, firstDecision: Double = 0.1, idleVMsFinish: Bool = true) {
        self.interval = interval
        self.duration = duration
        self.firstDecision = firstDecision
        self.idleVMsFinish = idleVMsFinish
    }
}

/// Replays a utilisation trace through a consolidation policy in virtual time and measures
/// energy, SLA violations and migrations the way CloudSim 3.0.3 does (docs/sim.md).
///
/// At every decision point VM demands are read from the trace, every host is recorded (its
/// requested and allocated MIPS, its utilisation), energy is accounted for the step since the
/// last record, and the policy's migrations are started; each migration ends after its memory
/// has crossed the link, which is recorded as a step of its own.
public final class Simulator {
    public let fleet: SimulationFleet
    public let trace: UtilisationTrace
    public let policy: any ConsolidationPolicy
    public let settings: SimulationSettings

    private var cluster: ConsolidationCluster
    private var ledger: SimulationLedger
    private var incoming: [[Int]]
    private var migrationTarget: [Int]
    private var pending: [(time: Double, vm: Int)] = []

    public init(
        fleet: SimulationFleet, trace: UtilisationTrace, policy: any ConsolidationPolicy,
        settings: SimulationSettings = .init()
    ) throws(VireoError) {
        guard fleet.vmMIPS.count == trace.vmCount else {
            throw VireoError(.invalidArgument, "fleet has \(fleet.vmMIPS.count) VMs, trace has \(trace.vmCount)")
        }
        guard !fleet.hosts.isEmpty else { throw VireoError(.invalidArgument, "--hosts must be at least 1") }
        self.fleet = fleet
        self.trace = trace
        self.policy = policy
        self.settings = settings
        cluster = ConsolidationCluster(
            hosts: fleet.hosts, vmMIPS: fleet.vmMIPS, vmMemoryMB: fleet.vmMemoryMB, interval: settings.interval)
        ledger = SimulationLedger(hostCount: fleet.hosts.count)
        incoming = Array(repeating: [], count: fleet.hosts.count)
        migrationTarget = Array(repeating: -1, count: trace.vmCount)
    }

    /// Runs the whole trace. `progress(done, total)` is called after each decision point.
    public func run(progress: (Int, Int) -> Void = { _, _ in }) throws(VireoError) -> (SimulationResult, [IntervalSample]) {
        let clock = ContinuousClock()
        let started = clock.now
        let placement = policy.initialPlacement(cluster)
        // As in CloudSim, a VM that fits no host when it is created never runs.
        var unplaced = 0
        for vm in 0..<cluster.vmCount {
            guard let host = placement[vm] else {
                unplaced += 1
                continue
            }
            cluster.vmHost[vm] = host
            cluster.hostVMs[host].append(vm)
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
            ledger.account(until: now, from: lastRecord, cluster: cluster, incoming: incoming, alwaysFull: alwaysFull)
            retireIdleVMs()
            lastRecord = now
            energyAtDecision.append(ledger.energyJoules)
            cluster.time = now
            cluster.hostUtilisation = ledger.utilisation
            cluster.appendHistory((0..<cluster.vmCount).map { cluster.vmRequestedMIPS[$0] / cluster.vmMIPS[$0] })
            let active = ledger.utilisation.reduce(0) { $1 > 0 ? $0 + 1 : $0 }
            let overloaded = ledger.shortHosts
            let started = startMigrations(policy.plan(cluster), at: now)
            migrations += started
            if started > 0 { ledger.record(cluster: cluster, incoming: incoming) }
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
        let pdm = ledger.requestedMIPSSeconds > 0 ? ledger.migrationLossMIPSSeconds / ledger.requestedMIPSSeconds : 0
        let result = SimulationResult(
            policy: policy.name, trace: trace.source, hosts: cluster.hostCount, vms: cluster.vmCount - unplaced,
            unplacedVMs: unplaced, finishedVMs: finished,
            energyKWh: energy, slatah: slatah, pdm: pdm, slav: slatah * pdm, esv: energy * slatah * pdm,
            migrations: migrations,
            wallSeconds: Double(wall.components.seconds) + Double(wall.components.attoseconds) / 1e18)
        return (result, series)
    }

    private func updateDemand(at seconds: Double) {
        for vm in 0..<cluster.vmCount {
            cluster.vmRequestedMIPS[vm] = trace.utilisation(vm, at: seconds) * cluster.vmMIPS[vm]
        }
    }

    /// Starts the planned migrations; returns how many were started (a VM planned twice counts
    /// twice and goes to its last target).
    private func startMigrations(_ plan: [PlannedMigration], at now: Double) -> Int {
        var started = 0
        for move in plan {
            let vm = move.vm
            guard move.target >= 0, move.target < cluster.hostCount else { continue }
            if cluster.vmMigrating[vm] {
                let previous = migrationTarget[vm]
                guard previous >= 0, previous != move.target else { continue }
                if let index = incoming[previous].firstIndex(of: vm) { incoming[previous].remove(at: index) }
                pending.removeAll { $0.vm == vm }
            } else if cluster.vmHost[vm] == move.target {
                continue
            }
            cluster.vmMigrating[vm] = true
            cluster.vmLastMigrationStart[vm] = now
            migrationTarget[vm] = move.target
            incoming[move.target].append(vm)
            let seconds = cluster.hosts[move.target].migrationSeconds(memoryMB: cluster.vmMemoryMB[vm])
            pending.append((now + seconds, vm))
            started += 1
        }
        pending.sort { ($0.time, $0.vm) < ($1.time, $1.vm) }
        return started
    }

    /// Completes every migration due before `limit`, one accounting step per completion time.
    private func finishMigrations(until limit: Double, lastRecord: inout Double, alwaysFull: Bool) {
        while let first = pending.first, first.time < limit {
            let now = first.time
            updateDemand(at: now)
            ledger.account(until: now, from: lastRecord, cluster: cluster, incoming: incoming, alwaysFull: alwaysFull)
            lastRecord = now
            while let next = pending.first, next.time == now {
                pending.removeFirst()
                let vm = next.vm
                let source = cluster.vmHost[vm]
                let target = migrationTarget[vm]
                if let index = cluster.hostVMs[source].firstIndex(of: vm) { cluster.hostVMs[source].remove(at: index) }
                if let index = incoming[target].firstIndex(of: vm) { incoming[target].remove(at: index) }
                cluster.hostVMs[target].append(vm)
                cluster.vmHost[vm] = target
                cluster.vmMigrating[vm] = false
                migrationTarget[vm] = -1
            }
            ledger.record(cluster: cluster, incoming: incoming)
            retireIdleVMs()
        }
    }

    /// VMs that finished (see `SimulationSettings.idleVMsFinish`).
    private(set) var finished = 0

    private func retireIdleVMs() {
        guard settings.idleVMsFinish else { return }
        for host in 0..<cluster.hostCount where !cluster.hostVMs[host].isEmpty {
            let done = cluster.hostVMs[host].filter { !cluster.vmMigrating[$0] && cluster.vmRequestedMIPS[$0] == 0 }
            guard !done.isEmpty else { continue }
            cluster.hostVMs[host].removeAll { done.contains($0) }
            for vm in done { cluster.vmHost[vm] = -1 }
            finished += done.count
        }
    }
}
