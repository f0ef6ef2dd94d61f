import ArgumentParser
import Foundation
import VireoAPI
import VireoModel
import VireoPlacement
import VireoSim

enum SimOutputFormat: String, ExpressibleByArgument, CaseIterable {
    case table, json, csv
}

/// `vireo sim`: replay utilisation traces through a consolidation policy in virtual time.
struct SimCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sim",
        abstract: "Replay VM utilisation traces through a placement policy and report energy, SLA violations and migrations.",
        discussion: """
            Reproduces CloudSim's PlanetLab experiments (800 hosts, half HP ML110 G4 and half G5, 300 s \
            decisions over 24 h). Each trace file is one run per policy. The policies are the objects the \
            controller runs (`vireo plan --policy`), on the same cluster model.

            Policies: \(Policies.names.joined(separator: ", ")). Parameters can change, \
            e.g. thr-mmt-0.7, mad-mmt-3, slo-0.75 (target utilisation), threshold-0.7.

            Models: `cloudsim` (CloudSim 3.0.3's rules, for comparison with its published results) and \
            `realistic` (memory a hard limit at every step, migrations sharing each host's link, idle VMs \
            keeping their memory).

            Traces: PlanetLab day files (`vm_name,v1,...,v288`, integer percent, optionally .gz) or a \
            fleet CSV with header `vm,mips,memory_mb,u1,u2,...` (see docs/sim.md).

            Your own cluster: `--from-cluster [--since 24h]` replays the usage history the controller at \
            --server recorded, first as it really happened (`recorded`), then through each policy.
            """)

    @Option(name: .long, parsing: .upToNextOption, help: ArgumentHelp("Trace files (.csv or .csv.gz).", valueName: "file"))
    var trace: [String] = []

    @Option(
        name: .long,
        help: ArgumentHelp("Policy, or several separated by commas; may be repeated.", valueName: "policy"))
    var policy: [String] = []

    @Option(help: "Number of hosts (even: ML110 G4, odd: ML110 G5).") var hosts: Int = 800

    @Option(help: "The data centre's rules: cloudsim or realistic (docs/sim.md; --from-cluster: realistic).")
    var model: SimulationModel?

    @Option(help: ArgumentHelp("Seconds between decisions, e.g. 300s, 5m.", valueName: "duration"))
    var interval: String = "300s"

    @Option(help: ArgumentHelp("Simulated time, e.g. 24h.", valueName: "duration"))
    var duration: String = "24h"

    @Option(name: .shortAndLong, help: "Output format: table, json (one object per run) or csv.")
    var output: SimOutputFormat = .table

    @Option(
        help: ArgumentHelp("Write per-interval active hosts, overloaded hosts, energy and migrations as CSV.", valueName: "file"))
    var series: String?

    @Option(help: ArgumentHelp("Draw the per-interval series as an SVG chart.", valueName: "file"))
    var plot: String?

    @Flag(
        help:
            "Generate a large fleet from the traces' distributions instead of replaying them as they are (without --trace: the PlanetLab days in $VIREO_PLANETLAB or ../shared/data/planetlab)."
    )
    var synthetic = false

    @Option(help: "VMs in the synthetic fleet.") var vms: Int = 100_000
    @Option(help: "Seed of the synthetic fleet (same seed, same fleet).") var seed: UInt64 = 1
    @Option(help: "ML110 machines per synthetic host (default: enough for every VM at full size).")
    var hostScale: Int?

    @Flag(
        help:
            "Keep VMs whose demand drops to 0 (CloudSim removes them as finished, and so does --model cloudsim; --model realistic always keeps them)."
    )
    var keepIdleVMs = false

    @Flag(help: "No progress bar.") var quiet = false

    @Flag(
        help:
            "Replay the usage history the controller at --server recorded (GET /v1/history) through each policy, after what the cluster really did (`recorded`)."
    )
    var fromCluster = false

    @Option(help: ArgumentHelp("With --from-cluster: how far back, e.g. 24h, 90m.", valueName: "duration"))
    var since: String = "24h"

    @Option(
        help: ArgumentHelp("With --from-cluster: seconds per decision, a multiple of the recording step.", valueName: "seconds"))
    var step: String?

    @Option(
        help: ArgumentHelp(
            "Show the plan made at one decision — a step number from 0, or a simulated time such as 2h — with every move's typed reason and every VM and host weighed.",
            valueName: "step"))
    var explain: String?

    @OptionGroup var client: ClientOptions

    func run() async throws {
        let names = policy.flatMap { $0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } }
        for name in names {
            do { _ = try Policies.make(name) } catch { throw VireoError(.invalidArgument, "--policy: \(error)") }
        }
        if let explain, Self.explainedStep(explain, settings: .init()) == nil {
            throw VireoError(
                .invalidArgument, "--explain '\(explain)' is neither a step number (0, 1, ...) nor a time such as 2h")
        }
        let jobs = fromCluster ? try await clusterJobs(names) : try traceJobs(names)
        var results: [SimulationResult] = []
        for job in jobs {
            let simulator = try Simulator(
                fleet: job.fleet, trace: job.trace, policy: job.policy, settings: job.settings, start: job.start)
            let bar = SimProgressBar(label: "\(job.policy.name) \(job.trace.source)", enabled: !quiet)
            let wanted = explain.flatMap { Self.explainedStep($0, settings: job.settings) }
            var explained: (step: Int, seconds: Double, plan: RebalancePlan)?
            let (result, samples) = try simulator.run(
                progress: bar.update,
                decided: { step, cluster, plan in
                    if step == wanted { explained = (step, cluster.now, plan) }
                })
            bar.finish()
            if let wanted {
                guard let explained else {
                    throw VireoError(
                        .invalidArgument, "--explain: step \(wanted) is past the run's last decision (\(samples.count - 1))")
                }
                try printExplanation(explained, policy: job.policy.name, trace: job.trace.source)
            }
            if result.unplacedVMs > 0 && !quiet {
                stderr(
                    "warning: \(result.unplacedVMs) of \(job.trace.vmCount) VMs fitted no host at the start and did not run (as in CloudSim)"
                )
            }
            results.append(result)
            try writeSeries(samples, result: result, many: jobs.count > 1)
            if output == .json { try printJSONLine(result) }
        }
        switch output {
        case .json: break
        case .table:
            printTable(
                ["POLICY", "TRACE", "HOSTS", "VMS", "ENERGY_KWH", "SLATAH", "PDM", "SLAV", "ESV", "MIGRATIONS", "WALL_S"],
                results.map { r in
                    [
                        r.policy, r.trace, "\(r.hosts)", "\(r.vms)", String(format: "%.2f", r.energyKWh),
                        String(format: "%.2f%%", r.slatah * 100), String(format: "%.3f%%", r.pdm * 100),
                        String(format: "%.5f%%", r.slav * 100), String(format: "%.5f", r.esv), "\(r.migrations)",
                        String(format: "%.2f", r.wallSeconds),
                    ]
                })
        case .csv:
            print("policy,trace,hosts,vms,energy_kwh,slatah,pdm,slav,esv,migrations,wall_seconds")
            for r in results {
                print(
                    "\(r.policy),\(r.trace),\(r.hosts),\(r.vms),\(r.energyKWh),\(r.slatah),\(r.pdm),\(r.slav),\(r.esv),\(r.migrations),\(r.wallSeconds)"
                )
            }
        }
    }

    /// The decision `text` names: a step number, or the step a simulated time falls in.
    static func explainedStep(_ text: String, settings: SimulationSettings) -> Int? {
        if let step = Int(text) { return step >= 0 ? step : nil }
        guard let seconds = DurationText.seconds(text) else { return nil }
        return max(0, Int(((seconds - settings.firstDecision) / settings.interval).rounded(.down)))
    }

    /// The plan of one decision: as `vireo plan --explain` shows a plan, or one JSON line.
    func printExplanation(_ explained: (step: Int, seconds: Double, plan: RebalancePlan), policy: String, trace: String)
        throws
    {
        let plan = Plan(
            explained.plan, id: "step-\(explained.step)", state: .dryRun, trigger: .automatic,
            at: Date(timeIntervalSince1970: explained.seconds))
        if output == .json {
            struct Explanation: Encodable {
                var step: Int
                var seconds: Double
                var policy: String
                var trace: String
                var plan: Plan
            }
            let encoder = VireoJSON.encoder()
            let line = Explanation(step: explained.step, seconds: explained.seconds, policy: policy, trace: trace, plan: plan)
            print(String(decoding: try encoder.encode(["explain": line]), as: UTF8.self))
        } else {
            print(
                "Step \(explained.step) (\(DurationText.format(explained.seconds)) simulated) of \(policy) on \(trace): "
                    + "\(plan.actions.count) move(s)")
            print(PlanText.describe(plan, explain: true))
        }
    }

    /// One run: a policy over a trace on a fleet.
    struct Job {
        var trace: UtilisationTrace
        var fleet: SimulationFleet
        var settings: SimulationSettings
        var start: [Int?]?
        var policy: any PlacementPolicy
    }

    /// Runs of the trace files (or the synthetic fleet drawn from them), one per policy each.
    func traceJobs(_ names: [String]) throws -> [Job] {
        let settings = try simulationSettings()
        guard hosts > 0 else { throw VireoError(.invalidArgument, "--hosts must be at least 1 (got \(hosts))") }
        let traces = trace.isEmpty && synthetic ? Self.defaultSyntheticSources() : trace
        guard !traces.isEmpty else {
            throw VireoError(
                .invalidArgument,
                synthetic
                    ? "--synthetic draws its VMs from real traces: give them with --trace (e.g. ../shared/data/planetlab/20110303.csv.gz) or set VIREO_PLANETLAB to their directory"
                    : "--trace: give at least one trace file, or --from-cluster")
        }
        guard !names.isEmpty else {
            throw VireoError(.invalidArgument, "--policy: give a policy (\(Policies.names.joined(separator: ", ")))")
        }
        if synthetic {
            guard vms > 0 else { throw VireoError(.invalidArgument, "--vms must be at least 1 (got \(vms))") }
            if let hostScale, hostScale < 1 {
                throw VireoError(.invalidArgument, "--host-scale must be at least 1 (got \(hostScale))")
            }
        }
        var loaded: [UtilisationTrace] = []
        for path in traces { loaded.append(try TraceFile.load(path)) }
        var workloads: [(UtilisationTrace, SimulationFleet)] = []
        if synthetic {
            let source = try UtilisationTrace.concatenating(loaded)
            let generated = SyntheticFleet.trace(from: source, vms: vms, seed: seed)
            var fleet = CloudSimFleet.fleet(hosts: hosts, trace: generated)
            let scale = hostScale ?? SyntheticFleet.hostScale(hosts: hosts, fleet: fleet)
            fleet.hosts = SyntheticFleet.hosts(hosts, scale: scale)
            workloads.append((generated, fleet))
        } else {
            for item in loaded { workloads.append((item, CloudSimFleet.fleet(hosts: hosts, trace: item))) }
        }
        return try workloads.flatMap { trace, fleet in
            try names.map { Job(trace: trace, fleet: fleet, settings: settings, start: nil, policy: try Policies.make($0)) }
        }
    }

    /// Runs of the cluster's own recorded history: first what it really did (`recorded`), then
    /// each policy from the same start.
    func clusterJobs(_ names: [String]) async throws -> [Job] {
        guard trace.isEmpty && !synthetic else {
            throw VireoError(
                .invalidArgument, "--from-cluster replays the cluster's own history: leave out --trace and --synthetic")
        }
        if let model, model != .realistic {
            throw VireoError(
                .invalidArgument, "--model \(model.rawValue): --from-cluster replays real hosts, under the realistic model")
        }
        let history = try await client.client().history(since: since, step: step)
        let replay = try ClusterReplay(history)
        if !quiet {
            let byPolicy = Dictionary(grouping: replay.migrations, by: { $0.policy ?? "by hand" })
                .map { "\($0.key) \($0.value.count)" }.sorted()
            stderr(
                "\(replay.trace.vmCount) VMs on \(replay.fleet.hosts.count) hosts, \(replay.steps) steps of "
                    + "\(Int(replay.stepSeconds)) s; the cluster started \(replay.migrations.count) migration(s)"
                    + (byPolicy.isEmpty ? "" : " (\(byPolicy.joined(separator: ", ")))"))
        }
        let chosen = names.isEmpty ? ["threshold", "iqr-mmt-1.5", "slo"] : names
        let policies: [any PlacementPolicy] = [replay.policy] + (try chosen.map { try Policies.make($0) })
        return policies.map {
            Job(trace: replay.trace, fleet: replay.fleet, settings: replay.settings, start: replay.start, policy: $0)
        }
    }

    /// The PlanetLab days a synthetic fleet is drawn from when no --trace is given: the `.csv.gz`
    /// files in $VIREO_PLANETLAB, else in ../shared/data/planetlab (where the repository keeps them).
    static func defaultSyntheticSources() -> [String] {
        let directory = ProcessInfo.processInfo.environment["VIREO_PLANETLAB"] ?? "../shared/data/planetlab"
        let files = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return files.filter { $0.hasSuffix(".csv.gz") }.sorted().map { "\(directory)/\($0)" }
    }

    func simulationSettings() throws -> SimulationSettings {
        let intervalSeconds = try Self.seconds(interval, option: "--interval")
        let durationSeconds = try Self.seconds(duration, option: "--duration")
        guard intervalSeconds <= durationSeconds else {
            throw VireoError(.invalidArgument, "--interval \(interval) is longer than --duration \(duration)")
        }
        return SimulationSettings(
            interval: intervalSeconds, duration: durationSeconds, idleVMsFinish: keepIdleVMs ? false : nil,
            model: model ?? .cloudsim)
    }

    /// "300", "300s", "5m", "24h", "1d" (any `DurationText`) as seconds, above zero; anything else
    /// names the option and value.
    static func seconds(_ text: String, option: String) throws -> Double {
        guard let value = DurationText.seconds(text), value > 0 else {
            throw VireoError(.invalidArgument, "\(option) '\(text)' is not a positive duration such as 300s, 5m or 24h")
        }
        return value
    }

    private func writeSeries(_ samples: [IntervalSample], result: SimulationResult, many: Bool) throws {
        func path(_ base: String) -> String {
            guard many else { return base }
            let url = URL(fileURLWithPath: base)
            let stem = url.deletingPathExtension().lastPathComponent
            var trace = result.trace
            for suffix in [".gz", ".csv"] where trace.hasSuffix(suffix) { trace = String(trace.dropLast(suffix.count)) }
            let tag = "\(result.policy)-\(trace)".map { $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" ? $0 : "_" }
            return url.deletingLastPathComponent().appendingPathComponent("\(stem)-\(String(tag)).\(url.pathExtension)").path
        }
        if let series {
            try Data(SeriesOutput.csv(samples).utf8).write(to: URL(fileURLWithPath: path(series)))
        }
        if let plot {
            let title = "\(result.policy) on \(result.trace): \(result.hosts) hosts, \(result.vms) VMs"
            try Data(SeriesOutput.svg(samples, title: title).utf8).write(to: URL(fileURLWithPath: path(plot)))
        }
    }
}

/// A one-line progress bar on standard error, redrawn at most once per percent.
final class SimProgressBar {
    let label: String
    let enabled: Bool
    private var lastPercent = -1

    init(label: String, enabled: Bool) {
        self.label = label
        self.enabled = enabled
    }

    func update(_ done: Int, _ total: Int) {
        guard enabled, total > 0 else { return }
        let percent = done * 100 / total
        guard percent != lastPercent else { return }
        lastPercent = percent
        let filled = percent * 30 / 100
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: 30 - filled)
        FileHandle.standardError.write(Data("\r[\(bar)] \(percent)% \(label)".utf8))
    }

    func finish() {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\n".utf8))
    }
}

/// Prints one run as a single line of JSON.
func printJSONLine(_ result: SimulationResult) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    print(String(decoding: try encoder.encode(result), as: UTF8.self))
}

extension SimulationModel: ExpressibleByArgument {}
