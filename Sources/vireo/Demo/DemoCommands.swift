import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import Synchronization
import VireoAPI
import VireoClient
import VireoController
import VireoModel
import VireoTestbed

struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Rebalancing scenarios end to end on real QEMU guests in a two-host testbed (root).",
        discussion: """
            Each scenario brings up `vireo testbed` with two hosts (a CPU each), runs the `web` \
            application (p90 latency ≤ 15 ms on 5 s windows, latency counted from a request's arrival \
            in the guest; breaching when two of the last four windows are bad) on h1 under an \
            open-loop load (--rate requests a second, as users arrive, whether or not earlier ones \
            were answered; lowered until web alone keeps h1 at most 60 % busy, since guests under \
            TCG cost more per request on some machines than on others), lets the cluster rebalance itself with --policy, prints the timeline and \
            takes the testbed down. Times are seconds since the scenario's disturbance started.
            """,
        subcommands: [NoisyNeighbourDemo.self, MisleadingCountersDemo.self])
}

struct DemoOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Rebalancing policy: slo, threshold or threshold-<fraction>.", valueName: "policy"))
    var policy: String = "slo"
    @Option(
        help: ArgumentHelp("Directory for the testbed: each run uses a new subdirectory, removed afterwards.", valueName: "dir"))
    var dir: String = ServeOptions.defaultDataDirectory() + "/demo"
    @Option(help: ArgumentHelp("Directory guest images are built and kept in.", valueName: "dir"))
    var images: String = ServeOptions.defaultDataDirectory() + "/images"
    @Option(help: ArgumentHelp("Prefix of the testbed's interface and namespace names.", valueName: "name"))
    var name: String = "vdemo"
    @Option(help: ArgumentHelp("Network: 198.18 or 198.19.", valueName: "prefix")) var network: String = "198.18"
    @Option(help: ArgumentHelp("How long to watch after the disturbance starts, seconds.", valueName: "seconds"))
    var duration: Double = 60
    @Option(help: ArgumentHelp("The web objective: p90 latency target, seconds.", valueName: "seconds"))
    var target: Double = 0.015
    @Option(
        help: ArgumentHelp(
            "Requests a second sent to web, open loop (at most 8 in flight); lowered before the disturbance while web alone "
                + "keeps h1 more than 60 % busy.", valueName: "n"))
    var rate: Double = 100
    @Flag(help: "Leave the testbed up afterwards.") var keep = false
    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard rate > 0, rate <= 10_000 else {
            throw ValidationError("--rate: give requests a second from 1 to 10000 (got \(rate))")
        }
        guard duration > 0 else { throw ValidationError("--duration: give seconds, more than 0 (got \(duration))") }
        guard target > 0 else { throw ValidationError("--target: give seconds, more than 0 (got \(target))") }
    }
}

struct NoisyNeighbourDemo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "noisy-neighbour",
        abstract: "A CPU-hungry VM without objectives starts next to web: does the policy notice, move it, and web recover?",
        discussion: """
            `noisy` (3 vCPUs, no application) is placed first, on h1; `web-1` (1 vCPU) is pinned to \
            h1. Once web meets its objective under load, noisy starts a busy thread on each vCPU: \
            four runnable vCPUs share h1's CPU, so web gets about a quarter of it, less than its load \
            needs, and requests queue. The timeline shows when the objective breached, when a plan \
            was made, the migration and its downtime, and when the objective was ok again; -o json \
            prints it as one object (policy, breachDetectedAt, planAt, migrationStartedAt, \
            migrationEndedAt, downtimeMs, recoveredAt, migrations, explanation). The scenario \
            checks its premise: if web's objective never leaves ok while noisy runs, the run fails \
            and says so (with web's latency and h1's load) instead of reporting a move that had no \
            reason to happen.
            Example: sudo vireo demo noisy-neighbour --policy slo -o json
            """)

    @OptionGroup var demo: DemoOptions

    func run() async throws {
        let timeline = try await DemoScenario(options: demo, kind: .noisyNeighbour).run()
        try timeline.print(demo.output.output)
    }
}

