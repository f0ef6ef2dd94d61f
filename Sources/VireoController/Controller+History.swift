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
        let source = try await write { model in
            model.startNextUsageStep()
            return model.closedUsageStep
        }
        // Made off the actor and off the cooperative pool, whose threads (one per core) serve
        // every request, and paced like the write: at 100,000 VMs a fifth of a CPU-second.
        let share = settings.historyShare
        let step = await withCheckedContinuation { continuation in
            DispatchQueue.global(qos: .utility).async {
                var pacer = Pacer(share: share)
                continuation.resume(
                    returning: source.step(start: start, seconds: Double(stepMs) / 1000, objectives: objectives, pacer: &pacer))
            }
        }
        try await history.record(
            step, deletingBefore: now().addingTimeInterval(-settings.historyRetention.seconds), share: share)
    }

    /// The start of the step `time` falls in, milliseconds since the epoch: steps are aligned to
    /// multiples of their length.
    static func stepStart(of time: Date, stepMs: Int64) -> Int64 {
        let ms = Int64((time.timeIntervalSince1970 * 1000).rounded(.down))
        return ms - ((ms % stepMs) + stepMs) % stepMs
    }
}

/// What a usage-history step is made from, taken once the step is closed: the closed step's
/// readings, which nothing changes any more, and the hosts and applications (small tables, copied
/// if the model changes them meanwhile), so the step is made off the actor.
struct UsageStepSource: Sendable {
    let hosts: [HostID: HostRecord]
    let apps: [String: AppRecord]
    /// The closed step's readings only: the meter's tables of the step under way change with
    /// every heartbeat, and holding them here would copy them.
    let readings: (vms: [VMID: UsageStepMeter.Readings], hosts: [HostID: UsageStepMeter.Readings])

    /// The step: every host, every VM reported running during it (where it lives), every
    /// application with the state of its worst objective; in no particular order (the archive
    /// reads them back in order of name, and sorting 100,000 names cost some 40 ms a step).
    func step(start: Date, seconds: Double, objectives: [String: [ObjectiveStatus]], pacer: inout Pacer) -> UsageStep {
        var hosts: [UsageStep.Host] = []
        hosts.reserveCapacity(self.hosts.count)
        for host in self.hosts.values {
            hosts.append(
                UsageStep.Host(
                    id: host.id, name: host.name, fingerprint: host.fingerprint, cpuLoad: readings.hosts[host.id]?.cpuRate))
            pacer.pause()
        }
        var vms: [UsageStep.VM] = []
        vms.reserveCapacity(readings.vms.count)
        for (id, readings) in readings.vms {
            pacer.pause()
            guard let vm = readings.vm, self.hosts[vm.host] != nil else { continue }
            vms.append(
                UsageStep.VM(
                    id: id, name: vm.name, app: vm.app, cpus: vm.cpus, memoryMiB: vm.memoryMiB, host: vm.host,
                    cpuCores: readings.cpuRate, residentMiB: readings.residentMiB))
        }
        let applications = apps.values.map { app in
            UsageStep.Application(
                name: app.name, objectives: app.spec.objectives, state: SLOState.worst((objectives[app.name] ?? []).map(\.state)))
        }
        return UsageStep(start: start, seconds: seconds, hosts: hosts, vms: vms, applications: applications)
    }
}

extension ClusterModel {
    /// The step closed last (by `startNextUsageStep`).
    var closedUsageStep: UsageStepSource {
        UsageStepSource(hosts: state.hosts, apps: apps, readings: stepUsage.closed)
    }
}

extension Controller {
    /// How long before a window a plan may have been made and still have started a migration in
    /// it: a plan starts its moves as it is stored, so moments, unless the writer was held up.
    static let planLookbackSeconds = 300.0

    /// The recording step, whole seconds.
    public nonisolated var historyStepSeconds: Int { Int(settings.historyStepMs / 1000) }

