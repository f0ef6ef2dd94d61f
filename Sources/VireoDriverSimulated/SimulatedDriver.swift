import Foundation
import HeapModule
import Synchronization
import VireoDriver
import VireoModel

/// A deterministic in-memory hypervisor.
///
/// Boot and stop take configurable (virtual) time; starts can be made to fail, either by name or
/// with a seeded probability. Snapshots are tags kept per VM, with the errors the real drivers
/// give; private networks are accepted (there is no network to isolate) and give addresses the way
/// the QEMU driver does. Used for what-if and scale runs and as the reference the driver
/// conformance suite runs against — it is registered exactly like the real drivers.
public final class SimulatedDriver: HypervisorDriver {
    public struct Configuration: Sendable, Equatable {
        public var cpus: Int
        public var memoryMiB: Int
        public var bootDelay: Duration
        public var stopDelay: Duration
        /// Probability in [0, 1] that a start fails.
        public var startFailureProbability: Double
        public var seed: UInt64
        /// What a snapshot save and a load report having taken (nothing waits for it: the driver
        /// never sleeps).
        public var snapshotSaveTime: Duration
        public var snapshotLoadTime: Duration
        /// Whether a save and a load also take that long on the wall clock before they are done
        /// (`snapshot-wait=on`): `vireo chaos` asks for it, so that a kill can land in the middle
        /// of a context's reset or keep, as it can on QEMU.
        public var snapshotsTakeTime = false
        /// A file the driver writes what it runs to at each change, and takes over from when it
        /// starts: its VMs outlive the agent process as QEMUs do (`vireo chaos` kills agents with
        /// `kill -9`). Nil: in memory only.
        public var persistPath: String?

        public init(
            cpus: Int = 32, memoryMiB: Int = 131_072, bootDelay: Duration = .milliseconds(300),
            stopDelay: Duration = .milliseconds(100), startFailureProbability: Double = 0, seed: UInt64 = 1,
            snapshotSaveTime: Duration = .zero, snapshotLoadTime: Duration = .zero
        ) {
            self.cpus = cpus
            self.memoryMiB = memoryMiB
            self.bootDelay = bootDelay
            self.stopDelay = stopDelay
            self.startFailureProbability = startFailureProbability
            self.seed = seed
            self.snapshotSaveTime = snapshotSaveTime
            self.snapshotLoadTime = snapshotLoadTime
        }
    }

    struct Instance {
        var spec: InstanceSpec
        var state: InstanceState
        /// When a `starting` or `stopping` instance finishes its transition.
        var transitionEndsAt: Duration
        var message: String?
        /// Index of the instance among those created, for its synthetic address.
        var serial: Int
        /// The address on its private network (`198.19.N.H`), given at create.
        var privateAddress: String?
        /// Snapshot tags, in the order they were taken.
        var snapshots: [String] = []
        /// What a real guest would have printed on its serial console.
        var console = ""
        /// Waiting for a live migration: it runs when the source hands over (`finishIncoming`).
        var incoming = false
        /// Running with its vCPUs stopped (`pause`).
        var paused = false
        /// What the guest does (`setLoad`); nil: the instance reports no usage.
        var workload: Workload?
        /// CPU time its process has used up to `accruedTo`: from zero at each start, as a new
        /// process's would.
        var cpuSeconds = 0.0
        var accruedTo: Duration = .zero

        /// CPU time used by `now`.
        func cpuSeconds(at now: Duration) -> Double {
            guard state == .running, !incoming, let workload, now > accruedTo else { return cpuSeconds }
            let (seconds, attoseconds) = (now - accruedTo).components
            return cpuSeconds + workload.cores * (Double(seconds) + Double(attoseconds) / 1e18)
        }

        /// Brings `cpuSeconds` up to `now`, before the workload or the state changes.
        mutating func accrue(to now: Duration) {
            cpuSeconds = cpuSeconds(at: now)
            accruedTo = max(accruedTo, now)
        }

        /// A new process: no CPU time yet.
        mutating func restartAccounting(at now: Duration) {
            cpuSeconds = 0
            accruedTo = now
        }
    }

