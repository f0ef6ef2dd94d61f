import Foundation
import VireoAPI
import VireoModel
import VireoPlacement

/// Live rebalancing: the cluster as the policies see it (hosts' and VMs' recent CPU from the
/// heartbeats, objectives from the telemetry engine, moves in flight), plans made from it, and
/// their execution through ordinary migrations.
extension ClusterModel {
    // MARK: Usage

    /// A host's CPU over the last three spans as the planner sees it: measured by its agent, else
    /// the sum of its running VMs over its cores; nil before anything was measured.
    func recentCPULoad(of host: HostRecord) -> Double? {
        func mean(_ rates: [Double]) -> Double? { CPUHistory.recentMean(rates, window: 3) }
        if let measured = mean(hostUsage.rates(host.id)) { return measured }
        let vms = (state.vmsByHost[host.id] ?? []).compactMap { mean(vmUsage.rates($0)) }
        guard !vms.isEmpty, host.fingerprint.cpus > 0 else { return nil }
        return vms.reduce(0, +) / Double(host.fingerprint.cpus)
    }

    // MARK: Snapshot

    /// The cluster as a rebalancing policy sees it now, with each application's objectives.
    func rebalanceSnapshot(objectives: [String: [ObjectiveStatus]]) -> RebalanceSnapshot {
        let time = now().timeIntervalSince1970
        let running = state.vms.values
            .filter { $0.state == .running && $0.intent == .running && $0.hostID != nil }
            .sorted { $0.name < $1.name }
        // What VMs that do not run yet hold on each host.
        var reserved: [HostID: ClusterState.Allocation] = state.allocation
        for (host, held) in state.contextHold {
            reserved[host, default: .init()].cpus += held.cpus
            reserved[host, default: .init()].memoryMiB += held.memoryMiB
        }
        for vm in running {
            reserved[vm.hostID!]?.cpus -= vm.spec.cpus
            reserved[vm.hostID!]?.memoryMiB -= vm.spec.memoryMiB
        }
        let hosts = state.hosts.values.sorted { $0.name < $1.name }.map { host in
            RebalanceHost(
                id: host.id, name: host.name, state: host.state, cpus: host.fingerprint.cpus,
                memoryMiB: host.fingerprint.memoryMiB, capabilities: Set(host.fingerprint.capabilities),
                cpuUsageHistory: hostUsage.rates(host.id), linkMiBPerSecond: settings.migrationLinkMiBPerSecond,
                reservedCPUs: max(0, reserved[host.id]?.cpus ?? 0), reservedMemoryMiB: max(0, reserved[host.id]?.memoryMiB ?? 0),
                family: host.fingerprint.migrationFamily)
        }
        // The last move of each VM: cool-down and no going back.
        let lastMove = migrations.lastCompleted
        let vms =
            running
            .map { vm in
                let move = lastMove[vm.id]
                return RebalanceVM(
                    id: vm.id, name: vm.name, host: vm.hostID!, cpus: vm.spec.cpus, memoryMiB: vm.spec.memoryMiB,
                    cpuUsageHistory: vmUsage.rates(vm.id), application: vm.spec.app,
                    lastMovedAt: move.map { ($0.startedAt ?? $0.requestedAt).timeIntervalSince1970 },
                    previousHost: move?.source, pinned: vm.spec.host != nil)
            }
        // When the last move made for each application ended (now, while one is under way).
        let lastActed = plans.lastActed(now: Date(timeIntervalSince1970: time))
        let applications = apps.values.sorted(by: { $0.name < $1.name }).map { app in
            RebalanceApplication(
                name: app.name, objectives: objectives[app.name] ?? [],
                lastMoveEndedAt: lastActed[app.name]?.timeIntervalSince1970)
        }
        let inFlight = migrations.open.filter(\.state.isActive).map {
            MigrationInFlight(vm: $0.vmID, source: $0.source, destination: $0.destination)
        }
        return RebalanceSnapshot(
            now: time, hosts: hosts, vms: vms, applications: applications,
            migrations: inFlight.sorted { $0.vm < $1.vm }, sampleSeconds: vmUsage.span)
    }

}

