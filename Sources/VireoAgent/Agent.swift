import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import VireoAPI
import VireoDriver
import VireoModel

/// One per host. Registers with the controller, heartbeats what its driver runs, and converges
/// the driver towards the desired state the controller answers with (level-triggered: every
/// heartbeat carries the complete desired state, so a missed message is never lost).
///
/// When the controller is unreachable the agent keeps its VMs as they are and keeps trying;
/// on start it re-adopts what its driver still runs.
public final class Agent: Service {
    public struct Settings: Sendable {
        public var name: String
        /// Address other hosts reach this one at (migration), if any.
        public var address: String?
        /// Heartbeat interval until the controller says otherwise.
        public var heartbeatInterval: Duration
        /// Where the agent keeps what it needs to fence itself after a restart (`FenceRecord`);
        /// nil: in memory only, so an agent restarted while cut off does not fence.
        public var fenceFile: String?
        public init(
            name: String, address: String? = nil, heartbeatInterval: Duration = .seconds(1), fenceFile: String? = nil
        ) {
            self.name = name
            self.address = address
            self.heartbeatInterval = heartbeatInterval
            self.fenceFile = fenceFile
        }
    }

    struct State {
        var hostID: HostID?
        var interval: Duration
        /// The generation of the desired state last acted on, per VM.
        var acted: [VMID: Int] = [:]
        /// VMs with a driver operation under way; they are not touched again until it ends.
        var inFlight: Set<VMID> = []
        /// VMs the driver could not make (nothing of them exists here), with the request that
        /// failed and why: reported as failed, and not tried again until a newer request. (Tried
        /// again at once, a VM whose image could not be opened was made and failed ten times a
        /// second while the controller showed it `scheduled`, with no reason.)
        var createFailures: [VMID: (generation: Int, message: String)] = [:]
        var lastDesired: DesiredHostState?
        var controllerReachable = true
        /// Whether some VM was starting or stopping at the last round; then the next round comes
        /// sooner, so readiness is reported when it happens rather than a full interval later.
        var transitioning = false
        /// Rounds so far; rotates which VM's console output goes first when there is too much.
        var rounds = 0
        /// What to tell the controller about each migration this host takes part in (the latest
        /// word, sent on every heartbeat until the controller no longer lists the migration).
        var migrationReports: [MigrationID: MigrationReport] = [:]
        /// Migrations with a driver operation (prepare, send) under way.
        var migrationTasks: Set<MigrationID> = []
        /// `run` watches the controller's generation for this host between heartbeats; the watch
        /// starts after the first answer (it needs the host ID and a generation).
        var watchWanted = false
        var watch: Task<Void, Never>?
        /// How long this host may keep its VMs that restart elsewhere without an answer from the
        /// controller (`AgentRegistrationResponse.fenceAfterMs`); nil: for ever.
        var fenceAfter: Duration?
        /// When the last heartbeat the controller answered was sent.
        var answeredHeartbeatSentAt: ContinuousClock.Instant?
        /// Whether this host has fenced itself since that answer.
        var fenced = false
        /// VMs a fence powered off that have not been started again (or released) since.
        var fencedVMs: Set<VMID> = []
        /// The VMs the controller starts elsewhere if this host is lost, by ID, with their names.
        var restartsElsewhere: [VMID: String] = [:]
        /// When `fenceFile` was last written, and whether what it says has changed since.
        var fenceRecordWrittenAt: ContinuousClock.Instant?
        var fenceRecordDirty = false

        /// How long the fencing loop may sleep: while a fence is armed, until the silence passes
        /// `fenceAfter` (just past: it fences on more than that). Fenced already, half of
        /// `fenceAfter`: the answer that ends it arms the next fence at least `fenceAfter` ahead,
        /// so this is soon enough, and 10,000 agents cut off together do not wake 100,000 times a
        /// second. Not registered yet, a tenth of a second.
        func untilFenceCheck(now: ContinuousClock.Instant) -> Duration {
            guard let fenceAfter, let sent = answeredHeartbeatSentAt else { return .milliseconds(100) }
            if fenced { return max(.milliseconds(1), fenceAfter / 2) }
            return max(.milliseconds(1), now.duration(to: sent + fenceAfter) + .milliseconds(1))
        }
    }

