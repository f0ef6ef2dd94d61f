import ArgumentParser
import Foundation
import VireoAPI
import VireoAgent
import VireoClient
import VireoDriver
import VireoDriverSimulated
import VireoModel

struct ChaosCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chaos",
        abstract:
            "Kill -9 the controller or an agent in the middle of random operations, and check after each round that nothing was lost.",
        discussion: """
            Starts a controller (SQLite) and two agents, and round after round starts an operation — a \
            create (half of them with restartPolicy: always), a delete, a stop or start, a live \
            migration, an application applied, a rebalancing plan executed, a desktop context opened, \
            reset, kept or closed — and, 0 to 500 ms later (half the time within 20 ms, while the \
            request may still be in flight), kills the controller (4 rounds in 10) or an agent with \
            SIGKILL and starts it again (an agent is sometimes kept down past --host-lost-after, so its \
            host is lost). Then the invariants must hold: no VM lost or appeared from nowhere, each \
            running VM running on exactly one host — its own — and nothing running that the \
            controller does not place there, every migration ended (a failed one with its reason), no \
            guest left paused; every context opened and not closed running on its own host alone from \
            the one clean state its host names, with nothing left half done. A round whose invariants \
            do not hold in time (30 s; 120 s with qemu) is a violation, named.
            --driver simulated (the default): processes on loopback; the driver keeps what it runs in \
            a file (--driver-opt persist=on), so its VMs outlive a killed agent as QEMUs do.
            --driver qemu (root): a two-host testbed (`vireo testbed`: network namespaces \
            vchaos-h1/-h2 on 198.19.0.0/16, shared disk storage) taken down at the end; what each host \
            runs is read from the QEMU processes in its namespace (one per running VM), whether a \
            guest is paused from its vCPU threads, a context's snapshots from its disk.
            Exit status: 0 when there was no violation, 1 otherwise.
            Examples: vireo chaos --rounds 50 -o json
                      sudo vireo chaos --driver qemu --rounds 50 -o json
            """)

    @Option(help: ArgumentHelp("Rounds: one fault each.", valueName: "n")) var rounds: Int = 50
    @Option(help: ArgumentHelp("Seed of the random choices (default: random; printed).", valueName: "n")) var seed: UInt64?
    @Option(
        help: ArgumentHelp(
            "Hypervisor driver of the agents: simulated (processes on loopback), or qemu (a two-host testbed of "
                + "network namespaces on 198.19.0.0/16 with shared disk storage; root; rounds take seconds, as guests boot "
                + "under TCG).", valueName: "driver"))
    var driver: String = "simulated"
    @Option(
        help: ArgumentHelp(
            "With --driver qemu: where guest images are built and kept (default: in the run's directory, built on the first create).",
            valueName: "dir"))
    var images: String?
    @Option(help: ArgumentHelp("Directory for the processes' data and logs (default: a new temporary one).", valueName: "dir"))
    var dir: String?
    @Flag(help: "Keep the directory afterwards.") var keep = false
    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard (1...10_000).contains(rounds) else { throw ValidationError("--rounds: give 1 to 10000 (got \(rounds))") }
        guard ["simulated", "qemu"].contains(driver) else {
            throw ValidationError("--driver: '\(driver)' is not a chaos driver; give simulated or qemu")
        }
        if driver == "qemu", getuid() != 0 {
            throw ValidationError("--driver qemu: the testbed creates network namespaces, bridges and cgroups: run it as root")
        }
        if images != nil, driver != "qemu" { throw ValidationError("--images: only with --driver qemu") }
    }

    func run() async throws {
        let directory = dir ?? FileManager.default.temporaryDirectory.path + "/vireo-chaos-\(UUID().uuidString.prefix(8))"
        let seed = seed ?? UInt64.random(in: 1...UInt64(UInt32.max))
        let cluster: any ChaosCluster =
            driver == "qemu"
            ? TestbedChaosCluster(directory: directory, images: images) : LoopbackChaosCluster(directory: directory)
        let chaos = Chaos(cluster: cluster, directory: directory, rounds: rounds, seed: seed) { line in
            FileHandle.standardError.write(Data("chaos: \(line)\n".utf8))
        }
        let result = try await cancellableBySignals { try await chaos.run() }
        if !keep { try? FileManager.default.removeItem(atPath: directory) }
        if output.output == .json {
            try printJSON(result)
        } else {
            print(
                "\(result.rounds) rounds, \(result.faults) faults (controller \(result.faultsByTarget["controller"] ?? 0), "
                    + "agents \(result.faultsByTarget["agent"] ?? 0), \(result.hostsLost) kept down until their host was lost), "
                    + "\(result.violations) violation(s) in \(result.seconds) s (seed \(result.seed))")
            print(
                "operations: "
                    + result.operations.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
            for line in result.details { print("  violation: \(line)") }
        }
        if result.violations > 0 { throw ExitCode.failure }
    }
}

