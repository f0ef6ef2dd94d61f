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
/// One writer: every mutation is a synchronous decision over the writer's draft of the
/// `ClusterModel`, queued with `write`. The writer takes every decision queued, applies them in
/// order to the draft, writes their changes to the store in one transaction (group commit), and
/// only then makes the same changes on the model that reads see and publishes the events. So
/// memory never shows what is not durable, a rejected request changes nothing, a failed store
/// write changes nothing, and no lock is held across an await: reads never wait for a write.
public actor Controller {
    public nonisolated let settings: ControllerSettings
    public nonisolated let events: EventLog
    let store: any ClusterStore
    public nonisolated let now: @Sendable () -> Date
    let logger: Logger
    /// The committed model: what reads see.
    private(set) var model: ClusterModel
    /// The writer's copy: the committed model plus the decisions of the group being written. Its
    /// own storage, so deciding never copies the cluster; after a commit the group's changes are
    /// made again on `model`, after a failed one it starts again from `model`.
    private var draft: ClusterModel
    /// Decisions waiting for the writer.
    private var queued: [QueuedWrite] = []
    private var writing = false
    /// Application samples, series and SLO evaluation.
    public nonisolated let telemetry: TelemetryEngine
    private let gauges: StateGauges
    let sloGauges: SLOGauges
    var lastRebalanceAt: Date?
    /// `TelemetryEngine.statusVersion` when the SLO gauges were last set.
    var gaugedStatusVersion = -1
    /// Asks the applications' Prometheus sources.
    let prometheus = PrometheusQueryClient()
    /// Alert rules' states and the notifications sent.
    var alertBook = AlertBook()
    /// The questions to Prometheus sources under way, by application.
    var sourceRounds: [String: Task<Void, Never>] = [:]
    private let publishedVersion: Mutex<Int>
    /// The cluster's usage, step by step.
    let history: any UsageArchive
    /// Where the usage-history step under way began, milliseconds since the epoch.
    var historyStepStart: Int64
    /// The hosts' desktop contexts and the verbs on their way to them.
    let contextDesk = ContextDesk()
    /// A generation per host that agents wait on between heartbeats.
    public nonisolated let desiredWatch = DesiredStateWatch()
    /// The desired state last sent to each host, by revision.
    var sentDesired = SentDesiredStates()
    /// The API tokens, checked on every request without the actor.
    let accessBook: AccessBook
    /// For each host whose agent certificates were revoked, the time before which a certificate
    /// issued to it is refused; checked on every agent request without the actor.
    let certificateCutoffs: Mutex<[String: Date]>
    /// The VM listing, read without the actor.
    let vmList: VMListIndex
    /// The last pass over the pending VMs found no host (`schedulePending`).
    var passedWithoutHosts = false

    init(
        store: any ClusterStore, loaded: StoredCluster, consoleOffsets: [VMID: UInt64], settings: ControllerSettings,
        now: @escaping @Sendable () -> Date, logger: Logger, metricsFactory: any MetricsFactory, telemetry: TelemetryEngine,
        history: any UsageArchive, tokens: [AccessToken] = [], certificateCutoffs: [String: Date] = [:]
    ) {
        self.accessBook = AccessBook(tokens)
        self.certificateCutoffs = Mutex(certificateCutoffs)
        let model = ClusterModel(
            settings: settings, now: now, logger: logger, loaded: loaded, consoleOffsets: consoleOffsets)
        self.history = history
        self.historyStepStart = Self.stepStart(of: now(), stepMs: settings.historyStepMs)
        self.telemetry = telemetry
        self.sloGauges = SLOGauges(factory: metricsFactory)
        self.store = store
        self.settings = settings
        self.now = now
        self.logger = logger
        self.events = EventLog()
        self.gauges = StateGauges(factory: metricsFactory)
        gauges.update(model.state)
        self.model = model
        self.draft = model
        self.vmList = VMListIndex(model)
        self.publishedVersion = Mutex(model.state.version)
        contextDesk.onCommand { [desiredWatch] host in desiredWatch.bump([host]) }
    }

    /// Loads the store (which migrates its schema on open) and returns a controller over it.
    /// Without a `history` archive, the usage history is kept in memory only. The VMs' placement
    /// explanations stay in the store (most of a load; `vm(_:)` reads the one it shows).
    public static func open(
        store: any ClusterStore, settings: ControllerSettings = .init(), now: @escaping @Sendable () -> Date = { Date() },
        logger: Logger = Logger(label: "vireo.controller"), metricsFactory: any MetricsFactory = MetricsSystem.factory,
        telemetry: TelemetryEngine? = nil, history: (any UsageArchive)? = nil
    ) async throws -> Controller {
        try settings.validateHistory()
        let loaded = try await store.load(recent: MigrationBook.recentCapacity, placements: false)
        let consoleOffsets = try await store.consoleOffsets()
        let tokens = try await store.tokens()
        let cutoffs = try await store.certificateCutoffs()
        if let rebalance = settings.rebalance, rebalance != loaded.rebalance {
            // Given at start (`--rebalance`): it is what the cluster does from now on.
            try await store.commit(StoreBatch(rebalance: rebalance))
        }
        let engine = try telemetry ?? TelemetryEngine(store: SeriesStore())
        await engine.configure(loaded.apps.map(\.spec))
        try await engine.restore(now: Int64(now().timeIntervalSince1970 * 1000))
        return Controller(
            store: store, loaded: loaded, consoleOffsets: consoleOffsets, settings: settings, now: now, logger: logger,
            metricsFactory: metricsFactory, telemetry: engine, history: try history ?? SQLiteUsageArchive(), tokens: tokens,
            certificateCutoffs: cutoffs)
    }

    /// Changes whenever anything visible through the API changes; readable without waiting for
    /// the actor, so HTTP handlers can serve cached responses.
    public nonisolated var version: Int { publishedVersion.withLock { $0 } }

    // MARK: The writer

    private struct QueuedWrite {
        /// Applies the decision to the draft; returns what resumes its caller once committed.
        var decide: (inout ClusterModel) throws -> @Sendable () -> Void
        var fail: @Sendable (any Error) -> Void
    }

    /// Queues `decide` for the writer and returns its result once its changes are durable and
    /// visible. `decide` must throw before it changes anything (validate, then change): a
    /// decision that throws is dropped, and the others committed with it are not affected.
    func write<T: Sendable>(_ decide: @escaping (inout ClusterModel) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            queued.append(
                QueuedWrite(
                    decide: { model in
                        let result = try decide(&model)
                        return { continuation.resume(returning: result) }
                    },
                    fail: { continuation.resume(throwing: $0) }))
            if !writing {
                writing = true
                Task { await self.drain() }
            }
        }
    }

    /// Decisions waiting for the writer (for tests).
    var queuedWrites: Int { queued.count }

    /// Commits queued decisions, a group at a time, until none is left.
    private func drain() async {
        while !queued.isEmpty {
            let group = queued
            queued = []
            var decided: [(resume: @Sendable () -> Void, fail: @Sendable (any Error) -> Void)] = []
            var broken: (error: any Error, at: Int)?
            for (index, write) in group.enumerated() {
                let before = draft.changes.count
                do {
                    decided.append((try write.decide(&draft), write.fail))
                } catch {
                    write.fail(error)
                    if draft.changes.count != before {
                        // It changed the draft before it threw: nothing of this group can be trusted.
                        logger.error(
                            "a decision failed after changing the cluster; its group is dropped", metadata: ["error": "\(error)"])
                        broken = (error, index)
                        break
                    }
                }
            }
            if let broken {
                for entry in decided { entry.fail(broken.error) }
                for write in group[(broken.at + 1)...] { write.fail(broken.error) }
                discardDraft()
                continue
            }
            let batch = draft.changes.batch
            if !batch.isEmpty {
                do {
                    try await store.commit(batch)
                } catch {
                    for entry in decided { entry.fail(error) }
                    discardDraft()
                    continue
                }
            }
            let committed = draft.changes
            draft.changes = PendingChanges()
            model.replay(committed.replay)
            if !committed.vms.isEmpty || !committed.hosts.isEmpty {
                vmList.apply(vms: committed.vms.keys, hosts: committed.hosts.values, model: model)
            }
            if !batch.isEmpty || committed.visible { didChange() }
            for e in committed.events.list {
                events.publish(e.kind, name: e.name, from: e.from, to: e.to, message: e.message, at: e.time)
            }
            if !committed.wake.isEmpty { desiredWatch.bump(committed.wake) }
            for entry in decided { entry.resume() }
        }
        writing = false
    }

    /// Drops what the draft holds beyond the committed model (a failed write, a broken group).
    /// The next decision copies the model once.
    private func discardDraft() {
        draft = model
    }

    /// Marks a change that is in memory only (no record changed) as visible.
    func didChange() {
        gauges.update(model.state)
        publishedVersion.withLock { $0 = model.state.version }
    }

    // MARK: Reads

    /// A page of VMs by name, from the listing the writer keeps: no turn on the actor.
    public nonisolated func listVMs(after cursor: String? = nil, limit: Int = 100) -> VMPage {
        vmList.page(after: cursor, limit: limit)
    }

    /// A page of VMs and what it was made from: while `currentVMPage` says the stamp is current,
    /// the same request gives the same page.
    public nonisolated func stampedVMPage(after cursor: String? = nil, limit: Int = 100) -> (
        page: VMPage, stamp: VMPageStamp
    ) {
        vmList.stampedPage(after: cursor, limit: limit)
    }

    /// The stamp moved up to now if its page has not changed since it was made, else nil.
    public nonisolated func currentVMPage(_ stamp: VMPageStamp) -> VMPageStamp? { vmList.current(stamp) }

    /// One VM's view, with why it is where it is (from the store) and where it could move.
    public func vm(_ reference: String) async throws -> VMView {
        let vm = try model.lookupVM(reference)
        var view = model.view(vm)
        view.liveMoves = model.liveMoves(of: vm)
        view.placement = try await store.placement(of: vm.id)
        return view
    }

    public func listHosts() -> HostList {
        HostList(items: model.state.hosts.values.sorted { $0.name < $1.name }.map(model.view))
    }

    public func host(_ reference: String) throws -> HostView {
        let state = model.state
        if let host = state.host(named: reference) ?? state.hosts[HostID(reference)] { return model.view(host) }
        throw VireoError.notFound("host", reference)
    }
}

extension ClusterModel {
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

    /// Moves `vm` to `next` if the state machine allows it, and publishes the change. Only a
    /// running VM has an address.
    mutating func transition(_ vm: inout VirtualMachine, to next: VMState, message: String?, at time: Date) {
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
        vms = Dictionary(
            uniqueKeysWithValues: VMState.allCases.map {
                ($0, Gauge(label: "vireo_vms", dimensions: [("state", $0.rawValue)], factory: factory))
            })
        hosts = Dictionary(
            uniqueKeysWithValues: HostState.allCases.map {
                ($0, Gauge(label: "vireo_hosts", dimensions: [("state", $0.rawValue)], factory: factory))
            })
    }

    func update(_ state: ClusterState) {
        for (s, gauge) in vms { gauge.record(state.vmCountByState[s] ?? 0) }
        for (s, gauge) in hosts { gauge.record(state.hostCountByState[s] ?? 0) }
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