    /// What an agent keeps on disk to fence itself after a restart while cut off: how long it may
    /// keep the VMs that restart elsewhere, which they are, and when (by the wall clock, since a
    /// restart loses the monotonic one) its last answered heartbeat was sent — at most a second
    /// old, so never later than the truth.
    struct FenceRecord: Codable, Equatable {
        var fenceAfterMs: Int
        var restartsElsewhere: [String: String]
        var answeredHeartbeatSentAt: Date
    }

    /// Console output sent per VM and per heartbeat at most, in bytes: a chatty guest must not
    /// make heartbeats large (JSON escaping can grow text up to six times) or starve other VMs.
    static let consoleBytesPerVM = 32 << 10
    static let consoleBytesPerHeartbeat = 128 << 10

    public let settings: Settings
    let driver: any HypervisorDriver
    let link: any ControllerLink
    let logger: Logger
    let state: Mutex<State>
    let wakeSignal = WakeSignal()
    let collector: TelemetryCollector
    /// The host's desktop contexts, when it keeps any (`nil`: server VMs only).
    public let contexts: ContextManager?

    public init(
        settings: Settings, driver: any HypervisorDriver, link: any ControllerLink, contexts: ContextManager? = nil,
        logger: Logger = Logger(label: "vireo.agent")
    ) {
        self.settings = settings
        self.driver = driver
        self.link = link
        self.contexts = contexts
        self.logger = logger
        self.state = Mutex(State(interval: settings.heartbeatInterval))
        self.collector = TelemetryCollector(driver: driver, logger: logger)
    }

    /// The host ID the controller gave this agent, once registered.
    public var hostID: HostID? { state.withLock { $0.hostID } }

    public func run() async throws {
        await driver.onStateChange { [wakeSignal] in wakeSignal.signal() }
        loadFenceRecord()
        let recovered = try await driver.recover()
        if !recovered.isEmpty {
            logger.info("re-adopted VMs", metadata: ["count": "\(recovered.count)"])
        }
        await contexts?.start(onChange: { [wakeSignal] in wakeSignal.signal() })
        state.withLock { $0.watchWanted = true }
        await cancelWhenGracefulShutdown {
            // Fencing keeps its own time: a heartbeat stuck on a dead connection must not delay it.
            let fencing = Task { await self.fenceWhenCutOff() }
            defer { fencing.cancel() }
            var due = Self.heartbeatGridOrigin(now: .now, interval: self.state.withLock { $0.interval })
            while !Task.isCancelled {
                await self.cycle()
                let (interval, transitioning) = self.state.withLock { ($0.interval, $0.transitioning) }
                due = Self.nextHeartbeat(after: due, interval: interval, now: .now)
                let wait = ContinuousClock.now.duration(to: due)
                await self.wakeSignal.wait(timeout: transitioning ? min(wait, .milliseconds(100)) : wait)
            }
        }
        let watch = state.withLock { s in
            s.watchWanted = false
            return s.watch
        }
        watch?.cancel()
        await watch?.value
        await contexts?.stop()
        await shutDown()
        await driver.detach()
    }

    /// Where this agent's heartbeat grid starts: `phase` of an interval before `now` (by default a
    /// random point), so the first heartbeat goes at once and the second after the rest of that
    /// interval. Agents started together, or in a burst, then spread evenly over the interval.
    /// Without it, 10,000 agents started over 14 s (as `vireo bench cluster` starts them) loaded
    /// the seconds of the interval that the first and last 4 s of the start share with 1,270 to
    /// 1,300 heartbeats each, against a mean of 1,000.
    public static func heartbeatGridOrigin(
        now: ContinuousClock.Instant, interval: Duration, phase: Double = .random(in: 0..<1)
    ) -> ContinuousClock.Instant {
        now - interval * phase
    }

    /// The next periodic heartbeat: the first point of this agent's own grid, `interval` apart
    /// from its start, after `now`. Heartbeats keep their place in the interval whatever woke a
    /// round in between and however long rounds take, so agents started at different moments
    /// stay spread over the interval instead of drifting into bunches that load the controller
    /// all at once (and a controller restart does not leave them all in step).
    public static func nextHeartbeat(
        after due: ContinuousClock.Instant, interval: Duration, now: ContinuousClock.Instant
    ) -> ContinuousClock.Instant {
        guard due <= now else { return due }
        let behind = due.duration(to: now)
        return due + interval * (Int(behind / interval) + 1)
    }