    /// A simulated guest's demand: the CPUs it keeps busy and the memory its process holds.
    struct Workload {
        var cores: Double
        var residentMiB: Int
    }

    struct State {
        private(set) var instances: [VMID: Instance] = [:]
        /// Memory of the instances that are running or starting (incoming ones included).
        private(set) var usedMemoryMiB = 0
        /// When each start or stop of an instance on its own (not incoming) ends, earliest first:
        /// `settle` takes only those due, so a call costs what has ended, not what is in
        /// transition (called for every VM at each of its agent's heartbeats). An entry whose
        /// instance has changed since is dropped when it comes up.
        private(set) var transitions = Heap<Transition>()
        var created = 0
        /// Private network name → its subnet number (the third octet), in the order first used.
        var privateSubnets: [String: Int] = [:]
        /// Private network name → guests given an address on it so far.
        var privateGuests: [String: Int] = [:]
        var failStartOf: Set<String> = []
        /// Names of VMs whose creates fail, with how many more times.
        var failCreateOf: [String: Int] = [:]
        /// Creates asked for, by VM name (made or failed).
        var createAttempts: [String: Int] = [:]
        var random: SeededGenerator

        init(random: SeededGenerator) { self.random = random }

        mutating func popTransition() { _ = transitions.popMin() }

        /// Replaces (or with nil removes) an instance, keeping the memory in use and the set of
        /// transitions up to date.
        mutating func set(_ id: VMID, _ new: Instance?) {
            if let old = instances[id] { account(id, old, added: false) }
            instances[id] = new
            if let new { account(id, new, added: true) }
            if let persistPath { persist(to: persistPath) }
        }

        /// Where each change is written (`Configuration.persistPath`).
        var persistPath: String?

        /// Writes what runs, whole and atomically, so that a `kill -9` leaves the last change or
        /// the one before, never half of one.
        func persist(to path: String) {
            let persisted = Persisted(
                instances: instances.values.filter { !$0.incoming }.sorted { $0.serial < $1.serial }.map {
                    let state: InstanceState =
                        switch $0.state {
                        case .starting: .running
                        case .stopping: .stopped
                        default: $0.state
                        }
                    return Persisted.Instance(
                        spec: $0.spec, state: state, paused: $0.paused, serial: $0.serial, privateAddress: $0.privateAddress,
                        message: $0.message, snapshots: $0.snapshots)
                }, created: created)
            guard let data = try? JSONEncoder().encode(persisted) else { return }
            try? data.write(to: URL(fileURLWithPath: path), options: .atomic)
        }

        /// Takes over what a previous driver process wrote to `path`, if anything.
        mutating func load(from path: String) {
            guard let persisted = Persisted.read(from: path) else { return }
            created = persisted.created
            for saved in persisted.instances {
                var instance = Instance(
                    spec: saved.spec, state: saved.state, transitionEndsAt: .zero, message: saved.message, serial: saved.serial,
                    privateAddress: saved.privateAddress)
                instance.snapshots = saved.snapshots
                instance.paused = saved.paused
                set(saved.spec.id, instance)
            }
        }

        private mutating func account(_ id: VMID, _ instance: Instance, added: Bool) {
            if instance.state == .running || instance.state == .starting {
                usedMemoryMiB += (added ? 1 : -1) * instance.spec.memoryMiB
            }
            if added && (instance.state == .starting || instance.state == .stopping) && !instance.incoming {
                transitions.insert(Transition(endsAt: instance.transitionEndsAt, id: id))
            }
        }
    }

    public let name = "simulated"
    /// No `.display`: there is no screen to show.
    public let capabilities: Set<Capability> = [.liveMigration, .snapshots, .pause, .virtualTime, .privateNetworks]
    public let configuration: Configuration
    let time: any SimulatedTime
    let state: Mutex<State>

    public init(configuration: Configuration = .init(), time: any SimulatedTime = WallTime()) {
        self.configuration = configuration
        self.time = time
        var state = State(random: SeededGenerator(seed: configuration.seed))
        if let path = configuration.persistPath {
            state.load(from: path)
            state.persistPath = path
        }
        self.state = Mutex(state)
    }

