import Foundation
import Logging
import Metrics
import Synchronization
import VireoAPI
import VireoModel
import VireoPlacement
import VireoStore
import VireoTelemetry
import VireoTelemetryStore

/// Owns the desired state of the cluster.
///
/// Every mutation takes the serial lock, validates against the in-memory state, writes the store
/// and only then updates memory and publishes events: memory never shows what is not durable,
/// and a rejected or failed request changes nothing. Reads do not take the lock.
public actor Controller {
    public nonisolated let settings: ControllerSettings
    public nonisolated let events: EventLog
    let store: any ClusterStore
    let now: @Sendable () -> Date
    let logger: Logger
    let lock = SerialLock()
    var state: ClusterState
    /// Where each VM's console output has been taken in up to, in its host's console log (the
    /// text itself is in the store). Not part of `state`: output arriving must not invalidate
    /// cached responses.
    var consoleOffsets: [VMID: UInt64]
    /// Every migration, by ID (the store has them all).
    var migrations: [MigrationID: Migration]
    /// Those still under way or not yet settled by their destination: what heartbeats look at,
    /// so that a long history costs them nothing.
    var openMigrations: Set<MigrationID>
    /// Applications by name (the store has them all).
    var apps: [String: AppRecord]
    /// Application samples, series and SLO evaluation.
    public nonisolated let telemetry: TelemetryEngine
    private let gauges: StateGauges
    let sloGauges: SLOGauges
    /// Recent CPU of hosts (fractions of their capacity) and VMs (cores), from heartbeats.
    var hostUsage = UsageHistory<HostID>()
    var vmUsage = UsageHistory<VMID>()
    /// Executed rebalancing plans by ID (the store has them all).
    var plans: [String: Plan]
    /// How the cluster rebalances itself.
    var rebalance: RebalanceSettings
    var lastRebalanceAt: Date?
    /// The last plan the rebalancing loop made, with or without moves.
    var lastAutomaticPlan: Plan?
    /// `TelemetryEngine.statusVersion` when the SLO gauges were last set.
    var gaugedStatusVersion = -1
    private let publishedVersion: Mutex<Int>

    init(
        store: any ClusterStore, loaded: StoredCluster, consoleOffsets: [VMID: UInt64], settings: ControllerSettings,
        now: @escaping @Sendable () -> Date, logger: Logger, metricsFactory: any MetricsFactory, telemetry: TelemetryEngine
    ) {
        self.apps = Dictionary(loaded.apps.map { ($0.name, $0) }, uniquingKeysWith: { _, b in b })
        self.plans = Dictionary(loaded.plans.map { ($0.id, $0) }, uniquingKeysWith: { _, b in b })
        self.rebalance = settings.rebalance ?? loaded.rebalance ?? RebalanceSettings()
        self.telemetry = telemetry
        self.sloGauges = SLOGauges(factory: metricsFactory)
        self.consoleOffsets = consoleOffsets
        self.migrations = Dictionary(loaded.migrations.map { ($0.id, $0) }, uniquingKeysWith: { _, b in b })
        self.openMigrations = Set(loaded.migrations.filter(\.isOpen).map(\.id))
        self.store = store
        self.settings = settings
        self.now = now
        self.logger = logger
        self.events = EventLog()
        self.gauges = StateGauges(factory: metricsFactory)
        let startedAt = now()
        var initial = ClusterState()
        for var host in loaded.hosts {
            // Give every known agent a full timeout to report after a controller restart.
            host.lastHeartbeatAt = max(host.lastHeartbeatAt, startedAt)
            initial.put(host)
        }
        for vm in loaded.vms { initial.put(vm, replacing: vm.id) }
        gauges.update(initial)
        self.state = initial
        self.publishedVersion = Mutex(initial.version)
    }

    /// Loads the store (which migrates its schema on open) and returns a controller over it.
    public static func open(
        store: any ClusterStore, settings: ControllerSettings = .init(), now: @escaping @Sendable () -> Date = { Date() },
        logger: Logger = Logger(label: "vireo.controller"), metricsFactory: any MetricsFactory = MetricsSystem.factory,
        telemetry: TelemetryEngine? = nil
    ) async throws -> Controller {
        let loaded = try await store.load()
        let consoleOffsets = try await store.consoleOffsets()
        if let rebalance = settings.rebalance, rebalance != loaded.rebalance {
            // Given at start (`--rebalance`): it is what the cluster does from now on.
            try await store.commit(StoreBatch(rebalance: rebalance))
        }
        let engine = try telemetry ?? TelemetryEngine(store: SeriesStore())
        await engine.configure(loaded.apps.map(\.spec))
        try await engine.restore(now: Int64(now().timeIntervalSince1970 * 1000))
        return Controller(
            store: store, loaded: loaded, consoleOffsets: consoleOffsets, settings: settings, now: now, logger: logger,
            metricsFactory: metricsFactory, telemetry: engine)
    }

    /// Changes whenever anything visible through the API changes; readable without waiting for
    /// the actor, so HTTP handlers can serve cached responses.
    public nonisolated var version: Int { publishedVersion.withLock { $0 } }

    /// Called after every change to memory.
    func didChange() {
        gauges.update(state)
        publishedVersion.withLock { $0 = state.version }
    }

    // MARK: Reads

    public func listVMs(after cursor: String? = nil, limit: Int = 100) -> VMPage {
        let names = state.names(after: cursor, limit: limit)
        // Listings are summaries: the placement explanation is on the VM's own resource.
        let items = names.compactMap { state.vm(named: $0).map { view($0, withPlacement: false) } }
        let next = names.count == limit && names.last != state.sortedNames.last ? names.last : nil
        return VMPage(items: items, next: next)
    }

    public func vm(_ reference: String) throws -> VMView {
        view(try lookupVM(reference))
    }

    public func listHosts() -> HostList {
        HostList(items: state.hosts.values.sorted { $0.name < $1.name }.map(view))
    }

    public func host(_ reference: String) throws -> HostView {
        if let host = state.host(named: reference) ?? state.hosts[HostID(reference)] { return view(host) }
        throw VireoError.notFound("host", reference)
    }

    func lookupVM(_ reference: String) throws(VireoError) -> VirtualMachine {
        if let vm = state.vm(named: reference) ?? state.vms[VMID(reference)] { return vm }
        throw VireoError.notFound("VM", reference)
    }

    func view(_ vm: VirtualMachine, withPlacement: Bool = true) -> VMView {
        VMView(vm, hostName: vm.hostID.flatMap { state.hosts[$0]?.name }, withPlacement: withPlacement)
    }

    func view(_ host: HostRecord) -> HostView {
        let a = state.allocation[host.id] ?? ClusterState.Allocation()
        return HostView(
            host, allocatedCPUs: a.cpus, allocatedMemoryMiB: a.memoryMiB, vms: a.vms, cpuLoad: recentCPULoad(of: host))
    }

    // MARK: Writing

    /// Writes `batch`, then applies it to memory. Call with the lock held.
    func commit(
        vms: [VirtualMachine] = [], deleting: [VMID] = [], hosts: [HostRecord] = [], migrations: [Migration] = []
    ) async throws {
        let batch = StoreBatch(updatedVMs: vms, deletedVMs: deleting, hosts: hosts, migrations: migrations)
        guard !batch.isEmpty else { return }
        try await store.commit(batch)
        for host in hosts { state.put(host) }
        for vm in vms { state.put(vm, replacing: vm.id) }
        for id in deleting {
            state.put(nil, replacing: id)
            consoleOffsets[id] = nil
        }
        didChange()
    }

    /// Moves `vm` to `next` if the state machine allows it, and publishes the change. Only a
    /// running VM has an address.
    func transition(_ vm: inout VirtualMachine, to next: VMState, message: String?, at time: Date) {
        defer { if vm.state != .running { vm.address = nil } }
        guard vm.state != next else {
            vm.message = message
            return
        }
        guard vm.state.canTransition(to: next) else {
            logger.warning("ignored invalid transition", metadata: ["vm": "\(vm.name)", "from": "\(vm.state)", "to": "\(next)"])
            return
        }
        events.publish(.vmState, name: vm.name, from: vm.state.rawValue, to: next.rawValue, message: message, at: time)
        vm.state = next
        vm.message = message
        vm.stateChangedAt = time
        vm.updatedAt = time
    }
}