    /// Lets go of what rounds hold (the scrapers' HTTP client): `run` does it when it ends; call
    /// it when driving `cycle` by hand.
    public func shutDown() async {
        await collector.shutdown()
    }

    /// Fences this host once it has been cut off from the controller for longer than it may keep
    /// its VMs that restart elsewhere. It sleeps until that moment, checks, and sleeps until the
    /// moment an answer since has moved it to: a wake per heartbeat or so, not ten a second (which
    /// 10,000 agents in one `vireo bench cluster` process paid for: 100,000 wakes a second).
    /// `cycle` checks too before each report, so a host thawed after a freeze fences first.
    private func fenceWhenCutOff() async {
        while !Task.isCancelled {
            await fenceIfCutOff()
            try? await Task.sleep(for: state.withLock { $0.untilFenceCheck(now: .now) })
        }
    }

    /// Fencing: once no heartbeat has been answered for `fenceAfter` since it was sent, stops at
    /// once (`powerOff`, no guest shutdown) every VM the controller would start on another host
    /// if this one were lost — it will be, soon — so that no VM ever runs on two hosts. A host
    /// frozen and thawed does this first, before it talks to the controller again. The VMs stay
    /// defined: if the controller still places them here when it answers again, they start again.
    func fenceIfCutOff(now: ContinuousClock.Instant = .now) async {
        let due = state.withLock { s -> (ids: [VMID], names: [String], silence: Duration)? in
            guard let fenceAfter = s.fenceAfter, let sent = s.answeredHeartbeatSentAt, !s.fenced,
                sent.duration(to: now) > fenceAfter
            else { return nil }
            s.fenced = true
            let vms = s.restartsElsewhere.sorted { $0.value < $1.value }
            // Started again if they are still this host's when the controller answers.
            for (id, _) in vms {
                s.acted[id] = nil
                s.fencedVMs.insert(id)
            }
            return (vms.map(\.key), vms.map(\.value), sent.duration(to: now))
        }
        guard let due, !due.ids.isEmpty else { return }
        logger.warning(
            "fencing: no answer from the controller; stopping at once the VMs it restarts elsewhere",
            metadata: ["silent": "\(due.silence)", "vms": "\(due.names.joined(separator: ","))"])
        for id in due.ids {
            do {
                try await driver.powerOff(id)
            } catch let error as VireoError where error.code == .notFound {
                continue  // not made here yet
            } catch {
                logger.error("cannot power the VM off", metadata: ["vm": "\(id)", "error": "\(error)"])
            }
        }
    }

    /// Takes in the fencing record of a previous run, if any: the silence it left off at carries
    /// on, so an agent restarted while cut off still fences in time.
    private func loadFenceRecord() {
        guard let path = settings.fenceFile, let data = FileManager.default.contents(atPath: path),
            let record = try? JSONDecoder().decode(FenceRecord.self, from: data)
        else { return }
        let silence = max(0, Date().timeIntervalSince(record.answeredHeartbeatSentAt))
        state.withLock { s in
            s.fenceAfter = .milliseconds(record.fenceAfterMs)
            s.restartsElsewhere = Dictionary(
                uniqueKeysWithValues: record.restartsElsewhere.map { (VMID($0.key), $0.value) })
            s.answeredHeartbeatSentAt = ContinuousClock.now - .seconds(silence)
        }
        logger.info(
            "fencing record taken in", metadata: ["vms": "\(record.restartsElsewhere.count)", "silent-s": "\(Int(silence))"])
    }

