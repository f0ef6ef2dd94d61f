import ArgumentParser
import Foundation
import VireoAPI
import VireoModel

struct HostCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "host", abstract: "Inspect hosts (one per agent).", subcommands: [HostList.self])
}

struct HostList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List hosts and what is allocated on them.")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let hosts = try await client.client().hosts().items
        if output.output == .json { return try printJSON(hosts) }
        printTable(
            ["NAME", "STATE", "DRIVER", "CPUS", "CPU LOAD", "MEMORY", "VMS", "HEARTBEAT"],
            hosts.map {
                [
                    $0.name, $0.state.rawValue, $0.driver, "\($0.allocatedCPUs)/\($0.cpus)",
                    $0.cpuLoad.map { String(format: "%.0f%%", $0 * 100) } ?? "-",
                    "\(ByteSize.format(mib: $0.allocatedMemoryMiB))/\(ByteSize.format(mib: $0.memoryMiB))", String($0.vms),
                    age(since: $0.lastHeartbeatAt) + " ago",
                ]
            })
    }
}

struct Apply: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create what a manifest describes (idempotent: what already matches is left alone).",
        discussion: """
            The manifest holds one or more YAML documents:
              apiVersion: vireo/v1
              kind: VirtualMachine
              metadata: { name: web-1 }
              spec: { image: tiny, cpus: 1, memory: 256MiB }
            Kinds: VirtualMachine, Application (VMs, telemetry and objectives; see docs/apps.md) and OpenSLO v1 \
            SLO (apiVersion openslo/v1; its spec.service names the application). An application that changed \
            is updated and the changes are listed. Either every document is valid and applied, or nothing changes.
            """)
    @Option(name: .shortAndLong, help: ArgumentHelp("Manifest file, or - for standard input.", valueName: "file"))
    var file: String
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let text = try readInput(file, option: "--file")
        let result = try await client.client().apply(manifest: text)
        if output.output == .json { return try printJSON(result) }
        for item in result.items {
            print("\(item.kind)/\(item.name) \(item.action.rawValue)")
            for change in item.changes ?? [] where item.action == .updated { print("  ~ \(change)") }
        }
    }
}

struct EventsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events", abstract: "Show recent state changes (the controller keeps the last 1,000).")
    @Option(help: "Show events after this sequence number.") var after: Int = 0
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let events = try await client.client().events(after: after)
        if output.output == .json { return try printJSON(events) }
        printTable(
            ["SEQ", "TIME", "KIND", "NAME", "CHANGE", "MESSAGE"],
            events.map {
                let change = [$0.from, $0.to].compactMap { $0 }.joined(separator: " → ")
                return [String($0.seq), "\($0.time)", $0.kind.rawValue, $0.name, change, $0.message ?? ""]
            })
    }
}
