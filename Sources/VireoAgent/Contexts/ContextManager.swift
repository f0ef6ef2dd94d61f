import Foundation
import Logging
import Synchronization
import VireoAPI
import VireoDriver
import VireoModel

/// A host's desktop contexts: one VM each, opened, reset, kept and closed here, with or without
/// the controller. The agent's local API calls it directly; the controller's commands reach it
/// through heartbeats (`take`). This host is the contexts' authority: the controller's view is
/// what `report` last said.
///
/// A context's clean state is a snapshot of its VM taken once it has booted (`clean-N`): `reset`
/// loads it (disk, memory and devices), `keep` saves a new one and then deletes the old. Every
/// change is written to the book before the driver is asked, so a crash in the middle is
/// finished or undone at the next start (`repair`).
public actor ContextManager: ContextService {
    public struct Settings: Sendable {
        /// Where the book and the journal are kept.
        public var directory: String
        /// This host's name, in every context it reports.
        public var hostName: String
        /// Booted disposables to keep ready, by image (`--context-pool IMAGE=N`).
        public var pool: [String: Int]
        /// How long a new context's guest may take to boot.
        public var bootTimeout: Duration

        public init(directory: String, hostName: String, pool: [String: Int] = [:], bootTimeout: Duration = .seconds(300)) {
            self.directory = directory
            self.hostName = hostName
            self.pool = pool
            self.bootTimeout = bootTimeout
        }
    }

    public nonisolated let settings: Settings
    let driver: any HypervisorDriver
    let logger: Logger
    let now: @Sendable () -> Date
    var book: ContextBook
    let journal: ContextJournal
    /// Operations under way, by context name, and the state each shows meanwhile.
    var busy: [String: ContextState] = [:]
    /// Controller commands being carried out, by ID.
    var commandsRunning: Set<String> = []
    /// Told when something changed that the controller should hear about soon.
    var changed: @Sendable () -> Void = {}
    var poolTask: Task<Void, Never>?
    let poolSignal = WakeSignal()
    /// Whether `start` has repaired what the last run left: until then the verbs that change a
    /// context wait for nothing and are refused, so none runs into the repair.
    var repaired = false
    /// The VMs that run contexts (and pool members): not the controller's server VMs.
    nonisolated let vms = Mutex<Set<VMID>>([])

    var bookPath: String { settings.directory + "/contexts.json" }

    public init(
        settings: Settings, driver: any HypervisorDriver, logger: Logger = Logger(label: "vireo.contexts"),
        now: @escaping @Sendable () -> Date = { Date() }
    ) throws {
        for (image, count) in settings.pool {
            guard ImageCatalogue.image(named: image) != nil else {
                throw VireoError.invalid(
                    field: "--context-pool", value: "'\(image)=\(count)'",
                    "unknown image; known: \(ImageCatalogue.builtIn.map(\.name).joined(separator: ", "))")
            }
            guard (0...64).contains(count) else {
                throw VireoError.invalid(field: "--context-pool", value: "'\(image)=\(count)'", "the count must be 0 to 64")
            }
        }
        try FileManager.default.createDirectory(atPath: settings.directory, withIntermediateDirectories: true)
        self.settings = settings
        self.driver = driver
        self.logger = logger
        self.now = now
        let book = try ContextBook.load(from: settings.directory + "/contexts.json")
        self.book = book
        self.journal = try ContextJournal(path: settings.directory + "/journal.jsonl")
        vms.withLock { $0 = Set(book.contexts.map(\.vm)) }
    }

    /// The driver's private network a context's VM is on: its own (isolated), or the named one.
    public static func privateNetwork(_ network: ContextNetwork, vm: VMID) -> String {
        switch network {
        case .isolated: "iso-" + String(vm.rawValue.prefix(13))
        case .named(let name): "net-" + name
        }
    }

    /// Whether `id` runs a context (the agent leaves those out of its VM reports).
    public nonisolated func owns(_ id: VMID) -> Bool { vms.withLock { $0.contains(id) } }

    /// Repairs what a crash left half done, brings back contexts whose VMs are not running (the
    /// host rebooted), and starts keeping the pool full. Call once the driver has re-adopted its
    /// VMs (`recover`).
    public func start(onChange: @escaping @Sendable () -> Void) async {
        changed = onChange
        await repair()
        repaired = true
        if !settings.pool.isEmpty, poolTask == nil {
            poolTask = Task { await self.keepPoolFull() }
        }
    }

    public func stop() {
        poolTask?.cancel()
        poolTask = nil
    }

    // MARK: The verbs

    public func listContexts() async throws -> ContextList {
        await list(try await statusByVM())
    }

    private func list(_ statuses: [VMID: InstanceStatus]) async -> ContextList {
        let items = book.contexts.filter { !$0.pooled }.map { view($0, statuses[$0.vm]) }.sorted { $0.name < $1.name }
        return ContextList(items: items, pools: await poolStatus(statuses))
    }

    public func context(_ name: String, host: String?) async throws -> Context {
        try checkHost(host)
        let record = try record(named: name)
        return view(record, try await statusByVM()[record.vm])
    }

    public func openContext(_ request: ContextOpenRequest) async throws -> Context {
        try checkHost(request.host)
        try checkRepaired()
        let spec = request.spec
        if book.index(of: spec.name) != nil {
            throw VireoError(.conflict, "context '\(spec.name)' is already open on host \(settings.hostName)")
        }
        let time = now()
        if let index = poolMember(for: spec) {
            book.contexts[index].pooled = false
            book.contexts[index].spec.name = spec.name
            book.contexts[index].fromPool = true
            book.contexts[index].openedAt = time
            try save()
            try journal.append(.opened, spec.name, at: time, "from the pool of booted \(spec.image) disposables")
            logger.info("context opened from the pool", metadata: ["context": "\(spec.name)"])
            poolSignal.signal()
            changed()
            return view(book.contexts[index], try await statusByVM()[book.contexts[index].vm])
        }
        let record = ContextRecord(spec: spec, vm: .generate(), pending: .open, openedAt: time)
        try await make(record)
        try journal.append(.opened, spec.name, at: time)
        changed()
        if request.wait {
            try await warmUp(record.vm)
        } else {
            Task { try? await self.warmUp(record.vm) }
        }
        return try await context(spec.name, host: nil)
    }

    public func resetContext(_ name: String, host: String?, force: Bool) async throws -> Context {
        let requested = ContinuousClock.now
        try checkHost(host)
        let record = try idle(name, for: "reset")
        guard let clean = record.cleanTag else {
            throw VireoError(.conflict, "context '\(name)' has no clean state yet (it is still starting)")
        }
        if record.spec.kind == .persistent && !force {
            throw VireoError(
                .conflict, "context '\(name)' is persistent: a reset throws away everything since its clean state; use --force")
        }
        let load: Duration
        do {
            load = try await exclusively(name, .resetting) {
                try self.update(record.vm) { $0.pending = .reset }
                return try await self.driver.loadSnapshot(record.vm, tag: clean)
            }
        } catch {
            try? update(record.vm) {
                $0.pending = nil
                $0.failure = "reset failed: \(error)"
            }
            try? journal.append(.failed, name, at: now(), "reset failed: \(error)")
            changed()
            throw error
        }
        let resetMs = Self.milliseconds(ContinuousClock.now - requested)
        try update(record.vm) {
            $0.pending = nil
            $0.failure = nil
            $0.resets += 1
            $0.resetMs = resetMs
            $0.loadMs = Self.milliseconds(load)
        }
        try journal.append(.reset, name, at: now(), "in \(resetMs) ms")
        changed()
        return try await context(name, host: nil)
    }

    public func keepContext(_ name: String, host: String?) async throws -> Context {
        try checkHost(host)
        let record = try idle(name, for: "keep")
        guard let old = record.cleanTag else {
            throw VireoError(.conflict, "context '\(name)' has no clean state yet (it is still starting)")
        }
        let tag = "clean-\(record.nextTag)"
        try await exclusively(name, .keeping) {
            try self.update(record.vm) {
                $0.pending = .keep(tag: tag)
                $0.nextTag += 1
            }
            do {
                _ = try await self.driver.saveSnapshot(record.vm, tag: tag)
            } catch {
                try? self.update(record.vm) { $0.pending = nil }
                throw error
            }
            try self.update(record.vm) {
                $0.pending = nil
                $0.cleanTag = tag
                $0.cleanSince = self.now()
            }
            await self.dropSnapshot(old, of: record.vm)
        }
        try journal.append(.kept, name, at: now())
        changed()
        return try await context(name, host: nil)
    }

    public func closeContext(_ name: String, host: String?) async throws -> Context {
        try checkHost(host)
        let record = try idle(name, for: "close")
        var last = try await exclusively(name, .closing) {
            let last = self.view(record, try await self.statusByVM()[record.vm])
            try self.update(record.vm) { $0.pending = .close }
            try await self.remove(record.vm)
            return last
        }
        try journal.append(.closed, name, at: now())
        changed()
        last.state = .closed
        last.address = nil
        last.display = nil
        return last
    }

    public func contextLogs(_ name: String, host: String?, tail: Int?) async throws -> String {
        try checkHost(host)
        let vm = try record(named: name).vm
        // The log is read forward (drivers give it from an offset), keeping its end.
        var text = ""
        var offset: UInt64 = 0
        for _ in 0..<256 {
            let chunk = try await driver.consoleOutput(vm, from: offset, limit: ContextLogs.maxBytes)
            guard chunk.next > offset else { break }
            text += chunk.text
            if text.utf8.count > ContextLogs.maxBytes {
                text = String(decoding: text.utf8.suffix(ContextLogs.maxBytes), as: UTF8.self)
            }
            offset = chunk.next
        }
        return tail.map { ConsoleTail.lastLines($0, of: text) } ?? text
    }

    // MARK: Steps

    /// Runs `body` as the one operation on context `name`, showing `state` meanwhile (`idle`
    /// refuses others until it ends).
    private func exclusively<T>(_ name: String, _ state: ContextState, _ body: () async throws -> T) async rethrows -> T {
        busy[name] = state
        defer { busy[name] = nil }
        return try await body()
    }

    /// Records a new context (or pool member) and creates and starts its VM. On failure nothing
    /// is left behind.
    private func make(_ record: ContextRecord) async throws {
        book.contexts.append(record)
        vms.withLock { _ = $0.insert(record.vm) }
        try save()
        do {
            try await driver.create(record.instanceSpec)
            try await driver.start(record.vm)
        } catch {
            try? await driver.delete(record.vm)
            forget(record.vm)
            try? save()
            throw error
        }
    }

    /// Waits for a new context's guest to boot and saves its clean state.
    func warmUp(_ vm: VMID) async throws {
        let deadline = ContinuousClock.now + settings.bootTimeout
        while true {
            guard let record = book.contexts.first(where: { $0.vm == vm }), record.pending == .open else { return }
            let status = try await driver.status().first { $0.id == vm }
            switch status?.state {
            case .running?:
                let tag = "clean-\(record.nextTag)"
                do {
                    _ = try await driver.saveSnapshot(vm, tag: tag)
                } catch {
                    try fail(vm, "cannot save its clean state: \(error)")
                    throw error
                }
                try update(vm) {
                    $0.pending = nil
                    $0.cleanTag = tag
                    $0.nextTag += 1
                    $0.cleanSince = now()
                }
                if !record.pooled { try journal.append(.ready, record.spec.name, at: now()) }
                changed()
                return
            case .failed?, .stopped?, nil:
                let reason = status?.message ?? "its VM \(status == nil ? "is gone" : "stopped") while booting"
                try fail(vm, reason)
                throw VireoError(.unavailable, "context '\(record.spec.name)' did not start: \(reason)")
            case .starting?, .stopping?:
                if ContinuousClock.now > deadline {
                    try fail(vm, "did not boot within \(settings.bootTimeout)")
                    throw VireoError(.unavailable, "context '\(record.spec.name)' did not boot within \(settings.bootTimeout)")
                }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    private func fail(_ vm: VMID, _ reason: String) throws {
        guard let record = book.contexts.first(where: { $0.vm == vm }) else { return }
        try update(vm) {
            $0.pending = nil
            $0.failure = reason
        }
        if !record.pooled { try journal.append(.failed, record.spec.name, at: now(), reason) }
        logger.error("context failed", metadata: ["context": "\(record.spec.name)", "reason": "\(reason)"])
        changed()
    }

    /// Deletes the VM (disk and snapshots) and then the record.
    private func remove(_ vm: VMID) async throws {
        try await driver.delete(vm)
        forget(vm)
        try save()
    }

    private func forget(_ vm: VMID) {
        book.contexts.removeAll { $0.vm == vm }
        vms.withLock { _ = $0.remove(vm) }
    }

    /// Deletes a snapshot that is no longer the clean state; one left behind (the delete failed, or
    /// a crash came first) goes at the next start.
    private func dropSnapshot(_ tag: String, of vm: VMID) async {
        do {
            try await driver.deleteSnapshot(vm, tag: tag)
        } catch {
            logger.warning("cannot delete an old clean state", metadata: ["vm": "\(vm)", "tag": "\(tag)", "error": "\(error)"])
        }
    }

    // MARK: Repair

    /// Finishes or undoes what a crash cut short, removes stale snapshots, and brings back the
    /// contexts whose VMs stopped (after a host reboot: a disposable from its clean state, a
    /// persistent one from its disk).
    func repair() async {
        let statuses = (try? await statusByVM()) ?? [:]
        for record in book.contexts {
            let name = record.spec.name
            do {
                try await repair(record, status: statuses[record.vm])
            } catch {
                logger.error("cannot repair context", metadata: ["context": "\(name)", "error": "\(error)"])
                try? fail(record.vm, "could not be brought back after a restart: \(error)")
            }
        }
        changed()
    }

    private func repair(_ record: ContextRecord, status: InstanceStatus?) async throws {
        let name = record.spec.name
        let log = { (message: String) in
            if !record.pooled { try self.journal.append(.repaired, name, at: self.now(), message) }
        }
        switch record.pending {
        case .close?:
            try await remove(record.vm)
            if !record.pooled { try journal.append(.closed, name, at: now(), "closed after a restart cut the close short") }
            return
        case .open?:
            guard status != nil else {
                forget(record.vm)
                try save()
                if !record.pooled { try journal.append(.failed, name, at: now(), "its opening was cut short by a restart") }
                return
            }
            if status?.state != .running && status?.state != .starting { try await driver.start(record.vm) }
            Task { try? await self.warmUp(record.vm) }
            return
        case .keep(let tag)?:
            let tags = (try? await driver.snapshots(record.vm)) ?? []
            if tags.contains(tag) {
                try update(record.vm) {
                    $0.cleanTag = tag
                    $0.cleanSince = now()
                    $0.pending = nil
                }
                try log("a keep cut short by a restart was finished")
            } else {
                try update(record.vm) { $0.pending = nil }
                try log("a keep cut short by a restart was undone; the clean state is the one before it")
            }
        case .reset?, nil:
            break
        }
        guard status != nil, let clean = book.contexts.first(where: { $0.vm == record.vm })?.cleanTag else {
            if status == nil { try fail(record.vm, "its VM is gone from this host") }
            return
        }
        for tag in (try await driver.snapshots(record.vm)) where tag != clean {
            await dropSnapshot(tag, of: record.vm)
        }
        switch status?.state {
        case .running?, .starting?:
            if record.pending == .reset {
                let load = try await driver.loadSnapshot(record.vm, tag: clean)
                try update(record.vm) {
                    $0.pending = nil
                    $0.resets += 1
                    $0.loadMs = Self.milliseconds(load)
                }
                try log("a reset cut short by a restart was done again")
            }
        case .stopped?, .failed?, .stopping?, nil:
            // The host rebooted (or the VM died): a disposable comes back clean; a persistent one
            // boots from its disk, which keeps its work.
            if record.spec.kind == .disposable || record.pending == .reset {
                try await driver.start(record.vm, fromSnapshot: clean)
            } else {
                try await driver.start(record.vm)
            }
            try update(record.vm) {
                $0.pending = nil
                $0.failure = nil
            }
            if !record.pooled {
                try journal.append(
                    .restarted, name, at: now(), record.spec.kind == .disposable ? "from its clean state" : "from its disk")
            }
        }
    }

    // MARK: The pool

    /// Keeps `settings.pool` booted disposables per image ready, one new one at a time.
    private func keepPoolFull() async {
        while !Task.isCancelled {
            if let image = missingPoolImage() {
                do {
                    let record = ContextRecord(
                        spec: Self.poolSpec(image: image, name: "pool-" + String(UUID().uuidString.lowercased().prefix(8))),
                        vm: .generate(), pooled: true, pending: .open, openedAt: now())
                    try await make(record)
                    try await warmUp(record.vm)
                    changed()
                    continue
                } catch {
                    logger.error("cannot fill the context pool", metadata: ["image": "\(image)", "error": "\(error)"])
                    await removeFailedPoolMembers()
                }
            }
            await poolSignal.wait(timeout: .seconds(5))
        }
    }

    /// What a pool member of `image` is: what `open --disposable --image IMAGE` asks for by default.
    static func poolSpec(image: String, name: String) -> ContextSpec {
        let minimum = ImageCatalogue.image(named: image)?.minimumMemoryMiB ?? 0
        return ContextSpec(
            name: name, kind: .disposable, image: image, cpus: 1,
            memoryMiB: max(ContextValidation.defaultMemoryMiB, minimum))
    }

    private func missingPoolImage() -> String? {
        settings.pool.keys.sorted().first { image in
            book.contexts.filter { $0.pooled && $0.spec.image == image && $0.failure == nil }.count
                < settings.pool[image, default: 0]
        }
    }

    private func removeFailedPoolMembers() async {
        for record in book.contexts where record.pooled && record.failure != nil {
            try? await remove(record.vm)
        }
    }

    /// A ready pool member that is what `spec` asks for, if any.
    private func poolMember(for spec: ContextSpec) -> Int? {
        guard spec.kind == .disposable, spec.network == .isolated, spec.display == nil else { return nil }
        let wanted = Self.poolSpec(image: spec.image, name: "")
        guard spec.cpus == wanted.cpus, spec.memoryMiB == wanted.memoryMiB else { return nil }
        return book.contexts.firstIndex {
            $0.pooled && $0.spec.image == spec.image && $0.cleanTag != nil && $0.pending == nil && $0.failure == nil
        }
    }

    private func poolStatus(_ statuses: [VMID: InstanceStatus]) async -> [ContextPoolStatus] {
        var pools: [ContextPoolStatus] = []
        for image in settings.pool.keys.sorted() {
            let members = book.contexts.filter { $0.pooled && $0.spec.image == image }
            let ready = members.filter { $0.cleanTag != nil && $0.pending == nil && $0.failure == nil }.count
            var resident: UInt64? = 0
            for member in members {
                guard statuses[member.vm]?.state == .running else { continue }
                if let usage = await driver.usage(member.vm) {
                    resident? += usage.memoryBytes
                } else {
                    resident = nil
                }
            }
            let spec = Self.poolSpec(image: image, name: "")
            pools.append(
                ContextPoolStatus(
                    host: settings.hostName, image: image, cpus: spec.cpus, memoryMiB: spec.memoryMiB,
                    target: settings.pool[image, default: 0], ready: ready,
                    warming: members.filter { $0.pending == .open }.count, residentMiB: resident.map { Int($0 >> 20) }))
        }
        return pools
    }

    // MARK: The controller

    /// What to tell the controller: every context, the pools, answers to its commands, and the
    /// journal it has not acknowledged (oldest first, at most 500 entries per heartbeat).
    /// `statuses` is what the driver said this round (the agent has just asked it).
    public func report(statuses: [InstanceStatus]) async -> HostContexts {
        let list = await list(Dictionary(statuses.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a }))
        return HostContexts(
            items: list.items, pools: list.pools, results: book.results.isEmpty ? nil : book.results,
            journal: journal.entries.isEmpty ? nil : Array(journal.entries.prefix(500)))
    }

    /// Takes the controller's reply: carries out commands not seen before, forgets answers it no
    /// longer asks for, and drops the journal entries it has recorded.
    public func take(_ commands: [ContextCommand], journalAck: Int?) {
        let listed = Set(commands.map(\.id))
        let before = book.results.count
        book.results.removeAll { !listed.contains($0.id) }
        if book.results.count != before { try? save() }
        if let journalAck {
            do {
                try journal.acknowledge(upTo: journalAck)
            } catch {
                logger.warning("cannot trim the context journal", metadata: ["error": "\(error)"])
            }
        }
        let answered = Set(book.results.map(\.id))
        for command in commands where !answered.contains(command.id) && !commandsRunning.contains(command.id) {
            commandsRunning.insert(command.id)
            Task { await self.carryOut(command) }
        }
    }

    private func carryOut(_ command: ContextCommand) async {
        var result = ContextCommandResult(id: command.id)
        do {
            switch command.action {
            case .open:
                guard let request = command.open else {
                    throw VireoError(.invalidArgument, "open: the command carries no context to open")
                }
                result.context = try await openContext(request)
            case .reset: result.context = try await resetContext(command.name, host: nil, force: command.force ?? false)
            case .keep: result.context = try await keepContext(command.name, host: nil)
            case .close: result.context = try await closeContext(command.name, host: nil)
            case .logs: result.logs = try await contextLogs(command.name, host: nil, tail: command.tail)
            }
        } catch let error as VireoError {
            result.error = error
        } catch {
            result.error = VireoError(.internal, "\(error)")
        }
        commandsRunning.remove(command.id)
        book.results.append(result)
        if book.results.count > ContextBook.maxResults { book.results.removeFirst(book.results.count - ContextBook.maxResults) }
        try? save()
        changed()
    }

    // MARK: Helpers

    private func checkRepaired() throws {
        guard repaired else {
            throw VireoError(
                .unavailable, "host \(settings.hostName) is still bringing its contexts back after a restart; try again shortly")
        }
    }

    private func checkHost(_ host: String?) throws {
        if let host, host != settings.hostName {
            throw VireoError(.notFound, "host '\(host)' is not this one: this is \(settings.hostName)")
        }
    }

    private func record(named name: String) throws -> ContextRecord {
        guard let index = book.index(of: name) else { throw VireoError.notFound("context", name) }
        return book.contexts[index]
    }

    /// The context, when no other operation runs on it.
    private func idle(_ name: String, for verb: String) throws -> ContextRecord {
        try checkRepaired()
        let record = try record(named: name)
        if let state = busy[name] {
            throw VireoError(.conflict, "context '\(name)' is \(Self.doing(state)): \(verb) it when that is done")
        }
        if record.pending == .open {
            throw VireoError(.conflict, "context '\(name)' is still starting: \(verb) it once it runs")
        }
        return record
    }

    private static func doing(_ state: ContextState) -> String {
        switch state {
        case .resetting: "being reset"
        case .keeping: "being kept"
        case .closing: "being closed"
        default: state.rawValue
        }
    }

    private func update(_ vm: VMID, _ change: (inout ContextRecord) -> Void) throws {
        guard let index = book.contexts.firstIndex(where: { $0.vm == vm }) else { return }
        change(&book.contexts[index])
        try save()
    }

    private func save() throws { try book.save(to: bookPath) }

    private func statusByVM() async throws -> [VMID: InstanceStatus] {
        Dictionary(try await driver.status().map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
    }

    func view(_ record: ContextRecord, _ status: InstanceStatus?) -> Context {
        let state: ContextState
        if let busy = busy[record.spec.name], !record.pooled {
            state = busy
        } else if record.pending == .close {
            state = .closing
        } else if record.failure != nil {
            state = .failed
        } else {
            switch status?.state {
            case nil, .failed?: state = .failed
            case .stopped?: state = .stopped
            case .stopping?: state = .closing
            case .starting?: state = .starting
            case .running?: state = record.pending == .open ? .saving : .running
            }
        }
        let running = status?.state == .running
        return Context(
            spec: record.spec, state: state, host: settings.hostName, vm: record.vm, openedAt: record.openedAt,
            address: running ? status?.address : nil, display: running ? status?.display : nil, resets: record.resets,
            cleanSince: record.cleanSince, resetMs: record.resetMs, loadMs: record.loadMs, fromPool: record.fromPool,
            message: record.failure ?? (status?.state == .failed ? status?.message : nil))
    }

    static func milliseconds(_ duration: Duration) -> Int {
        Int(duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000)
    }
}