/// `vireo_vms{state}` and `vireo_hosts{state}`, kept current through swift-metrics.
struct StateGauges: Sendable {
    let vms: [VMState: Gauge]
    let hosts: [HostState: Gauge]

    init(factory: any MetricsFactory) {
        vms = Dictionary(uniqueKeysWithValues: VMState.allCases.map {
            ($0, Gauge(label: "vireo_vms", dimensions: [("state", $0.rawValue)], factory: factory))
        })
        hosts = Dictionary(uniqueKeysWithValues: HostState.allCases.map {
            ($0, Gauge(label: "vireo_hosts", dimensions: [("state", $0.rawValue)], factory: factory))
        })
    }

    func update(_ state: ClusterState) {
        for (s, gauge) in vms { gauge.record(state.vmCountByState[s] ?? 0) }
        var hostCounts: [HostState: Int] = [:]
        for host in state.hosts.values { hostCounts[host.state, default: 0] += 1 }
        for (s, gauge) in hosts { gauge.record(hostCounts[s] ?? 0) }
    }
}

/// `vireo_slo_error_budget_remaining{app,objective}`, `vireo_slo_burn_rate{app,objective,window}`
/// and `vireo_slo_state{app,objective,state}` (1 for the current state), through swift-metrics.
final class SLOGauges: Sendable {
    private let factory: any MetricsFactory
    private let gauges = Mutex<[String: Gauge]>([:])

    init(factory: any MetricsFactory) { self.factory = factory }

    func update(_ statuses: [String: [ObjectiveStatus]]) {
        var values: [String: (label: String, dimensions: [(String, String)], value: Double)] = [:]
        for (app, objectives) in statuses {
            for o in objectives {
                let base = [("app", app), ("objective", o.name)]
                values["b|\(app)|\(o.name)"] = ("vireo_slo_error_budget_remaining", base, o.errorBudgetRemaining)
                for rate in o.burnRates {
                    let window = DurationText.format(rate.lookbackSeconds)
                    values["r|\(app)|\(o.name)|\(window)"] = ("vireo_slo_burn_rate", base + [("window", window)], rate.rate)
                }
                for state in SLOState.allCases {
                    values["s|\(app)|\(o.name)|\(state.rawValue)"] = (
                        "vireo_slo_state", base + [("state", state.rawValue)], o.state == state ? 1 : 0
                    )
                }
            }
        }
        gauges.withLock { gauges in
            for (key, gauge) in gauges where values[key] == nil {
                gauge.destroy()
                gauges[key] = nil
            }
            for (key, v) in values {
                let gauge = gauges[key] ?? Gauge(label: v.label, dimensions: v.dimensions, factory: factory)
                gauges[key] = gauge
                gauge.record(v.value)
            }
        }
    }
}
