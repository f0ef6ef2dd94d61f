import ArgumentParser
import Foundation
import VireoAPI
import VireoModel

struct AppCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "app",
        abstract: "Applications: their VMs and how they meet their service-level objectives.",
        discussion: """
            Applications are created and changed with `vireo apply -f app.yaml` (kind Application, or OpenSLO \
            `kind: SLO` documents for an existing application). See docs/apps.md for the manifest.
            """,
        subcommands: [AppList.self, AppShow.self, AppDelete.self, AppSeries.self, AppPush.self])
}

struct AppList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List applications with their SLO state.")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let apps = try await client.client().apps().items
        if output.output == .json { return try printJSON(apps) }
        printTable(
            ["NAME", "STATE", "VMS", "OBJECTIVES", "LAST SAMPLE", "AGE"],
            apps.map { app in
                let running = app.vms.filter { $0.state == .running }.count
                let objectives = app.objectives.map { "\($0.name)=\($0.state.rawValue)" }.joined(separator: ",")
                return [
                    app.name, app.state.rawValue, "\(running)/\(app.vms.count)", objectives.isEmpty ? "-" : objectives,
                    app.lastSampleAt.map { age(since: $0) + " ago" } ?? "never", age(since: app.createdAt),
                ]
            })
    }
}

struct AppShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Show an application: its VMs, each objective's SLI, error budget and burn rates, and current values.")
    @Argument(help: "Application name.") var app: String
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let app = try await client.client().app(app)
        if output.output == .json { return try printJSON(app) }
        print("Name:        \(app.name)")
        print("State:       \(app.state.rawValue)")
        print("Last sample: \(app.lastSampleAt.map { "\($0) (\(age(since: $0)) ago)" } ?? "never")")
        if let error = app.lastError { print("Last error:  \(error)") }
        if let scrape = app.spec.telemetry.scrape {
            print("Scrape:      :\(scrape.port)\(scrape.path) every \(DurationText.format(scrape.intervalSeconds))")
        }
        if let server = app.spec.telemetry.source?.prometheus {
            print("Source:      Prometheus at \(server.url)")
        }
        if let probe = app.spec.telemetry.probe {
            print("Probe:       GET :\(probe.port)\(probe.path) every \(DurationText.format(probe.intervalSeconds))")
        }
        print("\nVMs:")
        printTable(
            ["NAME", "STATE", "HOST", "ADDRESS"], app.vms.map { [$0.name, $0.state.rawValue, $0.host ?? "-", $0.address ?? "-"] })
        print("\nObjectives:")
        printTable(
            ["NAME", "KIND", "STATE", "SLI", "TARGET", "GOOD/BAD/EMPTY", "BUDGET LEFT", "BURN RATES", "SINCE"],
            app.objectives.map { o in
                let spec = app.spec.objective(named: o.name)
                let comparison = o.kind == .responseTime || o.kind == .capacity ? "≤" : "≥"
                let quantile = spec?.quantile.map { "p\(formatNumber($0 * 100)) " } ?? ""
                return [
                    o.name, o.kind.rawValue, o.state.rawValue, o.sli.map(formatNumber) ?? "no data",
                    "\(quantile)\(comparison) \(formatNumber(o.target))", "\(o.goodWindows)/\(o.badWindows)/\(o.emptyWindows)",
                    String(format: "%.1f%%", o.errorBudgetRemaining * 100),
                    o.burnRates.map { "\(DurationText.format($0.lookbackSeconds))=\(formatNumber($0.rate))" }.joined(
                        separator: " "),
                    o.stateChangedAt.map { age(since: $0) + " ago" } ?? "-",
                ]
            })
        if let current = app.current, !current.isEmpty {
            print("\nCurrent values:")
            printTable(
                ["METRIC", "LABELS", "VALUE", "AT"],
                current.map { c in
                    [
                        c.name, c.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ","),
                        formatNumber(c.value), age(since: c.time) + " ago",
                    ]
                })
        }
    }
}