/// What a chaos run did and found.
struct ChaosResult: Codable, Equatable {
    var rounds: Int
    var faults: Int
    var violations: Int
    var seed: UInt64
    /// Faults by what was killed: `controller` or `agent`.
    var faultsByTarget: [String: Int]
    /// Agents kept down past `--host-lost-after`.
    var hostsLost: Int
    /// Operations started, by kind, and how many of them failed (their request got an error).
    var operations: [String: Int]
    var operationsFailed: Int
    /// VMs at the end.
    var vms: Int
    /// Each violation: the round and what did not hold.
    var details: [String]
    /// How long the rounds took to settle after their fault: the longest, in seconds.
    var settleMaxSeconds: Double
    var seconds: Double
}

/// One chaos run: the processes, the rounds, the checks.
final class Chaos: @unchecked Sendable {
    let directory: String
    let rounds: Int
    let seed: UInt64
    let progress: @Sendable (String) -> Void
    let cluster: any ChaosCluster
    var hosts: [String] { cluster.hosts }
    var random: SeededGenerator
    /// VMs whose create was answered and that have not been deleted since.
    var expected: Set<String> = []
    /// VMs whose create or delete got no answer (the fault cut it): either outcome is right, and
    /// the round's settled state says which it was.
    var uncertain: Set<String> = []
    /// Contexts whose open was answered and that have not been closed since; those whose open or
    /// close got no answer; and, by context, the resets its last answered reset counted (a context
    /// may not count fewer later: a reset that was answered is not undone).
    var contexts: Set<String> = []
    var uncertainContexts: Set<String> = []
    var resetsAnswered: [String: Int] = [:]

    init(
        cluster: any ChaosCluster, directory: String, rounds: Int, seed: UInt64, progress: @escaping @Sendable (String) -> Void
    ) {
        self.cluster = cluster
        self.directory = directory
        self.rounds = rounds
        self.seed = seed
        self.random = SeededGenerator(seed: seed)
        self.progress = progress
    }

    var url: String { cluster.url }
    var api: VireoClient { VireoClient(server: url, token: cluster.token, timeout: .seconds(5)) }

    func run() async throws -> ChaosResult {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        do {
            let result = try await rounds()
            await cluster.tearDown()
            return result
        } catch {
            await cluster.tearDown()
            throw error
        }
    }