extension Controller {
    // MARK: Plans

    /// Plans with `policy` (the cluster's if nil, else `slo`). A dry run is returned and
    /// forgotten; with `execute` the moves are started in order and the plan is stored. If a move
    /// cannot be started the ones after it are not started either and the plan fails; moves
    /// already started run to their end (a failed one leaves its VM where it was).
    public func plan(policy name: String? = nil, execute: Bool = false, trigger: PlanTrigger = .manual) async throws
        -> Plan
    {
        let policy = try Self.policy(name ?? model.rebalance.policy ?? "slo")
        var objectives: [String: [ObjectiveStatus]] = [:]
        for app in model.apps.keys { objectives[app] = await telemetry.status(app: app)?.objectives ?? [] }
        let cluster = PlacementCluster(model.rebalanceSnapshot(objectives: objectives), settings: settings.placement)
        let decided = policy.plan(cluster)
        let time = now()
        guard execute else { return Plan(decided, id: "dry-run", state: .dryRun, trigger: trigger, at: time) }
        let plan = Plan(decided, id: Self.newPlanID(at: time), state: .executing, trigger: trigger, at: time)
        return try await write { $0.execute(plan, at: time) }
    }

    /// Brings executing plans up to date with their migrations; a plan ends when all of them have.
    public func settlePlans() async throws {
        guard !model.plans.executing.isEmpty else { return }
        try await write { $0.settlePlans() }
    }

    /// Executed plans, newest first: from the store, with the progress of those still executing.
    public func listPlans(limit: Int = 100) async throws -> PlanList {
        let stored = try await store.plans(limit: limit)
        let plans = model.plans
        let merged =
            stored.map { plans[$0.id] ?? $0 } + plans.newestFirst.filter { plan in !stored.contains { $0.id == plan.id } }
        return PlanList(items: Array(merged.sorted { ($0.createdAt, $0.id) > ($1.createdAt, $1.id) }.prefix(limit)))
    }

    public func storedPlan(_ id: String) async throws -> Plan {
        if let plan = model.plans[id] { return plan }
        guard let plan = try await store.plan(id) else { throw VireoError.notFound("plan", id) }
        return plan
    }

    // MARK: Settings

    public func rebalanceStatus() -> RebalanceStatus {
        model.rebalanceStatus()
    }

    /// Sets how the cluster rebalances itself; refuses an unknown policy or a bad interval and
    /// keeps what was set.
    public func setRebalance(_ new: RebalanceSettings) async throws -> RebalanceStatus {
        if let name = new.policy { _ = try Self.policy(name) }
        guard new.intervalSeconds.isFinite, new.intervalSeconds >= 0.5, new.intervalSeconds <= 86_400 else {
            throw VireoError.invalid(
                field: "intervalSeconds", value: "\(new.intervalSeconds)", "must be between 0.5 and 86400 seconds")
        }
        var settings = new
        settings.policy = new.policy?.lowercased()
        return try await write { model in
            model.setRebalance(settings)
            return model.rebalanceStatus()
        }
    }

    /// Plans and executes under the cluster's policy when its interval has passed.
    public func rebalanceIfDue() async throws {
        guard model.rebalance.policy != nil else { return }
        let time = now()
        if let last = lastRebalanceAt, time.timeIntervalSince(last) < model.rebalance.intervalSeconds { return }
        lastRebalanceAt = time
        _ = try await plan(execute: true, trigger: .automatic)
    }

    /// The policy called `name` (any of `Policies.names`, with parameters); an unknown name is
    /// refused naming `field`.
    public static func policy(_ name: String, field: String = "policy") throws(VireoError) -> any PlacementPolicy {
        do {
            return try Policies.make(name)
        } catch {
            throw VireoError.invalid(field: field, value: "'\(name)'", error.reason)
        }
    }