    /// Gives the VM called `name` a workload from now on: it keeps `cores` CPUs busy and its
    /// process holds `residentMiB`, which `usage` reports (CPU time from its process's start, as a
    /// real hypervisor's: a restart or a move here starts it from zero). Until it has one, a VM
    /// reports no usage, like a driver that cannot measure.
    public func setLoad(vmNamed name: String, cores: Double, residentMiB: Int) throws {
        let now = time.now()
        try state.withLock { (s: inout State) throws(VireoError) in
            settle(&s, now: now)
            guard var instance = s.instances.values.first(where: { $0.spec.name == name }) else {
                throw VireoError.notFound("instance", name)
            }
            instance.accrue(to: now)
            instance.workload = Workload(cores: cores, residentMiB: residentMiB)
            s.set(instance.spec.id, instance)
        }
    }

    public func usage(_ id: VMID) async -> ResourceUsage? {
        let now = time.now()
        return state.withLock { s in
            settle(&s, now: now)
            guard let instance = s.instances[id], instance.state == .running, !instance.incoming,
                let workload = instance.workload
            else { return nil }
            return ResourceUsage(
                cpuSeconds: instance.cpuSeconds(at: now), memoryBytes: UInt64(workload.residentMiB) << 20)
        }
    }

    /// Makes the next start of the VM called `name` fail, as a crashing guest would.
    public func injectStartFailure(vmNamed name: String) {
        state.withLock { _ = $0.failStartOf.insert(name) }
    }

    /// The next `times` creates of the VM named `name` fail, with nothing made (as a disk whose
    /// image cannot be opened).
    public func injectCreateFailure(vmNamed name: String, times: Int = 1) {
        state.withLock { $0.failCreateOf[name] = times }
    }

    /// How many creates of the VM named `name` were asked for.
    public func createAttempts(vmNamed name: String) -> Int {
        state.withLock { $0.createAttempts[name, default: 0] }
    }

    public func fingerprint() async throws -> HostFingerprint {
        HostFingerprint(
            cpus: configuration.cpus, memoryMiB: configuration.memoryMiB, driver: name,
            // A simulated VM has no disk to copy: every simulated host "shares" its storage.
            capabilities: Array(capabilities),
            attributes: ["hypervisor": "simulated", HostFingerprint.sharedStorageAttribute: "simulated"])
    }

    /// Instances live in memory only: after a restart there is nothing to re-adopt.
    public func recover() async throws -> [InstanceStatus] { try await status() }

    public func create(_ spec: InstanceSpec) async throws {
        if let display = spec.display {
            throw VireoError(.unsupported, "display '\(display.rawValue)': driver '\(name)' has no display")
        }
        if let network = spec.privateNetwork, network.isEmpty || network.count > 128 {
            throw VireoError.invalid(field: "privateNetwork", value: "'\(network)'", "expected a name of 1 to 128 characters")
        }
        try state.withLock { (s: inout State) throws(VireoError) in
            s.createAttempts[spec.name, default: 0] += 1
            if let left = s.failCreateOf[spec.name], left > 0 {
                s.failCreateOf[spec.name] = left - 1
                throw VireoError(.internal, "simulated create failure")
            }
            if let existing = s.instances[spec.id] {
                guard existing.spec == spec else {
                    throw VireoError(.conflict, "VM \(spec.id) already exists with a different spec")
                }
                return
            }
            var instance = Instance(spec: spec, state: .stopped, transitionEndsAt: .zero, serial: s.created)
            if let network = spec.privateNetwork { instance.privateAddress = try Self.privateAddress(on: network, &s) }
            s.set(spec.id, instance)
            s.created += 1
        }
    }

