import Foundation
import VireoAPI
import VireoModel
import VireoStore
import VireoTelemetry

/// The usage history: every step (`ControllerSettings.historyStep`) the controller records where
/// each VM ran and what it used, each host's CPU and each application's worst objective, durably
/// and for `historyRetention`, so what the cluster did can be replayed through the placement
/// policies (`vireo sim --from-cluster`).
extension Controller {
    /// Records the step that ended, once the clock has passed its end; the loops call it every
    /// tick. The step is read and the next one started in one decision of the writer (so no
    /// heartbeat falls between them), then written to the archive outside it: recording never
    /// holds up a decision, and heartbeats only add to the step's counters. If ticks were late by
    /// several steps, what was measured meanwhile is recorded as the last of them.
    public func recordUsageIfDue() async throws {
        let stepMs = settings.historyStepMs
        let current = Self.stepStart(of: now(), stepMs: stepMs)
        guard current > historyStepStart else { return }
        historyStepStart = current
        let start = Date(timeIntervalSince1970: Double(current - stepMs) / 1000)
        let objectives = await telemetry.allStatuses()
        let step = try await write { model in
            let step = model.usageStep(start: start, seconds: Double(stepMs) / 1000, objectives: objectives)
            model.startNextUsageStep()
            return step
        }
        try await history.record(step, deletingBefore: now().addingTimeInterval(-settings.historyRetention.seconds))
    }

    /// The start of the step `time` falls in, milliseconds since the epoch: steps are aligned to
    /// multiples of their length.
    static func stepStart(of time: Date, stepMs: Int64) -> Int64 {
        let ms = Int64((time.timeIntervalSince1970 * 1000).rounded(.down))
        return ms - ((ms % stepMs) + stepMs) % stepMs
    }
}

extension ClusterModel {
    /// The step under way as it stands: every host, every VM that runs or was reported running
    /// during it (where it is now), every application with the state of its worst objective.
    func usageStep(start: Date, seconds: Double, objectives: [String: [ObjectiveStatus]]) -> UsageStep {
        let hosts = state.hosts.values.sorted { $0.name < $1.name }.map { host in
            UsageStep.Host(
                id: host.id, name: host.name, fingerprint: host.fingerprint, cpuLoad: stepUsage.cpuLoad(of: host.id))
        }
        let vms = state.vms.values.compactMap { vm -> UsageStep.VM? in
            guard let host = vm.hostID, state.hosts[host] != nil, vm.state == .running || stepUsage.wasReported(vm.id)
            else { return nil }
            return UsageStep.VM(
                id: vm.id, name: vm.name, app: vm.spec.app, cpus: vm.spec.cpus, memoryMiB: vm.spec.memoryMiB, host: host,
                cpuCores: stepUsage.cpuCores(of: vm.id), residentMiB: stepUsage.residentMiB(of: vm.id))
        }.sorted { $0.name < $1.name }
        let applications = apps.values.sorted { $0.name < $1.name }.map { app in
            UsageStep.Application(
                name: app.name, objectives: app.spec.objectives,
                state: SLOState.worst((objectives[app.name] ?? []).map(\.state)))
        }
        return UsageStep(start: start, seconds: seconds, hosts: hosts, vms: vms, applications: applications)
    }
}