    func rounds() async throws -> ChaosResult {
        try await cluster.start(progress: progress)
        try await benchWait("the controller answers", within: 60) { (try? await api.health()) != nil }
        try await benchWait("\(hosts.count) hosts ready", within: 120) {
            try await api.hosts().items.filter { $0.state == .ready }.count == hosts.count
        }
        progress("controller on \(url), agents \(hosts.joined(separator: ", ")); \(rounds) rounds, seed \(seed); in \(directory)")
        let start = ContinuousClock.now
        var result = ChaosResult(
            rounds: 0, faults: 0, violations: 0, seed: seed, faultsByTarget: [:], hostsLost: 0, operations: [:],
            operationsFailed: 0, vms: 0, details: [], settleMaxSeconds: 0, seconds: 0)
        for round in 1...rounds {
            try Task.checkCancellation()
            let planned = await prepare(round: round)
            let kind = planned.kind
            result.operations[kind, default: 0] += 1
            // Until it is answered, either outcome of a create or delete is right.
            if let name = planned.decides { uncertain.insert(name) }
            if let name = planned.decidesContext { uncertainContexts.insert(name) }
            let api = self.api
            let operation = Task { try await Self.perform(planned, api: api) }
            // Half the faults land within 20 ms, while the request itself may still be in flight;
            // the others during what it set going (a boot, a migration's steps, a plan's moves).
            let delay =
                Bool.random(using: &random) ? Int.random(in: 0..<20, using: &random) : Int.random(in: 0...500, using: &random)
            try await Task.sleep(for: .milliseconds(delay))
            let target = Int.random(in: 0..<10, using: &random) < 4 ? "controller" : hosts.randomElement(using: &random)!
            let keepDown = target != "controller" && Int.random(in: 0..<5, using: &random) == 0
            try await fault(target, keepDown: keepDown)
            result.faults += 1
            result.faultsByTarget[target == "controller" ? "controller" : "agent", default: 0] += 1
            if keepDown { result.hostsLost += 1 }
            switch await operation.result {
            case .success(let context):
                if let name = planned.decides {
                    uncertain.remove(name)
                    if case .delete = planned { expected.remove(name) } else { expected.insert(name) }
                }
                if let name = planned.decidesContext {
                    uncertainContexts.remove(name)
                    if case .closeContext = planned { contexts.remove(name) } else { contexts.insert(name) }
                }
                if case .resetContext(let name, _) = planned, let context { resetsAnswered[name] = context.resets }
            case .failure: result.operationsFailed += 1
            }
            let settleStart = ContinuousClock.now
            let problems = await settle()
            // Settled (or given up on): what was uncertain is whatever the controller now says.
            let names = Set(((try? await self.api.allVMs()) ?? []).map(\.name))
            for name in uncertain { if names.contains(name) { expected.insert(name) } else { expected.remove(name) } }
            uncertain.removeAll()
            let contextNames = Set(((try? await self.api.listContexts().items) ?? []).map(\.name))
            for name in uncertainContexts {
                if contextNames.contains(name) { contexts.insert(name) } else { contexts.remove(name) }
            }
            uncertainContexts.removeAll()
            result.settleMaxSeconds = max(result.settleMaxSeconds, settleStart.duration(to: .now).secondsValue)
            result.rounds = round
            for problem in problems { result.details.append("round \(round) (\(kind), kill -9 \(target)): \(problem)") }
            result.violations = result.details.count
            progress(
                "round \(round): \(kind), \(delay) ms later kill -9 \(target)\(keepDown ? " (kept down until lost)" : ""): "
                    + (problems.isEmpty
                        ? "invariants hold" : "\(problems.count) violation(s): \(problems.joined(separator: "; "))"))
        }
        result.vms = (try? await api.allVMs().count) ?? -1
        result.seconds = (start.duration(to: .now).secondsValue * 10).rounded() / 10
        result.settleMaxSeconds = (result.settleMaxSeconds * 10).rounded() / 10
        return result
    }

    // MARK: Faults

    /// SIGKILL, then a new process in its place: at once, or for an agent kept down, once the
    /// controller has declared its host lost.
    func fault(_ target: String, keepDown: Bool) async throws {
        await cluster.crash(target)
        if keepDown {
            try? await benchWait("\(target) lost", within: 30, every: .milliseconds(100)) {
                try await api.host(target).state == .lost
            }
        }
        try await cluster.restart(target)
    }

    // MARK: Operations

    /// An operation with its random choices made: `perform` only sends it, so that nothing but
    /// the rounds' own loop touches the generator and the bookkeeping.
    enum Operation {
        case create(String, always: Bool)
        case apply(String, app: String)
        case delete(String)
        case stop(String)
        case start(String)
        case migrate(String, to: String)
        case plan
        case openContext(String, disposable: Bool)
        case resetContext(String, force: Bool)
        case keepContext(String)
        case closeContext(String)
        case nothing

        var kind: String {
            switch self {
            case .create: "create"
            case .apply: "apply"
            case .delete: "delete"
            case .stop, .start: "stop-start"
            case .migrate: "migrate"
            case .plan: "plan"
            case .openContext: "context-open"
            case .resetContext: "context-reset"
            case .keepContext: "context-keep"
            case .closeContext: "context-close"
            case .nothing: "nothing"
            }
        }

        /// The VM whose existence the operation decides, if any.
        var decides: String? {
            switch self {
            case .create(let name, _), .apply(let name, _), .delete(let name): name
            default: nil
            }
        }

        /// The context whose existence the operation decides, if any.
        var decidesContext: String? {
            switch self {
            case .openContext(let name, _), .closeContext(let name): name
            default: nil
            }
        }
    }

    /// Picks the round's operation: creates while there are few VMs, deletes when there are many.
    func prepare(round: Int) async -> Operation {
        let kinds =
            expected.count < cluster.vmRange.low
            ? ["create", "create", "apply", "context"]
            : expected.count > cluster.vmRange.high
                ? ["delete", "delete", "stop-start", "migrate", "plan", "context"]
                : ["create", "delete", "stop-start", "migrate", "migrate", "apply", "plan", "context", "context"]
        let known = expected.sorted()
        switch kinds.randomElement(using: &random)! {
        case "context": return await prepareContext(round: round)
        case "create": return .create("c-\(round)", always: Bool.random(using: &random))
        case "apply": return .apply("a-\(round)", app: "app-\(round)")
        case "delete": return known.randomElement(using: &random).map { .delete($0) } ?? .nothing
        case "stop-start":
            guard let name = known.randomElement(using: &random), let vm = try? await api.vm(name) else { return .nothing }
            return vm.intent == .running ? .stop(name) : .start(name)
        case "migrate":
            let running = ((try? await api.allVMs()) ?? []).filter { $0.state == .running && expected.contains($0.name) }
            guard let vm = running.randomElement(using: &random), let host = vm.host else { return .nothing }
            return .migrate(vm.name, to: host == "h1" ? "h2" : "h1")
        default: return .plan
        }
    }