struct AppDelete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delete",
        abstract: "Delete an application; say what happens to its VMs.",
        discussion: """
            Say what happens to the application's VMs with --keep-vms (they keep running, no longer part of an \
            application) or --delete-vms. Without either, the command asks on a terminal and refuses otherwise.
            """)
    @Argument(help: "Application name.") var app: String
    @Flag(name: .customLong("keep-vms"), help: "Keep the application's VMs running.") var keepVMs = false
    @Flag(name: .customLong("delete-vms"), help: "Delete the application's VMs too.") var deleteVMs = false
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard !(keepVMs && deleteVMs) else { throw ValidationError("--keep-vms and --delete-vms exclude each other") }
    }

    func run() async throws {
        let api = client.client()
        var disposition = keepVMs ? "keep" : deleteVMs ? "delete" : nil
        if disposition == nil {
            let vms = try await api.app(app).vms.map(\.name)
            guard isatty(STDIN_FILENO) == 1 else {
                throw VireoError(
                    .invalidArgument,
                    "application '\(app)' has \(vms.count) VMs; say what to do with them: --keep-vms or --delete-vms")
            }
            FileHandle.standardOutput.write(
                Data(
                    "Application \(app) has \(vms.count) VMs (\(vms.joined(separator: ", "))). Keep them running or delete them? [keep/delete] "
                        .utf8))
            let answer = readLine()?.trimmingCharacters(in: .whitespaces).lowercased() ?? ""
            guard ["keep", "delete"].contains(answer) else {
                throw VireoError.invalid(field: "answer", value: "'\(answer)'", "expected keep or delete; nothing deleted")
            }
            disposition = answer
        }
        let result = try await api.deleteApp(app, vms: disposition ?? "keep")
        if output.output == .json { return try printJSON(result) }
        print("Application \(result.name) deleted.")
        if !result.keptVMs.isEmpty { print("Kept running: \(result.keptVMs.joined(separator: ", "))") }
        if !result.deletedVMs.isEmpty { print("Deleting: \(result.deletedVMs.joined(separator: ", "))") }
    }
}

struct AppSeries: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "series",
        abstract:
            "Print a metric's stored points (raw, or rolled up per minute once older than the raw retention), or an objective's indicator per judged window."
    )
    @Argument(help: "Application name.") var app: String
    @Option(help: ArgumentHelp("Metric selector, e.g. 'vireo_web_requests_total{vm=\"web-1\"}'.", valueName: "selector"))
    var metric: String?
    @Option(
        help: ArgumentHelp(
            "An objective of the application: its indicator at the end of each judged window that had data (what the console charts).",
            valueName: "name"))
    var objective: String?
    // `.unconditional`: `--from -5m` is a value, not an unknown option.
    @Option(parsing: .unconditional, help: "Start: RFC 3339, seconds since the epoch, or -DURATION (default -1h).")
    var from: String?
    @Option(parsing: .unconditional, help: "End: as --from (default now).") var to: String?
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard (metric == nil) != (objective == nil) else {
            throw ValidationError("give --metric SELECTOR or --objective NAME (one of them)")
        }
    }

    func run() async throws {
        let result = try await client.client().series(app: app, metric: metric, objective: objective, from: from, to: to)
        if output.output == .json { return try printJSON(result) }
        for series in result.series {
            let labels = series.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\"\($0.value)\"" }.joined(separator: ",")
            print("\(series.name){\(labels)} (\(series.resolution), \(series.points.count) points)")
            for point in series.points { print("  \(point.t)  \(formatNumber(point.v))") }
        }
        if result.series.isEmpty { stderr("no series of \(result.metric) in that time") }
    }
}

struct AppPush: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "push",
        abstract: "Push samples in Prometheus text format for an application (what an app reporting itself does).")
    @Argument(help: "Application name.") var app: String
    @Option(name: .shortAndLong, help: ArgumentHelp("File with Prometheus text, or - for standard input.", valueName: "file"))
    var file: String
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let text = try readInput(file, option: "--file")
        let result = try await client.client().pushSamples(app: app, exposition: text)
        if output.output == .json { return try printJSON(result) }
        print("accepted \(result.accepted) samples")
    }
}

/// A file's text, or standard input for `-`.
func readInput(_ file: String, option: String) throws -> String {
    if file == "-" { return String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self) }
    guard let data = FileManager.default.contents(atPath: file) else {
        throw VireoError(.invalidArgument, "\(option): cannot read '\(file)'")
    }
    return String(decoding: data, as: UTF8.self)
}

/// Four significant digits, without a trailing ".0".
func formatNumber(_ value: Double) -> String {
    guard value.isFinite else { return "\(value)" }
    if value == value.rounded(), abs(value) < 1e12 { return String(Int64(value)) }
    return String(format: "%.4g", value)
}

struct SLOCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "slo", abstract: "Service-level objectives as OpenSLO v1 documents.", subcommands: [SLOExport.self])
}

