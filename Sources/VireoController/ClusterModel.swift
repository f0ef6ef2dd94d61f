import Foundation
import Logging
import VireoAPI
import VireoModel
import VireoPlacement
import VireoStore

/// Everything the controller knows about the cluster, as one value: hosts and VMs with their
/// indexes, migrations, applications, plans and recent usage.
///
/// The controller keeps two copies: the committed model that reads see, and the draft its single
/// writer decides on. Every change goes through `apply` here, which makes it on the draft and
/// keeps it, with the store batch in `changes`, to be made again on the committed model once the
/// store has accepted the batch. So the code that decides (`extension ClusterModel` in the files
/// beside this one) is synchronous: it never waits, never holds a lock, and cannot interleave
/// with another decision; and a group of decisions costs memory and time in proportion to what
/// it changed, not to the size of the cluster.
struct ClusterModel {
    let settings: ControllerSettings
    let now: @Sendable () -> Date
    let logger: Logger

    private(set) var state = ClusterState()
    /// Where each VM's console output has been taken in up to, in its host's console log (the
    /// text itself is in the store).
    private(set) var consoleOffsets: [VMID: UInt64] = [:]
    private(set) var migrations = MigrationBook()
    /// Applications by name.
    private(set) var apps: [String: AppRecord] = [:]
    /// Executed rebalancing plans.
    private(set) var plans = PlanBook()
    /// How the cluster rebalances itself.
    private(set) var rebalance = RebalanceSettings()
    /// The last plan the rebalancing loop made, with or without moves.
    private(set) var lastAutomaticPlan: Plan?
    /// Recent CPU of hosts (fractions of their capacity) and VMs (cores), from heartbeats.
    private(set) var hostUsage = UsageHistory<HostID>()
    private(set) var vmUsage = UsageHistory<VMID>()
    /// The usage-history step under way: what heartbeats reported since it began.
    private(set) var stepUsage = UsageStepMeter()

    /// What the draft changed since the last commit: the store batch, the events to publish once
    /// it is written, and the changes to make again on the committed model.
    var changes = PendingChanges()
    /// The events published once the draft is committed.
    var events: PendingEvents {
        get { changes.events }
        set { changes.events = newValue }
    }

    init(
        settings: ControllerSettings, now: @escaping @Sendable () -> Date, logger: Logger, loaded: StoredCluster,
        consoleOffsets: [VMID: UInt64]
    ) {
        self.settings = settings
        self.now = now
        self.logger = logger
        self.apps = Dictionary(loaded.apps.map { ($0.name, $0) }, uniquingKeysWith: { _, b in b })
        for plan in loaded.plans { plans.put(plan) }
        self.rebalance = settings.rebalance ?? loaded.rebalance ?? RebalanceSettings()
        self.consoleOffsets = consoleOffsets
        let startedAt = now()
        for var host in loaded.hosts {
            // Give every known agent a full timeout to report after a controller restart.
            host.lastHeartbeatAt = max(host.lastHeartbeatAt, startedAt)
            state.put(host)
        }
        for vm in loaded.vms { state.put(vm, replacing: vm.id) }
        for migration in loaded.migrations { migrations.put(migration, vmExists: state.vms[migration.vmID] != nil) }
    }

    // MARK: Changing

    /// Makes `change` on this model and keeps it to be made again on the committed one.
    private mutating func apply(_ change: @escaping (inout ClusterModel) -> Void) {
        change(&self)
        changes.replay.append(change)
        changes.count += 1
    }

    /// Makes the changes a committed draft made (`draft.changes.replay`) on this model.
    mutating func replay(_ changes: [(inout ClusterModel) -> Void]) {
        for change in changes { change(&self) }
    }

    /// Records VM, host and migration changes in the draft and its store batch.
    mutating func commit(
        vms: [VirtualMachine] = [], deleting: [VMID] = [], hosts: [HostRecord] = [], migrations: [Migration] = []
    ) {
        for host in hosts { changes.hosts[host.id] = host }
        for vm in vms {
            noteDesiredChange(vm, was: state.vms[vm.id])
            changes.put(vm)
        }
        for id in deleting { changes.delete(id) }
        for migration in migrations {
            noteDesiredChange(migration)
            changes.migrations[migration.id] = migration
        }
        apply { model in
            for host in hosts { model.state.put(host) }
            for vm in vms { model.state.put(vm, replacing: vm.id) }
            for id in deleting {
                model.state.put(nil, replacing: id)
                model.consoleOffsets[id] = nil
                model.vmUsage.forget(id)
                model.stepUsage.forget(vm: id)
                model.migrations.forget(vm: id)
            }
            for migration in migrations {
                model.migrations.put(migration, vmExists: model.state.vms[migration.vmID] != nil)
            }
        }
    }