    /// A context verb: opens while there are few contexts, then resets, keeps and closes them.
    func prepareContext(round: Int) async -> Operation {
        let open = contexts.sorted()
        let verbs =
            open.isEmpty ? ["open"] : open.count < 3 ? ["open", "reset", "reset", "keep", "close"] : ["reset", "keep", "close"]
        let verb = verbs.randomElement(using: &random)!
        if verb == "open" { return .openContext("x-\(round)", disposable: Bool.random(using: &random)) }
        let name = open.randomElement(using: &random)!
        switch verb {
        case "reset":
            let kind = try? await api.context(name, host: nil).kind
            return .resetContext(name, force: kind == .persistent)
        case "keep": return .keepContext(name)
        default: return .closeContext(name)
        }
    }

    /// Sends one operation through the API; the answer's context, for a context verb.
    static func perform(_ operation: Operation, api: VireoClient) async throws -> Context? {
        switch operation {
        case .create(let name, let always):
            var body: [String: JSONValue] = ["name": .string(name), "image": .string("tiny"), "memory": .string("80MiB")]
            if always { body["restartPolicy"] = .string("always") }
            _ = try await api.createVM(body)
        case .apply(let name, let app):
            _ = try await api.apply(
                manifest: """
                    apiVersion: vireo/v1
                    kind: Application
                    metadata: { name: \(app) }
                    spec:
                      vms: [{ name: \(name), image: tiny, memory: 80MiB, restartPolicy: always }]
                    """)
        case .delete(let name): _ = try await api.deleteVM(name)
        case .stop(let name): _ = try await api.stopVM(name)
        case .start(let name): _ = try await api.startVM(name)
        case .migrate(let name, let host): _ = try await api.migrateVM(name, to: host)
        case .plan: _ = try await api.plan(policy: "threshold", execute: true)
        case .openContext(let name, let disposable):
            let spec = ContextSpec(
                name: name, kind: disposable ? .disposable : .persistent, image: "tiny", cpus: 1, memoryMiB: 80)
            return try await api.openContext(ContextOpenRequest(spec: spec, wait: true))
        case .resetContext(let name, let force): return try await api.resetContext(name, host: nil, force: force)
        case .keepContext(let name): return try await api.keepContext(name, host: nil)
        case .closeContext(let name): return try await api.closeContext(name, host: nil)
        case .nothing: break
        }
        return nil
    }

    // MARK: Invariants

    /// Waits until the invariants hold, up to `settleWithin`; returns what still does not hold.
    func settle() async -> [String] {
        let deadline = ContinuousClock.now + .seconds(cluster.settleWithin)
        var problems: [String] = []
        repeat {
            problems = await check()
            if problems.isEmpty { return [] }
            try? await Task.sleep(for: .milliseconds(cluster.settleWithin > 30 ? 1000 : 200))
        } while ContinuousClock.now < deadline
        return problems
    }

