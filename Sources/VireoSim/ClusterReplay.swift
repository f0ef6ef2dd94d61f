import Foundation
import VireoAPI
import VireoModel
import VireoPlacement

/// A running cluster's recorded history (`GET /v1/history`) as a simulation: its hosts (in cores,
/// a core being 1.0 of CPU), its VMs with the CPU they used step by step, and where each of them
/// actually ran — so that any policy can be replayed on what really happened, and compared with
/// what the cluster really did (`RecordedPolicy`) under the same metrics.
///
/// Every VM that ran in the window takes part from the start, on the host it was first seen on,
/// asking for nothing while it did not run (it keeps its memory, as in the realistic model).
/// A VM's CPU is its measured cores over its vCPUs, capped at its size (what a hypervisor's
/// threads used beyond it does not fit a utilisation trace). Hosts draw the unmetered power curve
/// (50 W a core idle, 100 W at full load), so energy compares policies, not real watts.
public struct ClusterReplay: Sendable {
    public var trace: UtilisationTrace
    public var fleet: SimulationFleet
    /// Host index each VM ran on at each step, -1 where it did not run: `recorded[vm][step]`.
    public var recorded: [[Int]]
    public var stepSeconds: Double
    public var steps: Int
    /// Migrations the cluster started in the window, and the policies that asked for them.
    public var migrations: [ClusterHistory.Migration]

    public init(_ history: ClusterHistory, linkMiBPerSecond: Double = 1_024) throws(VireoError) {
        let steps = history.steps
        guard steps > 0, history.stepSeconds > 0 else {
            throw VireoError(.invalidArgument, "the history from \(history.from) to \(history.to) has no complete step")
        }
        var hostIndex: [String: Int] = [:]
        let hosts = history.hosts.enumerated().map { index, host in
            hostIndex[host.name] = index
            return PlacementHost(
                id: host.id, name: host.name, cores: host.cpus, memoryMiB: Double(host.memoryMiB),
                capabilities: CapabilitySet(host.capabilities), linkMiBPerSecond: linkMiBPerSecond,
                power: .unmetered(cores: host.cpus), model: host.driver)
        }
        let ran = history.vms.filter { vm in vm.host.contains { $0.map { hostIndex[$0] != nil } ?? false } }
        guard !ran.isEmpty else {
            throw VireoError(.invalidArgument, "no VM ran on a recorded host between \(history.from) and \(history.to)")
        }
        var samples: [UInt16] = []
        samples.reserveCapacity(ran.count * steps)
        var recorded: [[Int]] = []
        for vm in ran {
            for step in 0..<steps {
                let cores = step < vm.cpuCores.count ? vm.cpuCores[step] ?? 0 : 0
                let fraction = min(1, max(0, cores / Double(max(1, vm.cpus))))
                samples.append(UInt16((fraction * 10_000).rounded()))
            }
            recorded.append((0..<steps).map { step in step < vm.host.count ? vm.host[step].flatMap { hostIndex[$0] } ?? -1 : -1 })
        }
        trace = UtilisationTrace(
            source: "cluster \(history.from.formatted(.iso8601))+\(steps)×\(history.stepSeconds)s", vmNames: ran.map(\.name),
            samplesPerVM: steps, samples: samples, sampleSeconds: Double(history.stepSeconds))
        fleet = SimulationFleet(
            hosts: hosts,
            vms: ran.map { vm in
                PlacementVM(
                    id: vm.id, name: vm.name, vcpus: vm.cpus, memoryMiB: Double(vm.memoryMiB), application: vm.app)
            })
        self.recorded = recorded
        stepSeconds = Double(history.stepSeconds)
        self.steps = steps
        migrations = history.migrations
    }

    /// The host each VM was first seen on: where every policy's replay starts.
    public var start: [Int?] { recorded.map { row in row.first { $0 >= 0 } } }

    /// Settings for replaying the window: the realistic model, a decision at every recorded step.
    public var settings: SimulationSettings {
        SimulationSettings(
            interval: stepSeconds, duration: Double(steps) * stepSeconds, firstDecision: 0, model: .realistic)
    }

    /// What the cluster really did, as a policy: it moves each VM to the host it was recorded on.
    public var policy: RecordedPolicy { RecordedPolicy(recorded: recorded, stepSeconds: stepSeconds) }
}

/// Replays the placement a cluster recorded: at each step every VM goes where it was seen at that
/// step. Run through the simulator it measures what really happened with the same metrics as
/// the policies it is compared with.
public struct RecordedPolicy: PlacementPolicy {
    public let name = "recorded"
    public let recorded: [[Int]]
    public let stepSeconds: Double

    public func initialPlacement(_ cluster: PlacementCluster) -> [Int?] {
        recorded.map { row in row.first { $0 >= 0 } }
    }

    public func plan(_ cluster: PlacementCluster) -> RebalancePlan {
        var plan = RebalancePlan(policy: name)
        let step = Int((cluster.now / stepSeconds).rounded())
        for vm in 0..<min(cluster.vmCount, recorded.count) where step < recorded[vm].count {
            let target = recorded[vm][step]
            let source = cluster.vmHost[vm]
            guard target >= 0, source >= 0, target != source, !cluster.isMigrating(vm) else { continue }
            let memory = cluster.vms[vm].memoryMiB
            plan.actions.append(
                PlannedMove(
                    vm: vm, from: source, to: target, in: cluster, reason: .recorded(kind: "recorded"),
                    detail: "the cluster moved \(cluster.vms[vm].name) to \(cluster.hosts[target].name) here",
                    sourceLoad: HostLoadChange(host: cluster.hosts[source].name, before: 0, after: 0),
                    destinationLoad: HostLoadChange(host: cluster.hosts[target].name, before: 0, after: 0),
                    cost: MigrationCost(
                        totalSeconds: memory / cluster.hosts[target].linkMiBPerSecond, downtimeSeconds: 0,
                        transferredMiB: memory, iterations: 1)))
        }
        return plan
    }
}