    /// Placement's view of the hosts, kept in the state between decisions (derived, so it is made
    /// outside `apply`: the committed model builds its own when it needs one).
    mutating func keptPlacementCluster() -> PlacementCluster {
        state.keptPlacementCluster(settings: settings.placement)
    }

    /// A new VM.
    mutating func insert(_ vm: VirtualMachine) {
        noteDesiredChange(vm, was: nil)
        changes.insert(vm)
        apply { $0.state.put(vm, replacing: vm.id) }
    }

    /// A host's liveness (its last heartbeat), kept in memory only: writing every heartbeat would
    /// cost a disk write per host per second for no durable value.
    mutating func touch(_ host: HostRecord) {
        apply { $0.state.put(host) }
    }

    /// Records in memory what a host's contexts hold (they are the host's, not the store's).
    mutating func holdForContexts(_ hold: ClusterState.Allocation, on host: HostID) {
        guard state.contextHold[host] ?? .init() != hold else { return }
        apply { $0.state.setContextHold(hold, on: host) }
    }

    // MARK: Which hosts' desired state changes

    /// Notes the hosts whose desired state a VM's new record changes (placed, moved, started,
    /// stopped, deleted, respecified), for `DesiredStateWatch`. What the agents report (state,
    /// address) changes nothing they are asked to do.
    private mutating func noteDesiredChange(_ vm: VirtualMachine, was old: VirtualMachine?) {
        if let old, old.hostID == vm.hostID, old.intent == vm.intent, old.generation == vm.generation,
            old.spec == vm.spec
        {
            return
        }
        for host in [old?.hostID, vm.hostID] { if let host { changes.wake.insert(host) } }
    }

    /// A migration's two hosts, when what they are told about it changes (not its progress).
    private mutating func noteDesiredChange(_ migration: Migration) {
        let old = migrations[migration.id]
        if let old, old.state == migration.state, old.incomingURI == migration.incomingURI,
            old.destinationSettled == migration.destinationSettled, old.sourceSettled == migration.sourceSettled
        {
            return
        }
        changes.wake.insert(migration.source)
        changes.wake.insert(migration.destination)
    }

    /// The hosts of an application's VMs: how to read its signals is part of their desired state.
    private mutating func noteDesiredChange(app name: String) {
        for vm in state.vms.values where vm.spec.app == name {
            if let host = vm.hostID { changes.wake.insert(host) }
        }
    }

    /// Records a migration in memory and in the batch.
    mutating func remember(_ migration: Migration) {
        commit(migrations: [migration])
    }

    /// Keeps a live migration's TLS credentials in memory only: they are secrets, and a migration
    /// that has not begun by a restart is failed rather than run without them.
    mutating func keepCredentials(_ pair: MigrationCredentialPair, for id: MigrationID) {
        apply { $0.migrations.keep(pair, for: id) }
    }

    /// Keeps a migration's progress in memory only: it changes every heartbeat and means nothing
    /// after a restart.
    mutating func rememberProgress(_ migration: Migration) {
        noteDesiredChange(migration)
        changes.visible = true
        apply { $0.migrations.put(migration, vmExists: $0.state.vms[migration.vmID] != nil) }
    }

    mutating func put(_ app: AppRecord) {
        noteDesiredChange(app: app.name)
        changes.apps[app.name] = .some(app)
        apply { $0.apps[app.name] = app }
    }

    mutating func deleteApp(_ name: String) {
        noteDesiredChange(app: name)
        changes.apps[name] = .some(nil)
        apply { $0.apps[name] = nil }
    }

    /// Records a plan; `durable` false keeps it in memory only (progress alone).
    mutating func put(_ plan: Plan, durable: Bool = true) {
        if durable { changes.plans[plan.id] = plan }
        changes.visible = true
        apply { model in
            model.plans.put(plan)
            if model.lastAutomaticPlan?.id == plan.id { model.lastAutomaticPlan = plan }
        }
    }

    /// The rebalancing loop's last plan, shown by `vireo rebalance`.
    mutating func setLastAutomaticPlan(_ plan: Plan) {
        apply { $0.lastAutomaticPlan = plan }
    }

    mutating func setRebalance(_ settings: RebalanceSettings) {
        changes.rebalance = settings
        apply { $0.rebalance = settings }
    }

    mutating func setConsoleOffsets(_ offsets: [VMID: UInt64]) {
        apply { model in
            // The VM may have gone while the store wrote.
            for (id, next) in offsets where model.state.vms[id] != nil { model.consoleOffsets[id] = next }
        }
    }