    public func start(_ id: VMID) async throws {
        let now = time.now()
        try state.withLock { (s: inout State) throws(VireoError) in
            settle(&s, now: now)
            guard var instance = s.instances[id] else { throw VireoError.notFound("instance", id.rawValue) }
            switch instance.state {
            case .running, .starting: return
            case .stopping: throw VireoError(.failedPrecondition, "VM '\(instance.spec.name)' is stopping")
            case .stopped, .failed: break
            }
            if let failure = startFailure(of: instance, &s) {
                instance.state = .failed
                instance.message = failure
            } else {
                instance.state = .starting
                instance.message = nil
                instance.transitionEndsAt = now + configuration.bootDelay
                instance.console +=
                    "[simulated] booting \(instance.spec.name): \(instance.spec.cpus) vCPU, "
                    + "\(instance.spec.memoryMiB) MiB, image \(instance.spec.image)\n"
            }
            s.set(id, instance)
        }
    }

    /// Why a start of `instance` fails, if it does: the host has no memory for it, or a failure
    /// was injected (by name, or by the seeded probability).
    func startFailure(of instance: Instance, _ s: inout State) -> String? {
        let used = s.usedMemoryMiB
        if used + instance.spec.memoryMiB > configuration.memoryMiB {
            return "host out of memory: \(used) MiB in use of \(configuration.memoryMiB) MiB"
        }
        if s.failStartOf.remove(instance.spec.name) != nil
            || (configuration.startFailureProbability > 0
                && Double.random(in: 0..<1, using: &s.random) < configuration.startFailureProbability)
        {
            return "simulated boot failure"
        }
        return nil
    }

    public func stop(_ id: VMID) async throws {
        let now = time.now()
        try state.withLock { (s: inout State) throws(VireoError) in
            settle(&s, now: now)
            guard var instance = s.instances[id] else { throw VireoError.notFound("instance", id.rawValue) }
            switch instance.state {
            case .stopped, .stopping: return
            case .failed:
                instance.state = .stopped
            case .running, .starting:
                instance.accrue(to: now)
                instance.state = .stopping
                instance.transitionEndsAt = now + configuration.stopDelay
            }
            s.set(id, instance)
        }
    }

    public func powerOff(_ id: VMID) async throws {
        let now = time.now()
        try state.withLock { (s: inout State) throws(VireoError) in
            settle(&s, now: now)
            guard var instance = s.instances[id] else { throw VireoError.notFound("instance", id.rawValue) }
            guard [.starting, .running, .stopping].contains(instance.state) else { return }
            instance.accrue(to: now)
            instance.state = .stopped
            s.set(id, instance)
        }
    }

    public func delete(_ id: VMID) async throws {
        state.withLock { $0.set(id, nil) }
    }

    public func status() async throws -> [InstanceStatus] {
        let now = time.now()
        return state.withLock { s in
            settle(&s, now: now)
            return s.instances.values.map {
                InstanceStatus(
                    id: $0.spec.id, name: $0.spec.name, state: $0.state, message: $0.message,
                    address: $0.state == .running ? $0.privateAddress ?? Self.address(serial: $0.serial) : nil,
                    paused: $0.state == .running && $0.paused ? true : nil)
            }.sorted { $0.name < $1.name }
        }
    }

    /// Stops the guest's vCPUs: it stays running, paused, until `resume`.
    public func pause(_ id: VMID) async throws { try setPaused(id, true) }

    public func resume(_ id: VMID) async throws { try setPaused(id, false) }

    private func setPaused(_ id: VMID, _ paused: Bool) throws {
        let now = time.now()
        try state.withLock { s in
            settle(&s, now: now)
            guard var instance = s.instances[id], !instance.incoming else { throw VireoError.notFound("VM", id.rawValue) }
            guard instance.state == .running else {
                throw VireoError(
                    .failedPrecondition,
                    "VM \(instance.spec.name) is \(instance.state.rawValue), not running: it cannot be \(paused ? "paused" : "resumed")"
                )
            }
            instance.paused = paused
            s.set(id, instance)
        }
    }

    // MARK: Live migration, modelled: memory at `migrationBandwidth`, a fixed switch-over pause.

    /// Bytes per second a simulated migration moves, and the pause at the switch-over.
    public static let migrationBandwidth: UInt64 = 1 << 30
    public static let migrationDowntimeMs = 20