struct SLOExport: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write an application's objectives as OpenSLO v1 documents.",
        discussion: """
            Prints a Service, a DataSource where the application reads a Prometheus server, and one SLO per objective \
            (Timeslices: the objective's window, goal and period). `vireo apply -f` takes them back beside the \
            application; response-time and throughput objectives then come back as PromQL objectives of the query \
            shown. Burn-rate alerts are Vireo's own and are not written. See docs/apps.md, "OpenSLO".
            """)
    @Argument(help: "Application name.") var app: String
    @OptionGroup var client: ClientOptions
    @Option(name: .shortAndLong, help: "Output format: yaml (documents separated by ---) or json (a list).")
    var output: Format = .yaml

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case yaml, json
    }

    func run() async throws {
        let spec = try await client.client().app(app).spec
        switch output {
        case .yaml: print(try OpenSLOExport.yaml(for: spec), terminator: "")
        case .json: try printJSON(OpenSLOExport.documents(for: spec))
        }
    }
}

struct AlertCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "alert", abstract: "Burn-rate alerts on objectives and their notifications.",
        subcommands: [AlertListCommand.self])
}

struct AlertListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List the alerts firing now and the latest notifications, with how each delivery went.",
        discussion: """
            Alerts come from OpenSLO alert policies applied with an application's SLOs (docs/apps.md, "Alerts"). \
            Each notification goes to each of the policy's targets in Alertmanager's webhook format, tried five \
            times in all; the controller keeps the latest 1,000 in memory.
            """)
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let alerts = try await client.client().alerts()
        if output.output == .json { return try printJSON(alerts) }
        print("Firing:")
        printTable(
            ["APP", "OBJECTIVE", "ALERT", "SEVERITY", "SINCE", "REASON"],
            alerts.active.map { [$0.app, $0.objective, $0.name, $0.severity, age(since: $0.since) + " ago", $0.reason] })
        print("\nDeliveries:")
        printTable(
            ["ID", "TIME", "APP", "OBJECTIVE", "ALERT", "STATUS", "TARGET", "STATE", "ATTEMPTS", "LAST"],
            alerts.deliveries.map { d in
                [
                    "\(d.id)", age(since: d.time) + " ago", d.app, d.objective, d.alert, d.status, d.target, d.state.rawValue,
                    "\(d.attempts)", d.error ?? d.httpStatus.map { "HTTP \($0)" } ?? "-",
                ]
            })
    }
}

struct PackCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pack",
        abstract: "Management packs: what server software's own metrics say about its SLOs (docs/packs.md).",
        subcommands: [PackListCommand.self, PackShow.self, PackApply.self, PackLint.self])
}

struct PackListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the packs that come with Vireo.")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let packs = try await client.client().packs().items
        if output.output == .json { return try printJSON(packs) }
        printTable(
            ["NAME", "EXPORTER", "PORT", "OBJECTIVES", "DESCRIPTION"],
            packs.map {
                [
                    $0.name, $0.exporter.package, "\($0.exporter.port)", $0.objectives.map(\.name).joined(separator: ","),
                    $0.description,
                ]
            })
    }
}

struct PackShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show", abstract: "Show a pack: its metrics and objectives, and why each is there (-o json), or its YAML.")
    @Argument(help: "Pack name (vireo pack list).") var pack: String
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let pack = try await client.client().pack(pack)
        if output.output == .json { return try printJSON(pack) }
        print(pack.text, terminator: pack.text.hasSuffix("\n") ? "" : "\n")
    }
}

struct PackApply: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apply",
        abstract: "Add a pack to an application.",
        discussion: """
            Vireo then scrapes the pack's exporter in the application's VMs (unless a Prometheus source reads the \
            application), knows its metrics, and judges its objectives (replacing objectives of the same names). \
            The change is checked and listed as an apply's is; applying the application's own manifest again \
            removes what the pack added.
            """)
    @Argument(help: "Pack name (vireo pack list).") var pack: String
    @Option(help: "The application to add it to.") var app: String
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let result = try await client.client().applyPack(pack, to: app)
        if output.output == .json { return try printJSON(result) }
        for item in result.items {
            print("\(item.kind)/\(item.name) \(item.action.rawValue)")
            for change in item.changes ?? [] { print("  \(change)") }
        }
    }
}

struct PackLint: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lint",
        abstract: "Check a pack file: every field as an application's, and a reason (why) for each metric and objective.",
        discussion: "Needs no server. Exits 0 when the pack is sound, 2 with the field and value at fault otherwise.")
    @Argument(help: "The pack's YAML file, or - for standard input.") var file: String

    func run() async throws {
        let pack = try Pack.parse(try readInput(file, option: "file"))
        print("pack \(pack.name): \(pack.metrics.count) metrics, \(pack.objectives.count) objectives, each with a reason")
    }
}