struct MisleadingCountersDemo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "misleading-counters",
        abstract: "A batch VM nobody minds keeps h2 busy while web on h1 is fine: what does the policy move?",
        discussion: """
            `web-1` is pinned to h1 and `batch` (3 vCPUs, no application) lands on h2. Once web \
            meets its objective under load, batch starts a busy thread on each vCPU: h2's CPU \
            counters say it is overloaded, yet no objective suffers. A black-box policy moves batch, \
            onto web's host, where it takes the CPU web needs; `slo` leaves it. The timeline counts \
            the moves and any breach they caused.
            Example: sudo vireo demo misleading-counters --policy threshold -o json
            """)

    @OptionGroup var demo: DemoOptions

    func run() async throws {
        let timeline = try await DemoScenario(options: demo, kind: .misleadingCounters).run()
        try timeline.print(demo.output.output)
    }
}

/// What happened in a scenario, in seconds since its disturbance started.
struct DemoTimeline: Codable, Equatable {
    struct Move: Codable, Equatable {
        var vm: String
        var from: String
        var to: String
        var startedAt: Double?
        var endedAt: Double?
        var state: String
        var downtimeMs: Int?
        var reason: String
    }

    var scenario: String
    var policy: String
    var accelerator: String?
    /// Requests a second sent to web (open loop).
    var rate: Double
    /// The objective's p90 (seconds) once ok under load, before the disturbance.
    var latencyBefore: Double?
    /// h1's CPU load (fraction of its CPU) under web's load, before the disturbance.
    var h1LoadBefore: Double?
    /// When the objective first left ok (`warning` or `breaching`).
    var breachDetectedAt: Double?
    var planAt: Double?
    var migrationStartedAt: Double?
    var migrationEndedAt: Double?
    var downtimeMs: Int?
    var recoveredAt: Double?
    /// `recoveredAt - breachDetectedAt`.
    var breachToOkSeconds: Double?
    var migrations: Int
    var moves: [Move]
    var explanation: String?
    /// Seconds the scenario watched after the disturbance.
    var watchedSeconds: Double
    var requestsSent: Int
    /// Requests that failed (an error or no 200 within 5 s), and those not sent because 8 were
    /// already in flight.
    var requestsFailed: Int
    var requestsSkipped: Int
    /// Every event of the run, as `+12.3s kind name: from → to (message)`.
    var events: [String]

    func print(_ format: OutputFormat) throws {
        if format == .json { return try printJSON(self) }
        func at(_ t: Double?) -> String { t.map { String(format: "%.1f s", $0) } ?? "never" }
        Swift.print("Scenario \(scenario), policy \(policy)\(accelerator.map { " (\($0))" } ?? "")")
        Swift.print(
            "  web load:              \(Int(rate)) requests/s, \(requestsSent) sent, \(requestsFailed) failed, "
                + "\(requestsSkipped) skipped (8 in flight)")
        Swift.print(
            "  web p90 before:        \(milliseconds(latencyBefore))" + (h1LoadBefore.map { ", h1 CPU \(percent($0))" } ?? ""))
        Swift.print("  breach detected:       \(at(breachDetectedAt))")
        Swift.print("  plan made:             \(at(planAt))")
        Swift.print(
            "  migration:             \(at(migrationStartedAt)) → \(at(migrationEndedAt))"
                + (downtimeMs.map { ", downtime \($0) ms" } ?? ""))
        Swift.print(
            "  objective ok again:    \(at(recoveredAt))"
                + (breachToOkSeconds.map { String(format: " (%.1f s after the breach)", $0) } ?? ""))
        Swift.print("  migrations:            \(migrations) in \(Int(watchedSeconds)) s")
        for move in moves {
            Swift.print(
                "    \(move.vm) \(move.from) → \(move.to) at \(at(move.startedAt)): \(move.state)"
                    + (move.downtimeMs.map { ", downtime \($0) ms" } ?? ""))
        }
        if let explanation { Swift.print("  why: \(explanation)") }
        Swift.print("Events:")
        for line in events { Swift.print("  \(line)") }
    }
}

/// Runs one scenario on a fresh two-host testbed and takes it down again.
struct DemoScenario {
    enum Kind: String {
        case noisyNeighbour = "noisy-neighbour"
        case misleadingCounters = "misleading-counters"
    }

    let options: DemoOptions
    let kind: Kind

    func progress(_ line: String) {
        if options.output.output == .table { FileHandle.standardError.write(Data("demo: \(line)\n".utf8)) }
    }