    /// `credentials` are accepted and ignored: a simulated migration has no channel to secure.
    public func prepareIncoming(
        _ spec: InstanceSpec, guestAddress: String?, listenAddress: String, storage: MigrationStorage,
        credentials: MigrationCredentials?
    ) async throws -> String {
        // A simulated VM has no disk: there is nothing to copy.
        guard storage == .shared else {
            throw VireoError(.unsupported, "driver '\(name)' cannot copy a VM's disk during live migration")
        }
        let uri = "sim://\(listenAddress)/\(spec.id)"
        try state.withLock { (s: inout State) throws(VireoError) in
            if let existing = s.instances[spec.id] {
                guard existing.incoming else {
                    throw VireoError(.conflict, "VM '\(spec.name)' is already on this host")
                }
                return
            }
            let used = s.usedMemoryMiB
            guard used + spec.memoryMiB <= configuration.memoryMiB else {
                throw VireoError(.unavailable, "host out of memory: \(used) MiB in use of \(configuration.memoryMiB) MiB")
            }
            var instance = Instance(spec: spec, state: .starting, transitionEndsAt: .zero, serial: s.created)
            instance.incoming = true
            s.set(spec.id, instance)
            s.created += 1
        }
        return uri
    }

    public func migrate(
        _ id: VMID, to uri: String, credentials: MigrationCredentials?,
        progress: @escaping @Sendable (MigrationProgress) -> Void
    ) async throws -> MigrationStats {
        let now = time.now()
        let memoryMiB = try state.withLock { (s: inout State) throws(VireoError) -> Int in
            settle(&s, now: now)
            guard let instance = s.instances[id], instance.state == .running else {
                throw VireoError(.failedPrecondition, "VM \(id) is not running here")
            }
            return instance.spec.memoryMiB
        }
        let bytes = UInt64(memoryMiB) << 20
        progress(MigrationProgress(transferredBytes: bytes, remainingBytes: 0, totalBytes: bytes))
        return MigrationStats(
            totalTimeMs: Int(bytes * 1000 / Self.migrationBandwidth) + Self.migrationDowntimeMs,
            downtimeMs: Self.migrationDowntimeMs, transferredBytes: bytes)
    }

    public func release(_ id: VMID) async throws {
        state.withLock { $0.set(id, nil) }
    }

    public func finishIncoming(_ id: VMID) async throws {
        let now = time.now()
        try state.withLock { (s: inout State) throws(VireoError) in
            guard var instance = s.instances[id] else { throw VireoError.notFound("instance", id.rawValue) }
            guard instance.incoming else { return }
            instance.incoming = false
            instance.state = .running
            instance.restartAccounting(at: now)
            instance.console += "[simulated] \(instance.spec.name) resumed after live migration\n"
            s.set(id, instance)
        }
    }

    public func abortIncoming(_ id: VMID) async throws {
        state.withLock { s in
            if s.instances[id]?.incoming == true { s.set(id, nil) }
        }
    }

    /// A synthetic address in 198.18.0.0/15 (RFC 2544, set aside for benchmarks), so simulated
    /// VMs look like real ones without claiming a routable address.
    static func address(serial: Int) -> String {
        let n = serial % (1 << 17)
        return "198.\(18 + (n >> 16)).\((n >> 8) & 0xFF).\(n & 0xFF):80"
    }

    /// The synthetic console: a line per boot, a ready line, a line per shutdown.
    public func consoleOutput(_ id: VMID, from offset: UInt64, limit: Int) async throws -> ConsoleChunk {
        let now = time.now()
        let console = try state.withLock { (s: inout State) throws(VireoError) in
            settle(&s, now: now)
            guard let instance = s.instances[id] else { throw VireoError.notFound("instance", id.rawValue) }
            return Array(instance.console.utf8)
        }
        let start = offset <= UInt64(console.count) ? Int(offset) : 0
        let end = min(console.count, start + max(0, limit))
        return ConsoleChunk(
            offset: UInt64(start), next: UInt64(end), text: String(decoding: console[start..<end], as: UTF8.self))
    }