    /// What does not hold now; empty when everything does.
    func check() async -> [String] {
        let api = self.api
        let vms: [VMView]
        let hostList: [HostView]
        let migrations: [MigrationView]
        let contextList: [Context]
        do {
            vms = try await api.allVMs()
            hostList = try await api.hosts().items
            migrations = try await api.migrations(limit: 1000).items
            contextList = try await api.listContexts().items
        } catch {
            return ["the controller does not answer: \(error)"]
        }
        var problems: [String] = []
        for host in hostList where host.state != .ready { problems.append("host \(host.name) is \(host.state.rawValue)") }
        let names = Set(vms.map(\.name))
        for name in expected.subtracting(names).subtracting(uncertain).sorted() { problems.append("VM \(name) lost") }
        for name in names.subtracting(expected).subtracting(uncertain).sorted() {
            problems.append("VM \(name) appeared, created by nobody")
        }
        for migration in migrations {
            if migration.state.isActive {
                problems.append("migration of \(migration.vm) still \(migration.state.rawValue)")
            } else if migration.state == .failed, (migration.message ?? "").isEmpty {
                problems.append("migration of \(migration.vm) failed without a reason")
            }
        }
        // What each host runs, seen from outside its agent, and the contexts its agent keeps (their
        // VMs are the host's own, not the controller's).
        var running: [String: [String]] = [:]  // VM name → hosts running it
        var snapshots: [VMID: [String]] = [:]
        var books: [String: [ContextBookView]] = [:]
        for host in hosts {
            let observed = await cluster.observe(host)
            books[host] = observed.contexts
            if let unreadable = observed.unreadableBook { problems.append("\(host)'s context book: \(unreadable)") }
            snapshots.merge(observed.snapshots) { a, _ in a }
            let contextVMs = Set(observed.contexts.map(\.vm))
            for instance in observed.instances {
                let isContext = contextVMs.contains(instance.id)
                if !isContext {
                    let owner = vms.first { $0.id == instance.id }
                    if owner == nil || owner?.host != host {
                        problems.append(
                            "\(host) keeps \(instance.name) (\(instance.running ? "running" : "not running")), placed "
                                + (owner?.host.map { "on \($0)" } ?? "nowhere"))
                    }
                }
                if instance.paused == true {
                    problems.append("\(isContext ? "context " : "")\(instance.name) is left paused on \(host)")
                }
                if instance.running { running[instance.name, default: []].append(host) }
            }
        }
        for vm in vms {
            let on = running[vm.name] ?? []
            switch (vm.intent, vm.state) {
            case (.running, .running):
                if on != [vm.host ?? "-"] {
                    problems.append(
                        "\(vm.name) runs on \(on.isEmpty ? "no host" : on.joined(separator: " and ")), placed on \(vm.host ?? "-")"
                    )
                }
            case (.stopped, .stopped):
                if !on.isEmpty { problems.append("\(vm.name) is stopped, yet runs on \(on.joined(separator: " and "))") }
            default:
                problems.append(
                    "\(vm.name) is \(vm.state.rawValue) (wanted \(vm.intent.rawValue))\(vm.message.map { ": \($0)" } ?? "")")
            }
        }
        problems += checkContexts(contextList, books: books, running: running, snapshots: snapshots)
        return problems
    }

    /// The contexts' invariants: each open one (and no other) runs on its host alone from a clean
    /// state its host keeps, with no operation left half done and no reset that was answered undone.
    func checkContexts(
        _ listed: [Context], books: [String: [ContextBookView]], running: [String: [String]],
        snapshots: [VMID: [String]]
    ) -> [String] {
        var problems: [String] = []
        let names = Set(listed.map(\.name))
        for name in contexts.subtracting(names).subtracting(uncertainContexts).sorted() {
            problems.append("context \(name) lost")
        }
        for name in names.subtracting(contexts).subtracting(uncertainContexts).sorted() {
            problems.append("context \(name) appeared, opened by nobody")
        }
        for (host, book) in books.sorted(by: { $0.key < $1.key }) {
            for record in book where !record.pooled {
                if let pending = record.pending {
                    problems.append("context \(record.name) on \(host) has its \(pending) left half done")
                }
                if !listed.contains(where: { $0.vm == record.vm && $0.host == host }) {
                    problems.append("\(host) keeps context \(record.name), which the controller does not list there")
                }
            }
        }
        for context in listed {
            if context.state != .running {
                problems.append("context \(context.name) is \(context.state.rawValue)\(context.message.map { ": \($0)" } ?? "")")
            }
            let on = running[context.name] ?? []
            if on != [context.host] {
                problems.append(
                    "context \(context.name) runs on \(on.isEmpty ? "no host" : on.joined(separator: " and ")), kept on \(context.host)"
                )
            }
            if let answered = resetsAnswered[context.name], context.resets < answered {
                problems.append(
                    "context \(context.name) counts \(context.resets) resets, after a reset answered with \(answered)")
            }
            guard let record = books[context.host]?.first(where: { $0.vm == context.vm }) else {
                problems.append("context \(context.name) is not in \(context.host)'s book")
                continue
            }
            guard let tags = snapshots[context.vm] else {
                problems.append("context \(context.name)'s snapshots cannot be read on \(context.host)")
                continue
            }
            if record.cleanTag == nil || tags != [record.cleanTag!] {
                problems.append(
                    "context \(context.name)'s clean state is \(record.cleanTag ?? "none"), its VM has snapshots [\(tags.joined(separator: ", "))]"
                )
            }
        }
        return problems
    }
}