    /// Keeps the fencing record on disk after an answered heartbeat: at once when what it says
    /// changed (the VMs, the time allowed), else at most once a second.
    private func saveFenceRecord() {
        guard let path = settings.fenceFile else { return }
        let record = state.withLock { s -> FenceRecord? in
            guard let fenceAfter = s.fenceAfter, let sent = s.answeredHeartbeatSentAt else { return nil }
            let record = FenceRecord(
                fenceAfterMs: Int(fenceAfter.secondsValue * 1000),
                restartsElsewhere: Dictionary(uniqueKeysWithValues: s.restartsElsewhere.map { ($0.key.rawValue, $0.value) }),
                answeredHeartbeatSentAt: Date() - sent.duration(to: .now).secondsValue)
            let due = s.fenceRecordWrittenAt.map { $0.duration(to: .now) >= .seconds(1) } ?? true
            guard due || s.fenceRecordDirty else { return nil }
            s.fenceRecordWrittenAt = .now
            s.fenceRecordDirty = false
            return record
        }
        guard let record, let data = try? JSONEncoder().encode(record) else { return }
        do {
            try data.write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            logger.warning("cannot keep the fencing record", metadata: ["path": "\(path)", "error": "\(error)"])
        }
    }

    /// Stops and forgets, before anything else, the VMs the controller started on another host
    /// while this one was lost: the disk stays (another host may be using it).
    private func release(_ ids: [VMID]) async {
        for id in ids {
            do {
                do {
                    try await driver.powerOff(id)
                    try await driver.release(id)
                    logger.notice(
                        "released a VM the cluster restarted on another host while this one was lost", metadata: ["vm": "\(id)"])
                } catch let error as VireoError where error.code == .notFound {
                    // Gone already (a delete or an earlier release got there first): released.
                    logger.info("a VM to release is no longer on this host", metadata: ["vm": "\(id)"])
                }
                state.withLock {
                    $0.acted[id] = nil
                    $0.fencedVMs.remove(id)
                    $0.createFailures[id] = nil
                }
            } catch {
                logger.error("cannot release a VM restarted elsewhere", metadata: ["vm": "\(id)", "error": "\(error)"])
            }
        }
    }