    /// What a new driver process takes over (`Configuration.persistPath`): every instance but one
    /// waiting for a migration (a real destination's waiting QEMU dies with its migration), in a
    /// settled state. `vireo chaos` reads it to see what each host runs.
    public struct Persisted: Codable, Sendable {
        public struct Instance: Codable, Sendable {
            public var spec: InstanceSpec
            public var state: InstanceState
            public var paused: Bool
            var serial: Int
            var privateAddress: String?
            var message: String?
            public var snapshots: [String]
        }
        public var instances: [Instance]
        var created: Int

        /// The file at `path`, if there is one that reads.
        public static func read(from path: String) -> Persisted? {
            FileManager.default.contents(atPath: path).flatMap { try? JSONDecoder().decode(Persisted.self, from: $0) }
        }
    }

    struct Transition: Comparable {
        var endsAt: Duration
        var id: VMID
        static func < (a: Transition, b: Transition) -> Bool { a.endsAt < b.endsAt }
        static func == (a: Transition, b: Transition) -> Bool { a.endsAt == b.endsAt && a.id == b.id }
    }

    /// Finishes the transitions whose time has come.
    func settle(_ s: inout State, now: Duration) {
        while let next = s.transitions.min, next.endsAt <= now {
            s.popTransition()
            guard var instance = s.instances[next.id], instance.transitionEndsAt == next.endsAt, !instance.incoming
            else { continue }
            switch instance.state {
            case .starting:
                instance.state = .running
                instance.paused = false
                instance.restartAccounting(at: instance.transitionEndsAt)
                instance.console += "[simulated] \(instance.spec.name) ready\n"
            case .stopping:
                instance.state = .stopped
                instance.console += "[simulated] \(instance.spec.name) powered off\n"
            default: continue
            }
            s.set(next.id, instance)
        }
    }
}

extension DriverRegistry {
    /// Registers the simulated driver. Settings: `cpus`, `memory` (a size), `boot-delay-ms`,
    /// `stop-delay-ms`, `fail-probability`, `seed`, `snapshot-save-ms`, `snapshot-load-ms`,
    /// `snapshot-wait` (`on`: a save and a load take those times on the wall clock), `persist`
    /// (`on`: what it runs is kept in `<state-dir>/simulated.json` and outlives the process).
    public mutating func registerSimulated() {
        register("simulated") { options in
            var config = SimulatedDriver.Configuration()
            let settings = options.settings
            try options.rejectUnknown(
                driver: "simulated",
                allowed: [
                    "cpus", "memory", "boot-delay-ms", "stop-delay-ms", "seed", "fail-probability", "snapshot-save-ms",
                    "snapshot-load-ms", "snapshot-wait", "persist",
                ])
            let int = options.int
            if let cpus = try int("cpus") { config.cpus = cpus }
            if let memory = settings["memory"] { config.memoryMiB = try ByteSize.parseMiB(memory, field: "memory") }
            if let ms = try int("boot-delay-ms") { config.bootDelay = .milliseconds(ms) }
            if let ms = try int("stop-delay-ms") { config.stopDelay = .milliseconds(ms) }
            if let ms = try int("snapshot-save-ms") { config.snapshotSaveTime = .milliseconds(ms) }
            if let ms = try int("snapshot-load-ms") { config.snapshotLoadTime = .milliseconds(ms) }
            if let seed = try int("seed") { config.seed = UInt64(seed) }
            if let text = settings["fail-probability"] {
                guard let p = Double(text), p >= 0, p <= 1 else {
                    throw VireoError.invalid(field: "fail-probability", value: "'\(text)'", "must be in [0, 1]")
                }
                config.startFailureProbability = p
            }
            switch settings["snapshot-wait"] {
            case nil, "off": break
            case "on": config.snapshotsTakeTime = true
            case let other?: throw VireoError.invalid(field: "snapshot-wait", value: "'\(other)'", "must be on or off")
            }
            switch settings["persist"] {
            case nil, "off": break
            case "on":
                try FileManager.default.createDirectory(atPath: options.stateDirectory, withIntermediateDirectories: true)
                config.persistPath = options.stateDirectory + "/simulated.json"
            case let other?: throw VireoError.invalid(field: "persist", value: "'\(other)'", "must be on or off")
            }
            return SimulatedDriver(configuration: config)
        }
    }
}