    /// Takes in the CPU and memory readings of a heartbeat.
    mutating func recordUsage(_ heartbeat: AgentHeartbeat, at time: Date) {
        apply { model in
            let seconds = time.timeIntervalSince1970
            let host = heartbeat.hostID
            if let cpu = heartbeat.hostCPU, cpu.capacity > 0 {
                model.hostUsage.record(host, value: cpu.busySeconds, at: seconds, scale: cpu.capacity)
                model.stepUsage.take(host: host, busySeconds: cpu.busySeconds, capacity: cpu.capacity, at: seconds)
            }
            for report in heartbeat.instances where report.state == .running {
                // During a move both hosts report the VM: only the one it lives on counts.
                guard let vm = model.state.vms[report.id], vm.hostID == host else { continue }
                if let cpu = report.cpuSeconds { model.vmUsage.record(report.id, value: cpu, at: seconds) }
                model.stepUsage.take(
                    vm: report.id,
                    facts: .init(name: vm.name, app: vm.spec.app, cpus: vm.spec.cpus, memoryMiB: vm.spec.memoryMiB, host: host),
                    cpuSeconds: report.cpuSeconds, residentBytes: report.residentBytes, at: seconds)
            }
        }
    }

    /// Starts the next usage-history step (the one that ended is then read from `stepUsage.closed`).
    mutating func startNextUsageStep() {
        apply { $0.stepUsage.startStep() }
    }
}

/// The changes of a draft not yet written, coalesced per record so that a VM created and changed
/// in one commit is one insert, and one created and deleted is nothing.
struct PendingChanges {
    enum VMChange {
        case insert(VirtualMachine)
        case update(VirtualMachine)
        case delete
    }
    var vms: [VMID: VMChange] = [:]
    var hosts: [HostID: HostRecord] = [:]
    var migrations: [MigrationID: Migration] = [:]
    /// nil value: deleted.
    var apps: [String: AppRecord?] = [:]
    var plans: [String: Plan] = [:]
    var rebalance: RebalanceSettings?
    var events = PendingEvents()
    /// The changes made to the draft, in order, to be made again on the committed model.
    var replay: [(inout ClusterModel) -> Void] = []
    /// Bumped by every change, so the writer can tell whether a failed decision changed anything.
    var count = 0
    /// Something readers see changed without a record to write (a plan's or a migration's
    /// progress). Liveness alone (a heartbeat's time) is not: it must not invalidate caches.
    var visible = false
    /// Hosts whose desired state changed: `DesiredStateWatch` wakes them once this is committed.
    var wake: Set<HostID> = []

    mutating func insert(_ vm: VirtualMachine) {
        vms[vm.id] = .insert(vm)
    }

    mutating func put(_ vm: VirtualMachine) {
        var vm = vm
        switch vms[vm.id] {
        case .insert(let earlier), .update(let earlier):
            // The state keeps no explanation: one made since the last commit still goes to the store.
            vm.placement = vm.placement ?? earlier.placement
        case .delete, nil: break
        }
        // Not yet in the store: still an insert.
        if case .insert = vms[vm.id] { vms[vm.id] = .insert(vm) } else { vms[vm.id] = .update(vm) }
    }

    mutating func delete(_ id: VMID) {
        if case .insert = vms[id] { vms[id] = nil } else { vms[id] = .delete }
    }

    /// What the store writes, in one transaction.
    var batch: StoreBatch {
        var batch = StoreBatch(
            hosts: hosts.values.sorted { $0.id < $1.id }, migrations: migrations.values.sorted { $0.id < $1.id },
            apps: apps.values.compactMap { $0 }.sorted { $0.name < $1.name },
            deletedApps: apps.filter { $0.value == nil }.map(\.key).sorted(),
            plans: plans.values.sorted { $0.id < $1.id }, rebalance: rebalance)
        for (id, change) in vms.sorted(by: { $0.key < $1.key }) {
            switch change {
            case .insert(let vm): batch.insertedVMs.append(vm)
            case .update(let vm): batch.updatedVMs.append(vm)
            case .delete: batch.deletedVMs.append(id)
            }
        }
        return batch
    }
}

/// Events a draft publishes once it is committed, with `EventLog.publish`'s signature so the
/// deciding code reads the same either way.
struct PendingEvents {
    struct Event {
        var kind: ClusterEvent.Kind
        var name: String
        var from: String?
        var to: String?
        var message: String?
        var time: Date
    }
    private(set) var list: [Event] = []

    mutating func publish(
        _ kind: ClusterEvent.Kind, name: String, from: String? = nil, to: String? = nil, message: String? = nil,
        at time: Date
    ) {
        list.append(Event(kind: kind, name: name, from: from, to: to, message: message, time: time))
    }
}
