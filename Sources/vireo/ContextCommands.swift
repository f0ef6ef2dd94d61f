import ArgumentParser
import Foundation
import VireoAPI
import VireoClient
import VireoModel

struct ContextCommandGroup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "context",
        abstract: "Desktop contexts: one VM per trust domain, disposable (reset to clean) or persistent.",
        discussion: """
            A disposable context comes back to its clean state (as it was once booted, or at its last \
            `keep`) at every `reset`, in a fraction of a second; a persistent one keeps its disk. \
            Each is on a network of its own unless given a named one (`--network NAME`).

            Against the controller (default) the verbs reach any host; against a host's local API \
            (`vireo --server http://127.0.0.1:7481 context ...`) they work while the controller is away. \
            See docs/contexts.md.
            """,
        subcommands: [
            ContextOpen.self, ContextList.self, ContextShow.self, ContextReset.self, ContextKeep.self,
            ContextClose.self, ContextLogsCommand.self,
        ])
}

/// The options that pick a context's host, for the verbs on one context.
struct ContextHostOption: ParsableArguments {
    @Option(help: ArgumentHelp("The host, when the name is open on several.", valueName: "host")) var host: String?
}

struct ContextOpen: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "open", abstract: "Open a context: from the host's pool of booted disposables, or booted anew.",
        discussion: """
            Examples:
              vireo context open browser --disposable --wait
              vireo context open work --persistent --memory 512MiB --network office --display vnc
            """)

    @Argument(help: "Context name: lowercase letters, digits and '-', at most 63 characters.") var name: String
    @Flag(help: "Thrown away at every reset (personal, browser).") var disposable = false
    @Flag(help: "Keeps its disk; reset only with --force (work).") var persistent = false
    @Option(help: "Guest image (see `vireo image list`).") var image: String = ContextValidation.defaultImage
    @Option(help: "Virtual CPUs.") var cpus: Int = 1
    @Option(help: ArgumentHelp("Memory, e.g. 256MiB or 1GiB.", valueName: "size"))
    var memory: String = ByteSize.format(mib: ContextValidation.defaultMemoryMiB)
    @Option(
        help: ArgumentHelp(
            "isolated (a network of its own, the default) or the name of a network shared with other contexts on its host.",
            valueName: "network"))
    var network: String = "isolated"
    @Option(help: ArgumentHelp("vnc (on the host's loopback) or none.", valueName: "display")) var display: String = "none"
    @Option(help: ArgumentHelp("The host to open it on (default: the one with the most memory free).", valueName: "host"))
    var host: String?
    @Flag(help: "Return once it runs from its clean state (otherwise once its VM started).") var wait = false
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard disposable != persistent else {
            throw ValidationError("say what the context is: --disposable or --persistent (one of them)")
        }
    }

    func run() async throws {
        var body: [String: JSONValue] = [
            "name": .string(name), "kind": .string(disposable ? "disposable" : "persistent"), "image": .string(image),
            "cpus": .number(Double(cpus)), "memory": .string(ByteSize.apiForm(memory)), "network": .string(network),
            "display": .string(display), "wait": .bool(wait),
        ]
        if let host { body["host"] = .string(host) }
        // Validated here as the server does, so a typo fails before anything is sent.
        let request = try ContextValidation.fromAPIBody(.object(body))
        let started = ContinuousClock.now
        let context = try await client.client(timeout: .seconds(400)).openContext(request)
        if output.output == .json { return try printJSON(context) }
        let elapsed = Int((ContinuousClock.now - started).secondsValue * 1000)
        print(
            "context \(context.name) \(context.state.rawValue) on \(context.host)"
                + (context.fromPool ? " (from the pool)" : "") + " in \(elapsed) ms"
                + (context.display.map { "; display vnc://\($0)" } ?? ""))
    }
}