    /// What was recorded over the window `query` asks for, ending with the last complete step:
    /// `GET /v1/history`. Read and assembled off the actor: only the host names and the latest
    /// word on the window's migrations are asked of it, so a long window never holds up a
    /// heartbeat.
    public nonisolated func history(_ query: HistoryQuery) async throws -> ClusterHistory {
        let stepMs = Int64(query.stepSeconds) * 1000
        let to = Self.stepStart(of: now(), stepMs: stepMs)
        let from = to - Int64(query.steps) * stepMs
        let (start, end) = (Date(timeIntervalSince1970: Double(from) / 1000), Date(timeIntervalSince1970: Double(to) / 1000))
        let recording = try await history.recording(
            from: start, stepSeconds: Double(query.stepSeconds), count: query.steps)
        let stored = try await store.migrations(requestedFrom: start, to: end)
        let plans = try await store.plans(createdFrom: start.addingTimeInterval(-Self.planLookbackSeconds), to: end)
        let (hostNames, migrations) = await current(stored)
        return ClusterHistory(
            recording, from: start, to: end, stepSeconds: query.stepSeconds, hostNames: hostNames,
            migrations: migrations, plans: plans)
    }

    /// The names of the cluster's hosts, and `migrations` as they are now (an open one may have
    /// moved on since the store was read).
    private func current(_ migrations: [Migration]) -> ([HostID: String], [Migration]) {
        (model.state.hosts.mapValues(\.name), migrations.map { model.migrations[$0.id] ?? $0 })
    }
}

extension ClusterHistory {
    /// The recording on its time axis, with host names (from the recording, else the cluster's),
    /// and the migrations with the plan that started each.
    init(
        _ recording: UsageRecording, from: Date, to: Date, stepSeconds: Int, hostNames: [HostID: String],
        migrations: [VireoModel.Migration], plans: [Plan]
    ) {
        var names = hostNames
        for host in recording.hosts { names[host.id] = host.name }
        let name = { (id: HostID) in names[id] ?? id.rawValue }
        var origin: [MigrationID: Plan] = [:]
        for plan in plans {
            for action in plan.actions { if let id = action.migration { origin[id] = plan } }
        }
        self.init(
            from: from, to: to, stepSeconds: stepSeconds,
            hosts: recording.hosts.map { host in
                ClusterHistory.Host(
                    name: host.name, id: host.id, cpus: host.fingerprint.cpus, memoryMiB: host.fingerprint.memoryMiB,
                    driver: host.fingerprint.driver, capabilities: host.fingerprint.capabilities,
                    attributes: host.fingerprint.attributes, cpuLoad: host.cpuLoad.nilIfNoneMeasured)
            },
            vms: recording.vms.map { vm in
                ClusterHistory.VM(
                    name: vm.name, id: vm.id, cpus: vm.cpus, memoryMiB: vm.memoryMiB, app: vm.app,
                    host: vm.host.map { $0.map(name) }, cpuCores: vm.cpuCores, residentMiB: vm.residentMiB.nilIfNoneMeasured)
            },
            applications: recording.applications.map {
                ClusterHistory.Application(name: $0.name, objectives: $0.objectives, state: $0.state)
            },
            migrations: migrations.map { migration in
                let plan = origin[migration.id]
                return ClusterHistory.Migration(
                    id: migration.id, vm: migration.vmName, vmID: migration.vmID, from: name(migration.source),
                    to: name(migration.destination), state: migration.state, reason: migration.reason,
                    requestedAt: migration.requestedAt, startedAt: migration.startedAt, endedAt: migration.endedAt,
                    downtimeMs: migration.stats?.downtimeMs, plan: plan?.id, policy: plan?.policy)
            })
    }
}

extension Array where Element == Double? {
    /// nil when no entry holds a value: a series nothing measured is left out rather than shown
    /// as a row of nulls.
    var nilIfNoneMeasured: Self? { contains { $0 != nil } ? self : nil }
}