    var manifest: String {
        """
        apiVersion: vireo/v1
        kind: Application
        metadata: { name: web }
        spec:
          vms: [{ name: web-1, image: web, cpus: 1, memory: 128MiB, host: h1 }]
          telemetry:
            scrape: { port: 80, path: /metrics, interval: 1s, timeout: 1s }
            probe: { port: 80, path: /, interval: 1s, timeout: 1s }
            metrics:
              - { name: vireo_web_request_duration_seconds, type: histogram }
              - { name: vireo_web_requests_total, type: counter }
          objectives:
            - name: latency
              sli: vireo_web_request_duration_seconds
              quantile: 0.9
              target: \(options.target)
              window: 5s
              goal: 0.9
              burnRates: [{ long: 20s, short: 5s, factor: 3 }]
        """
    }

    func run() async throws -> DemoTimeline {
        _ = try Controller.policy(options.policy, field: "--policy")
        // A directory of its own for each run: the testbed's controller keeps its database there.
        let directory = options.dir + "/\(kind.rawValue)-\(Int(Date().timeIntervalSince1970))"
        var testbedOptions = Testbed.Options(hosts: 2, directory: directory, executable: try currentExecutable())
        testbedOptions.name = options.name
        testbedOptions.network = options.network
        testbedOptions.imagesDirectory = options.images
        let state = try await Testbed(testbedOptions).up { line in progress("testbed: \(line)") }
        do {
            try await waitForHosts(state)
            let token = try String(contentsOfFile: state.adminTokenFile, encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let timeline = try await run(VireoClient(server: state.controllerURL, token: token))
            await takeDown(directory)
            return timeline
        } catch {
            await takeDown(directory)
            throw error
        }
    }

    private func takeDown(_ directory: String) async {
        guard !options.keep else {
            return progress(
                "the testbed stays up: VIREO_SERVER=http://\(options.network).0.1:7480 "
                    + "VIREO_TOKEN=$(cat \(directory)/controller/admin.token); vireo testbed down --dir \(directory)")
        }
        progress("taking the testbed down")
        await Testbed.down(directory: directory) { _ in }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// The disturbing VM, noisy or batch: three vCPUs, so that with a busy thread on each, web's one
    /// vCPU gets about a quarter of the CPU of the host it shares with them — less than its load
    /// needs (h1 is about half busy at 100 requests a second under TCG, measured before the noise).
    var disturber: (name: String, cpus: Int) { (kind == .noisyNeighbour ? "noisy" : "batch", 3) }

    private func run(_ api: VireoClient) async throws -> DemoTimeline {
        let disturber = disturber.name
        let disturberSpec: [String: JSONValue] = [
            "name": .string(disturber), "image": .string("web"), "cpus": .number(Double(self.disturber.cpus)),
            "memory": .string("128MiB"),
        ]
        // Placement spreads VMs: noisy, made first, takes h1; batch, made after web, takes h2.
        if kind == .noisyNeighbour {
            progress("creating noisy (\(self.disturber.cpus) vCPUs, no objectives)")
            _ = try await api.createVM(disturberSpec)
        }
        progress("applying the web application (pinned to h1) and waiting for its guest to boot (TCG)")
        _ = try await api.apply(manifest: manifest)
        if kind == .misleadingCounters { _ = try await api.createVM(disturberSpec) }
        let web = try await waitRunning(api, "web-1")
        let other = try await waitRunning(api, disturber)
        let expected = kind == .noisyNeighbour ? "h1" : "h2"
        guard web.host == "h1", other.host == expected else {
            throw VireoError(
                .failedPrecondition,
                "placement put web-1 on \(web.host ?? "-") and \(disturber) on \(other.host ?? "-"), not h1 and \(expected)")
        }
        guard let webAddress = web.address, let otherAddress = other.address, webAddress != otherAddress else {
            throw VireoError(
                .failedPrecondition,
                "the guests need addresses of their own (web-1: \(web.address ?? "-"), \(disturber): \(other.address ?? "-"))")
        }
        let accelerator = try await api.hosts().items.first?.attributes["accelerator"]

        let load = LoadGenerator(url: "http://\(webAddress)/", rate: options.rate)
        let loadTask = Task {
            await load.run(maxInFlight: 8, limit: .seconds(options.duration + 300))
        }
        defer {
            load.stop()
            loadTask.cancel()
        }
        progress("open-loop load on web-1 (\(Int(options.rate)) requests/s)")
        try await settleRate(load, api)
        progress("waiting for web's objective to be ok at \(Int(load.currentRate)) requests/s")
        var latencyBefore: Double?
        let okDeadline = ContinuousClock.now + .seconds(120)
        while ContinuousClock.now < okDeadline {
            if let objective = try await api.app("web").objectives.first, objective.state == .ok,
                objective.badWindows + objective.goodWindows >= 2
            {
                latencyBefore = objective.sli
                break
            }
            try await Task.sleep(for: .seconds(1))
        }
        guard latencyBefore != nil else {
            let objective = try? await api.app("web").objectives.first
            throw VireoError(
                .unavailable,
                "premise failed: web's objective did not become ok under \(Int(load.currentRate)) requests/s within 120 s with nothing "
                    + "else running on h1 (p90 \(milliseconds(objective?.sli)), target \(milliseconds(options.target)); "
                    + "h1 CPU \(percent(try? await api.host("h1").cpuLoad))); try a lower --rate")
        }
        let h1LoadBefore = try await api.host("h1").cpuLoad

        _ = try await api.setRebalance(policy: options.policy, intervalSeconds: 1)
        let seq = try await api.events().last?.seq ?? 0
        let start = Date()
        progress("\(disturber) starts \(self.disturber.cpus) busy thread(s); watching for \(Int(options.duration)) s")
        try await startBusyThreads(otherAddress, count: self.disturber.cpus)

        // The whole duration, also after a recovery: a policy that moves VMs back and forth shows it.
        var shown = seq
        while Date().timeIntervalSince(start) < options.duration {
            try await Task.sleep(for: .milliseconds(500))
            for event in try await api.events(after: shown) {
                shown = event.seq
                if [.slo, .migration, .plan].contains(event.kind) { progress(describe(event, since: start)) }
            }
        }
        let watched = Date().timeIntervalSince(start)
        _ = try await api.setRebalance(policy: "off", intervalSeconds: nil)
        load.stop()

        let events = try await api.events(after: seq)
        let objective = events.filter { $0.kind == .slo && $0.name == "web/latency" }
        // The objective is missed from its first warning (a window judged bad, budget burning) on.
        let breach = objective.first { $0.to == SLOState.warning.rawValue || $0.to == SLOState.breaching.rawValue }
        if kind == .noisyNeighbour, breach == nil {
            // Without a breach there is nothing for any policy to mend: the run shows nothing.
            let sli = try? await api.app("web").objectives.first?.sli
            throw VireoError(
                .failedPrecondition,
                "premise failed: web's objective stayed ok for \(Int(watched)) s while noisy's \(self.disturber.cpus) busy threads ran "
                    + "next to it on h1 (p90 \(milliseconds(sli)) at the end, target \(milliseconds(options.target)); before the noise "
                    + "p90 \(milliseconds(latencyBefore)), h1 CPU \(percent(h1LoadBefore))); the neighbour did not take enough CPU from web"
            )
        }
        let recovery = breach.flatMap { breach in objective.first { $0.to == SLOState.ok.rawValue && $0.seq > breach.seq } }
        let migrations = try await api.migrations().items.filter { $0.requestedAt >= start }.sorted {
            $0.requestedAt < $1.requestedAt
        }
        let plans = try await api.plans().items.filter { $0.createdAt >= start && !$0.actions.isEmpty }.sorted {
            $0.createdAt < $1.createdAt
        }
        func since(_ date: Date?) -> Double? { date.map { ($0.timeIntervalSince(start) * 10).rounded() / 10 } }
        let first = migrations.first
        let counts = load.snapshot
        var timeline = DemoTimeline(
            scenario: kind.rawValue, policy: options.policy, accelerator: accelerator, rate: load.currentRate,
            latencyBefore: latencyBefore, h1LoadBefore: h1LoadBefore,
            breachDetectedAt: since(breach?.time), planAt: since(plans.first?.createdAt),
            migrationStartedAt: since(first?.startedAt ?? first?.requestedAt), migrationEndedAt: since(first?.endedAt),
            downtimeMs: first?.stats?.downtimeMs, recoveredAt: since(recovery?.time),
            migrations: migrations.count,
            moves: migrations.map {
                DemoTimeline.Move(
                    vm: $0.vm, from: $0.source, to: $0.destination, startedAt: since($0.startedAt ?? $0.requestedAt),
                    endedAt: since($0.endedAt), state: $0.state.rawValue, downtimeMs: $0.stats?.downtimeMs, reason: $0.reason)
            },
            explanation: plans.first?.actions.first?.explanation,
            watchedSeconds: (watched * 10).rounded() / 10, requestsSent: counts.sent, requestsFailed: counts.failed,
            requestsSkipped: counts.skipped,
            events: events.map { describe($0, since: start) })
        if let breach = timeline.breachDetectedAt, let ok = timeline.recoveredAt {
            timeline.breachToOkSeconds = ((ok - breach) * 10).rounded() / 10
        }
        return timeline
    }

    /// `+12.3s kind name: from → to (message)`.
    private func describe(_ event: ClusterEvent, since start: Date) -> String {
        String(format: "+%.1fs ", event.time.timeIntervalSince(start)) + "\(event.kind.rawValue) \(event.name)"
            + (event.to.map { ": \(event.from ?? "-") → \($0)" } ?? "") + (event.message.map { " (\($0))" } ?? "")
    }

    private func waitRunning(_ api: VireoClient, _ name: String) async throws -> VMView {
        let deadline = ContinuousClock.now + .seconds(180)
        while ContinuousClock.now < deadline {
            let vm = try await api.vm(name)
            if vm.state == .running, vm.address != nil { return vm }
            if vm.state == .failed { throw VireoError(.failedPrecondition, "VM \(name) failed: \(vm.message ?? "no reason")") }
            try await Task.sleep(for: .milliseconds(500))
        }
        throw VireoError(.unavailable, "VM \(name) did not start within 180 s")
    }

    /// How busy web alone may keep h1 before the disturbance, and how busy the demo then makes it.
    /// A host nearly saturated by web alone has no room to recover in once the neighbour leaves: an
    /// open-loop load at its capacity keeps the queue it built while starved (measured: h1 83 %
    /// busy at 100 requests/s on a slower machine, p90 about 90 ms for the minute after noisy had
    /// gone). TCG's cost per request differs from machine to machine, so the rate is set from h1's
    /// load, not fixed.
    static let busiestBefore = 0.6
    static let busyTarget = 0.5

    /// Lowers the load until web alone keeps h1 at most `busiestBefore` busy, saying so.
    private func settleRate(_ load: LoadGenerator, _ api: VireoClient) async throws {
        for _ in 0..<4 {
            // A few seconds for the new rate to show in the heartbeats, then h1's mean over five.
            try await Task.sleep(for: .seconds(3))
            var samples: [Double] = []
            for _ in 0..<5 {
                if let busy = try await api.host("h1").cpuLoad { samples.append(busy) }
                try await Task.sleep(for: .seconds(1))
            }
            guard !samples.isEmpty else { return }
            let busy = samples.reduce(0, +) / Double(samples.count)
            let rate = load.currentRate
            guard busy > Self.busiestBefore, rate > 5 else { return }
            let lower = max(5, (rate * Self.busyTarget / busy).rounded())
            progress(
                "h1 is \(percent(busy)) busy with web alone at \(Int(rate)) requests/s, too near its capacity to "
                    + "recover in; lowering the load to \(Int(lower)) requests/s")
            load.setRate(lower)
        }
    }

    /// `count` threads in the guest that never sleep: as many vCPUs always busy.
    private func startBusyThreads(_ address: String, count: Int) async throws {
        var request = HTTPClientRequest(url: "http://\(address)/burn?threads=\(count)")
        request.method = .POST
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        guard response.status == .ok else {
            throw VireoError(.unavailable, "the guest at \(address) refused its busy threads: HTTP \(response.status.code)")
        }
    }
}

/// Seconds as milliseconds for the demo's lines ("4.8 ms"; "-" when unknown).
private func milliseconds(_ seconds: Double?) -> String { seconds.map { String(format: "%.1f ms", $0 * 1000) } ?? "-" }

/// A fraction as a percentage for the demo's lines ("43 %"; "-" when unknown).
private func percent(_ fraction: Double?) -> String { fraction.map { String(format: "%.0f %%", $0 * 100) } ?? "-" }