    /// One round: make sure we are registered, report, and act on the answer.
    public func cycle() async {
        // A host thawed after a freeze fences itself before it reports anything.
        await fenceIfCutOff()
        do {
            let hostID = try await registeredHostID()
            // Contexts are this host's own business: the controller hears of them apart.
            let everything: [InstanceStatus]
            do {
                everything = try await driver.status()
            } catch {
                // No heartbeat without the VMs: an empty report would read as every VM gone. The
                // controller marks the host unreachable if this lasts.
                logger.warning(
                    "the hypervisor cannot say what it runs; not reporting this round", metadata: ["error": "\(error)"])
                return
            }
            var statuses = everything.filter { contexts?.owns($0.id) != true }
            // CPU time and resident memory of each running VM, and the host's CPU: the controller's
            // rebalancing and usage history read them.
            var usage: [VMID: ResourceUsage] = [:]
            for status in statuses where status.state == .running {
                usage[status.id] = await driver.usage(status.id)
            }
            let hostCPU = await driver.hostUsage()
            let reports = state.withLock { s in
                s.transitioning =
                    statuses.contains { $0.state == .starting || $0.state == .stopping }
                    || !s.migrationTasks.isEmpty || !(s.lastDesired?.migrations ?? []).isEmpty
                let present = Set(statuses.map(\.id))
                return
                    statuses.map {
                        InstanceReport(
                            id: $0.id, state: InstanceReport.State(rawValue: $0.state.rawValue) ?? .failed,
                            generation: s.acted[$0.id] ?? 0, message: $0.message, address: $0.address,
                            bootMs: $0.bootMs, cpuSeconds: usage[$0.id]?.cpuSeconds,
                            residentBytes: usage[$0.id]?.memoryBytes)
                    }
                    + s.createFailures.filter { !present.contains($0.key) }.sorted { $0.key < $1.key }.map {
                        InstanceReport(
                            id: $0.key, state: .failed, generation: $0.value.generation,
                            message: "cannot create the VM: \($0.value.message)")
                    }
            }
            let console = await consoleReports(for: statuses)
            let migrationReports = state.withLock { Array($0.migrationReports.values) }
            let contextReport = await contexts?.report(statuses: everything)
            var desired: DesiredHostState
            let held = state.withLock { $0.lastDesired }
            let sentAt = ContinuousClock.now
            do {
                desired = try await link.heartbeat(
                    AgentHeartbeat(
                        hostID: hostID, instances: reports, console: console.isEmpty ? nil : console,
                        migrations: migrationReports.isEmpty ? nil : migrationReports, hostCPU: hostCPU,
                        contexts: contextReport, known: held?.revision))
                // Unchanged: what this host should do is still what it holds.
                if desired.unchanged == true {
                    guard var held, held.revision == desired.revision else {
                        throw VireoError(.internal, "the controller answered 'unchanged' to a state this host does not hold")
                    }
                    held.generation = desired.generation
                    // Releases are one answer's word, outside the revision (the controller never
                    // answers `unchanged` with one): kept, they were carried out again on every
                    // round after ("a VM to release is no longer on this host", many a second).
                    held.release = nil
                    desired = held
                }
            } catch let error as VireoError where error.code == .notFound {
                // The controller forgot us (new store): register again next round.
                state.withLock { $0.hostID = nil }
                throw error
            }
            let recovered = state.withLock { s in
                defer {
                    s.controllerReachable = true
                    s.lastDesired = desired
                    s.answeredHeartbeatSentAt = sentAt
                    s.fenced = false
                    // Looked at only when the desired state changed: most answers are `unchanged`.
                    if held?.revision == nil || held?.revision != desired.revision {
                        let restarting = Dictionary(
                            desired.vms.filter { $0.restartsElsewhere == true }.map { ($0.id, $0.name) },
                            uniquingKeysWith: { a, _ in a })
                        if restarting != s.restartsElsewhere {
                            s.restartsElsewhere = restarting
                            s.fenceRecordDirty = true
                        }
                    }
                }
                return !s.controllerReachable
            }
            saveFenceRecord()
            if recovered { logger.info("controller reachable again") }
            if let release = desired.release, !release.isEmpty {
                await self.release(release)
                statuses.removeAll { release.contains($0.id) }
            }
            startWatching()
            await contexts?.take(desired.contextCommands ?? [], journalAck: desired.contextJournalAck)
            reconcile(desired, statuses: statuses)
            await handleMigrations(desired.migrations ?? [], statuses: statuses, sent: migrationReports)
            await collectTelemetry(desired, statuses: statuses, hostID: hostID)
        } catch {
            let first = state.withLock { s in
                defer { s.controllerReachable = false }
                return s.controllerReachable
            }
            if first {
                logger.warning("controller unreachable; keeping VMs as they are", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Starts the watch of the controller's generation for this host, once, if `run` wants it.
    private func startWatching() {
        state.withLock { s in
            guard s.watchWanted, s.watch == nil else { return }
            s.watch = Task { await self.watchDesiredState() }
        }
    }

    /// Between heartbeats, waits on the controller's generation for this host and runs a round as
    /// soon as it moves: a VM created, stopped or moved reaches the host in milliseconds, not at
    /// the next heartbeat. Heartbeats stay the source of truth (level-triggered); a lost watch
    /// only delays a change to the next one.
    private func watchDesiredState() async {
        var known: Int?
        while !Task.isCancelled {
            let (host, interval, answered) = state.withLock { ($0.hostID, $0.interval, $0.lastDesired?.generation) }
            guard let host else {
                // Registering again (the controller forgot this host): the next answer names it.
                known = nil
                try? await Task.sleep(for: interval)
                continue
            }
            // First from the last answer, so a change made since it wakes the loop at once.
            let after = known ?? answered ?? -1
            do {
                // Several heartbeats long: an agent's open watch costs the controller nothing while
                // it waits, and each one ended only to be asked again is a request for nothing.
                // Less up to a random quarter: watches that started together (a controller
                // restart ends every agent's at once, and each starts again a round later) do not
                // all end, and start again, together ever after.
                let longest = min(interval * 6, .milliseconds(AgentWatch.maximumWaitMs - 5_000))
                let wait = longest * Double.random(in: 0.75...1)
                let generation = try await link.watch(host: host, after: after, timeout: max(interval, wait))
                if generation != after { wakeSignal.signal() }
                known = generation
            } catch {
                // The controller is away (heartbeats say so) or has no watches: wait a round, then
                // start again from the next answer.
                known = nil
                try? await Task.sleep(for: interval)
            }
        }
    }

    /// Points the collector at the running VMs that belong to an application with telemetry, and
    /// sends what it gathered. Undelivered samples wait for the next round.
    private func collectTelemetry(_ desired: DesiredHostState, statuses: [InstanceStatus], hostID: HostID) async {
        let running = Dictionary(statuses.filter { $0.state == .running }.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        let targets = desired.vms.compactMap { vm -> TelemetryCollector.Target? in
            guard vm.intent == .running, let app = vm.app, let telemetry = vm.telemetry, let address = running[vm.id]?.address
            else { return nil }
            return TelemetryCollector.Target(id: vm.id, vm: vm.name, app: app, telemetry: telemetry, address: address)
        }
        await collector.update(targets)
        let items = await collector.drain()
        guard !items.isEmpty else { return }
        do {
            try await link.deliver(AgentSamples(hostID: hostID, items: items))
        } catch {
            await collector.requeue(items)
            logger.debug("cannot deliver samples", metadata: ["error": "\(error)"])
        }
    }

    /// Console output that is new since the offsets of the last answer, for the VMs the controller
    /// placed here. Nothing is remembered on this side: if the heartbeat is lost, the controller's
    /// offsets have not moved and the same output is read again next round.
    private func consoleReports(for statuses: [InstanceStatus]) async -> [ConsoleReport] {
        let (offsets, rounds) = state.withLock { s in
            s.rounds += 1
            let offsets = Dictionary(
                (s.lastDesired?.vms ?? []).map { ($0.id, $0.consoleOffset ?? 0) }, uniquingKeysWith: { a, _ in a })
            return (offsets, s.rounds)
        }
        guard !statuses.isEmpty, !offsets.isEmpty else { return [] }
        let first = rounds % statuses.count
        var budget = Self.consoleBytesPerHeartbeat
        var reports: [ConsoleReport] = []
        for status in statuses[first...] + statuses[..<first] where budget > 0 {
            guard let offset = offsets[status.id] else { continue }
            do {
                let chunk = try await driver.consoleOutput(
                    status.id, from: offset, limit: min(budget, Self.consoleBytesPerVM))
                guard chunk.next != offset || !chunk.text.isEmpty else { continue }
                budget -= chunk.text.utf8.count
                reports.append(ConsoleReport(id: status.id, chunk: chunk))
            } catch {
                logger.debug("cannot read console", metadata: ["vm": "\(status.name)", "error": "\(error)"])
            }
        }
        return reports
    }

    private func registeredHostID() async throws -> HostID {
        if let id = state.withLock({ $0.hostID }) { return id }
        let fingerprint = try await driver.fingerprint()
        let response = try await link.register(
            AgentRegistration(name: settings.name, fingerprint: fingerprint, address: settings.address))
        state.withLock {
            $0.hostID = response.hostID
            $0.interval = .milliseconds(max(10, response.heartbeatIntervalMs))
            let fenceAfter = response.fenceAfterMs.map { Duration.milliseconds($0) }
            if $0.fenceAfter != fenceAfter { $0.fenceRecordDirty = true }
            $0.fenceAfter = fenceAfter
        }
        logger.info("registered", metadata: ["host": "\(settings.name)", "id": "\(response.hostID)"])
        return response.hostID
    }

    /// Starts one driver operation per VM that differs from what is desired.
    func reconcile(_ desired: DesiredHostState, statuses: [InstanceStatus]) {
        let current = Dictionary(statuses.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        // A failed create is of interest while the VM is still meant to run here.
        let wanted = Set(desired.vms.filter { $0.intent == .running }.map(\.id))
        state.withLock { s in s.createFailures = s.createFailures.filter { wanted.contains($0.key) } }
        // VMs with a move to or from here under way: a paused one is the move's to resume.
        let moving = Set((desired.migrations ?? []).map(\.vm.id))
        for vm in desired.vms {
            guard let operation = operation(for: vm, current: current[vm.id], moving: moving.contains(vm.id)) else { continue }
            let claimed = state.withLock { s in s.inFlight.insert(vm.id).inserted }
            guard claimed else { continue }
            Task { await self.perform(operation, on: vm) }
        }
    }

    enum Operation: Equatable { case createAndStart, start, stop, delete, resume, recordOnly }

    /// What to do about `vm`; `moving`: a migration of it to or from this host is under way.
    func operation(for vm: DesiredVM, current: InstanceStatus?, moving: Bool = false) -> Operation? {
        let (acted, fenced, createFailed) = state.withLock {
            ($0.acted[vm.id], $0.fencedVMs.contains(vm.id), $0.createFailures[vm.id]?.generation == vm.generation)
        }
        switch vm.intent {
        case .running:
            // Made again only for a newer request than the one that failed.
            guard let current else { return createFailed ? nil : .createAndStart }
            // Powered off by a fence, perhaps after `current` was read: started again (a start of
            // one still running changes nothing).
            if fenced { return .start }
            switch current.state {
            case .running where current.paused == true && !moving:
                // Meant to run here and no move of it under way: a guest left paused (the source
                // of a paused migration that ended while this agent was away) runs again.
                return .resume
            case .running, .starting:
                return acted == vm.generation ? nil : .recordOnly
            case .stopping:
                return nil
            case .stopped, .failed:
                // Retry only for a request we have not acted on: a VM that failed or was powered
                // off from inside stays so until the user starts it again.
                return acted == vm.generation ? nil : .start
            }
        case .stopped:
            guard let current else { return acted == vm.generation ? nil : .recordOnly }
            switch current.state {
            case .running, .starting: return .stop
            case .stopping: return nil
            case .stopped, .failed: return acted == vm.generation ? nil : .recordOnly
            }
        case .deleted:
            return current == nil ? nil : .delete
        }
    }

    private func perform(_ operation: Operation, on vm: DesiredVM) async {
        let spec = vm.instanceSpec
        do {
            switch operation {
            case .createAndStart:
                try await driver.create(spec)
                try await driver.start(vm.id)
            case .start: try await driver.start(vm.id)
            case .stop: try await driver.stop(vm.id)
            case .delete: try await driver.delete(vm.id)
            case .resume:
                try await driver.resume(vm.id)
                logger.notice(
                    "resumed a guest left paused, which no move of it here explains", metadata: ["vm": "\(vm.name)"])
            case .recordOnly: break
            }
            if operation != .recordOnly {
                logger.info("done", metadata: ["vm": "\(vm.name)", "operation": "\(operation)"])
            }
            state.withLock { $0.createFailures[vm.id] = nil }
        } catch {
            logger.error("operation failed", metadata: ["vm": "\(vm.name)", "operation": "\(operation)", "error": "\(error)"])
            if operation == .createAndStart, await !driverHas(vm.id) {
                state.withLock { $0.createFailures[vm.id] = (vm.generation, "\(error)") }
            }
        }
        state.withLock { s in
            s.inFlight.remove(vm.id)
            if operation == .delete { s.acted[vm.id] = nil } else { s.acted[vm.id] = vm.generation }
            if operation == .start || operation == .createAndStart || operation == .delete { s.fencedVMs.remove(vm.id) }
        }
        wakeSignal.signal()
    }
}

extension Agent {
    /// Whether the driver has the VM (in any state); false when it cannot say.
    func driverHas(_ id: VMID) async -> Bool {
        (try? await driver.status().contains { $0.id == id }) ?? false
    }
}

/// Lets the heartbeat loop wake early when an operation finishes, so the controller hears about
/// it without waiting a full interval.
final class WakeSignal: Sendable {
    struct State {
        var pending = false
        var waiter: CheckedContinuation<Void, Never>?
    }
    private let state = Mutex(State())

    func signal() {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if let w = s.waiter {
                s.waiter = nil
                return w
            }
            s.pending = true
            return nil
        }
        waiter?.resume()
    }

    /// Returns after `timeout`, at a signal, or at cancellation, whichever comes first.
    func wait(timeout: Duration) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await Task.sleep(for: timeout) }
            group.addTask {
                await withTaskCancellationHandler {
                    await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                        let resumeNow = self.state.withLock { s -> Bool in
                            if s.pending || Task.isCancelled {
                                s.pending = false
                                return true
                            }
                            s.waiter = c
                            return false
                        }
                        if resumeNow { c.resume() }
                    }
                } onCancel: {
                    self.signal()
                }
            }
            await group.next()
            group.cancelAll()
        }
        state.withLock { $0.pending = false }
    }
}

extension DesiredVM {
    /// What the driver is asked to run for this VM.
    var instanceSpec: InstanceSpec {
        var spec = InstanceSpec(id: id, name: name, image: image, cpus: cpus, memoryMiB: memoryMiB, diskMiB: diskMiB)
        if takesSharedDisk == true { spec.diskSource = InstanceSpec.sharedDisk }
        return spec
    }
}
