import Foundation
import Logging
import VireoAPI
import VireoModel
import VireoStore

/// Everything the controller knows about the cluster, as one value: hosts and VMs with their
/// indexes, migrations, applications, plans and recent usage.
///
/// The controller's single writer changes a draft of it — a copy of the committed model — and
/// every change also goes into `changes`, the store batch written for the draft; only when the
/// store has accepted that batch does the draft become the committed model that readers see.
/// So the code that decides (`extension ClusterModel` in the files beside this one) is
/// synchronous: it never waits, never holds a lock, and cannot interleave with another decision.
struct ClusterModel {
    let settings: ControllerSettings
    let now: @Sendable () -> Date
    let logger: Logger

    var state = ClusterState()
    /// Where each VM's console output has been taken in up to, in its host's console log (the
    /// text itself is in the store).
    var consoleOffsets: [VMID: UInt64] = [:]
    var migrations = MigrationBook()
    /// Applications by name.
    var apps: [String: AppRecord] = [:]
    /// Executed rebalancing plans.
    var plans = PlanBook()
    /// How the cluster rebalances itself.
    var rebalance = RebalanceSettings()
    /// The last plan the rebalancing loop made, with or without moves.
    var lastAutomaticPlan: Plan?
    /// Recent CPU of hosts (fractions of their capacity) and VMs (cores), from heartbeats.
    var hostUsage = UsageHistory<HostID>()
    var vmUsage = UsageHistory<VMID>()

    /// What the draft changed since the last commit: the store batch and the events to publish
    /// once it is written.
    var changes = PendingChanges()
    /// The events published once the draft is committed.
    var events: PendingEvents {
        get { changes.events }
        set { changes.events = newValue }
    }

    init(settings: ControllerSettings, now: @escaping @Sendable () -> Date, logger: Logger) {
        self.settings = settings
        self.now = now
        self.logger = logger
    }

    // MARK: Changing

    /// Records VM, host and migration changes in the draft and its store batch.
    mutating func commit(
        vms: [VirtualMachine] = [], deleting: [VMID] = [], hosts: [HostRecord] = [], migrations: [Migration] = []
    ) {
        for host in hosts {
            state.put(host)
            changes.hosts[host.id] = host
        }
        for vm in vms {
            state.put(vm, replacing: vm.id)
            changes.put(vm)
        }
        for id in deleting {
            state.put(nil, replacing: id)
            consoleOffsets[id] = nil
            vmUsage.forget(id)
            self.migrations.forget(vm: id)
            changes.delete(id)
        }
        for migration in migrations { remember(migration) }
        changes.count += 1
    }

    /// A new VM.
    mutating func insert(_ vm: VirtualMachine) {
        state.put(vm, replacing: vm.id)
        changes.insert(vm)
    }

    /// Records a migration in memory and in the batch.
    mutating func remember(_ migration: Migration) {
        migrations.put(migration, vmExists: state.vms[migration.vmID] != nil)
        changes.migrations[migration.id] = migration
        changes.count += 1
    }

    /// Keeps a migration's progress in memory only: it changes every heartbeat and means nothing
    /// after a restart.
    mutating func rememberProgress(_ migration: Migration) {
        migrations.put(migration, vmExists: state.vms[migration.vmID] != nil)
        changes.count += 1
        changes.visible = true
    }

    mutating func put(_ app: AppRecord) {
        apps[app.name] = app
        changes.apps[app.name] = .some(app)
        changes.count += 1
    }

    mutating func deleteApp(_ name: String) {
        apps[name] = nil
        changes.apps[name] = .some(nil)
        changes.count += 1
    }

    /// Records a plan; `durable` false keeps it in memory only (progress alone).
    mutating func put(_ plan: Plan, durable: Bool = true) {
        plans.put(plan)
        if lastAutomaticPlan?.id == plan.id { lastAutomaticPlan = plan }
        if durable { changes.plans[plan.id] = plan }
        changes.count += 1
        changes.visible = true
    }

    mutating func setRebalance(_ settings: RebalanceSettings) {
        rebalance = settings
        changes.rebalance = settings
        changes.count += 1
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
    /// Bumped by every change, so the writer can tell whether a failed decision changed anything.
    var count = 0
    /// Something readers see changed without a record to write (a plan's or a migration's
    /// progress). Liveness alone (a heartbeat's time) is not: it must not invalidate caches.
    var visible = false

    mutating func insert(_ vm: VirtualMachine) {
        vms[vm.id] = .insert(vm)
        count += 1
    }

    mutating func put(_ vm: VirtualMachine) {
        if case .insert = vms[vm.id] { vms[vm.id] = .insert(vm) } else { vms[vm.id] = .update(vm) }
        count += 1
    }

    mutating func delete(_ id: VMID) {
        if case .insert = vms[id] { vms[id] = nil } else { vms[id] = .delete }
        count += 1
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