struct ContextList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List contexts and the hosts' pools.")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let list = try await client.client().listContexts()
        if output.output == .json { return try printJSON(list) }
        printTable(
            ["NAME", "KIND", "STATE", "HOST", "ADDRESS", "NETWORK", "RESETS", "LAST RESET", "CLEAN SINCE"],
            list.items.map {
                [
                    $0.name, $0.kind.rawValue, $0.state.rawValue, $0.host, $0.address ?? "-", $0.network.description,
                    String($0.resets), $0.resetMs.map { "\($0) ms" } ?? "-", $0.cleanSince.map { age(since: $0) } ?? "-",
                ]
            })
        if !list.pools.isEmpty {
            print("")
            printTable(
                ["POOL HOST", "IMAGE", "SIZE", "READY", "WARMING", "TARGET", "RESIDENT"],
                list.pools.map {
                    [
                        $0.host, $0.image, "\($0.cpus) cpu, \(ByteSize.format(mib: $0.memoryMiB))", String($0.ready),
                        String($0.warming), String($0.target), $0.residentMiB.map { ByteSize.format(mib: $0) } ?? "-",
                    ]
                })
        }
    }
}

struct ContextShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show a context.")
    @Argument(help: "Context name.") var name: String
    @OptionGroup var location: ContextHostOption
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let context = try await client.client().context(name, host: location.host)
        if output.output == .json { return try printJSON(context) }
        printContext(context)
    }
}

struct ContextReset: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reset",
        abstract: "Bring a context back to its clean state: everything since (disk, memory) is gone.",
        discussion: "resetMs in the answer runs from the request reaching the host to the guest running again.")
    @Argument(help: "Context name.") var name: String
    @Flag(help: "Reset a persistent context too, throwing its work since its clean state away.") var force = false
    @OptionGroup var location: ContextHostOption
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let context = try await client.client().resetContext(name, host: location.host, force: force)
        if output.output == .json { return try printJSON(context) }
        print(
            "context \(context.name) reset in \(context.resetMs.map(String.init) ?? "?") ms"
                + (context.loadMs.map { " (loading its clean state: \($0) ms)" } ?? ""))
    }
}

struct ContextKeep: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keep", abstract: "Make a context's current state its clean state (what `reset` comes back to).")
    @Argument(help: "Context name.") var name: String
    @OptionGroup var location: ContextHostOption
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let context = try await client.client().keepContext(name, host: location.host)
        if output.output == .json { return try printJSON(context) }
        print("context \(context.name) kept: resets now come back to this state")
    }
}

struct ContextClose: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "close", abstract: "Close a context: its VM and its disk are deleted.")
    @Argument(help: "Context name.") var name: String
    @OptionGroup var location: ContextHostOption
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let context = try await client.client().closeContext(name, host: location.host)
        if output.output == .json { return try printJSON(context) }
        print("context \(context.name) closed")
    }
}

struct ContextLogsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logs", abstract: "Show the end of a context's serial console (at most the last 64 KiB).")
    @Argument(help: "Context name.") var name: String
    @Option(help: "Only the last N lines.") var tail: Int?
    @OptionGroup var location: ContextHostOption
    @OptionGroup var client: ClientOptions

    func run() async throws {
        let text = try await client.client().contextLogs(name, host: location.host, tail: tail)
        print(text, terminator: text.hasSuffix("\n") || text.isEmpty ? "" : "\n")
    }
}

func printContext(_ context: Context) {
    var rows: [(String, String)] = [
        ("Name", context.name), ("Kind", context.kind.rawValue), ("State", context.state.rawValue),
        ("Host", context.host), ("Image", context.image),
        ("Size", "\(context.cpus) cpu, \(ByteSize.format(mib: context.memoryMiB))"),
        ("Network", context.network.description), ("Address", context.address ?? "-"),
        ("Display", context.display.map { "vnc://\($0)" } ?? "-"), ("Resets", String(context.resets)),
        ("Last reset", context.resetMs.map { "\($0) ms (loading: \(context.loadMs.map(String.init) ?? "?") ms)" } ?? "-"),
        ("Clean since", context.cleanSince.map { "\(age(since: $0)) ago" } ?? "-"),
        ("Opened", "\(age(since: context.openedAt)) ago\(context.fromPool ? ", from the pool" : "")"),
        ("VM", context.vm.rawValue),
    ]
    if let message = context.message { rows.append(("Message", message)) }
    let width = rows.map(\.0.count).max() ?? 0
    for (key, value) in rows { print(key.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + value) }
}