    static func newPlanID(at time: Date) -> String {
        // Sortable by time, unique by the random tail.
        let stamp = Int64(time.timeIntervalSince1970 * 1000)
        return "p-\(String(stamp, radix: 36))-\(UUID().uuidString.prefix(6).lowercased())"
    }
}

extension ClusterModel {
    func rebalanceStatus() -> RebalanceStatus {
        RebalanceStatus(settings: rebalance, policies: Policies.names, lastPlan: lastAutomaticPlan)
    }

    /// Starts a plan's moves in order and records the plan. A plan with nothing to move made by
    /// the rebalancing loop is kept to be shown (`vireo rebalance`), not stored: the loop plans
    /// every interval.
    mutating func execute(_ plan: Plan, at time: Date) -> Plan {
        var plan = plan
        if plan.actions.isEmpty {
            plan.state = .completed
            plan.endedAt = time
            plan.message = "nothing to move"
            if plan.trigger == .automatic {
                setLastAutomaticPlan(plan)
                return plan
            }
        }
        var failure: String?
        for index in plan.actions.indices {
            if let failure {
                plan.actions[index].outcome = .skipped
                plan.actions[index].outcomeMessage = "not started: \(failure)"
                continue
            }
            let action = plan.actions[index]
            do {
                let migration = try startMigration(
                    action.vmID.rawValue, to: action.to, reason: "plan \(plan.id) (\(plan.policy)): \(action.explanation)")
                plan.actions[index].migration = migration.id
                plan.actions[index].outcome = .migration(migration.state)
            } catch {
                let reason = (error as? VireoError)?.message ?? "\(error)"
                failure = "moving \(action.vm) could not start: \(reason)"
                plan.actions[index].outcome = .skipped
                plan.actions[index].outcomeMessage = reason
            }
        }
        if let failure {
            plan.message = failure
            if !plan.actions.contains(where: { $0.migration != nil }) {
                plan.state = .failed
                plan.endedAt = time
            }
        }
        if plan.trigger == .automatic { setLastAutomaticPlan(plan) }
        put(plan)
        events.publish(
            .plan, name: plan.id, to: plan.state.rawValue,
            message: "\(plan.policy): "
                + (plan.actions.isEmpty
                    ? "nothing to move" : plan.actions.map { "\($0.vm) \($0.from)→\($0.to)" }.joined(separator: ", ")),
            at: time)
        return plan
    }

    mutating func settlePlans() {
        let time = now()
        for var plan in plans.executing {
            let before = plan
            for index in plan.actions.indices {
                guard let id = plan.actions[index].migration, let migration = migrations[id] else { continue }
                plan.actions[index].outcome = .migration(migration.state)
                plan.actions[index].outcomeMessage = migration.message
                plan.actions[index].downtimeMs = migration.stats?.downtimeMs
                plan.actions[index].endedAt = migration.endedAt
            }
            let started = plan.actions.filter { $0.migration != nil }
            if started.allSatisfy({ $0.endedAt != nil }) {
                let failed = plan.actions.filter(\.outcome.isFailure)
                plan.state = failed.isEmpty ? .completed : .failed
                plan.endedAt = time
                if let first = failed.first, plan.message == nil {
                    plan.message = "moving \(first.vm) failed: \(first.outcomeMessage ?? "no reason given")"
                }
            }
            guard plan != before else { continue }
            // Progress alone stays in memory; outcomes are written.
            put(plan, durable: plan.state != before.state || plan.actions.map(\.outcome) != before.actions.map(\.outcome))
            if plan.state != before.state {
                events.publish(
                    .plan, name: plan.id, from: before.state.rawValue, to: plan.state.rawValue, message: plan.message, at: time)
            }
        }
    }
}
