import ArgumentParser
import Foundation
import VireoAPI
import VireoModel

struct HostCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "host", abstract: "Inspect hosts (one per agent), and shut a host's certificates out.",
        subcommands: [HostList.self, HostRevoke.self])
}

struct HostRevoke: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revoke", abstract: "Refuse the agent certificates issued to a host so far (admin only).",
        discussion: """
            For a controller with its own authority (--tls-auto): every certificate the authority \
            issued to the host until now is refused on /v1/agent/, renewals included, so a key that \
            left the host (a stolen disk, a host given away) no longer speaks for it. The host's VMs \
            stay where they are; a host that stops heartbeating is declared lost as any other. To let \
            the host back, remove its agent's tls/agent-*.pem and start it again with the join token. \
            The join token itself still gets certificates: if the host held it, change it too \
            (docs/security.md says how). A controller without --tls-auto refuses: its agents have no \
            certificates. \
            The host need not be registered (a removed host's certificate is valid until it expires).
            Example: vireo host revoke h3
            """)

    @Argument(help: "The host's name (or the ID of a registered host).") var host: String
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let revoked = try await client.client().revokeCertificates(host: host)
        if output.output == .json { return try printJSON(revoked) }
        print(
            "Agent certificates of host \(revoked.host) issued before \(revoked.revokedBefore.formatted(.iso8601)) are refused"
                + (revoked.registered ? "." : " (no host of that name is registered)."))
    }
}

struct HostList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List hosts and what is allocated on them.")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let hosts = try await client.client().hosts().items
        if output.output == .json { return try printJSON(hosts) }
        printTable(
            ["NAME", "STATE", "DRIVER", "HYPERVISOR", "CPUS", "CPU LOAD", "MEMORY", "VMS", "HEARTBEAT"],
            hosts.map {
                [
                    $0.name, $0.state.rawValue, $0.driver, Self.hypervisor($0), "\($0.allocatedCPUs)/\($0.cpus)",
                    $0.cpuLoad.map { String(format: "%.0f%%", $0 * 100) } ?? "-",
                    "\(ByteSize.format(mib: $0.allocatedMemoryMiB))/\(ByteSize.format(mib: $0.memoryMiB))", String($0.vms),
                    age(since: $0.lastHeartbeatAt) + " ago",
                ]
            })
    }

    /// The hypervisor and its version in a few words (`QEMU 7.2.22`), from what the driver
    /// reported; `-` when it reported none.
    static func hypervisor(_ host: HostView) -> String {
        guard let text = host.attributes["hypervisor"], !text.isEmpty else { return "-" }
        let words = text.split(separator: " ")
        if words.count >= 4, words[1] == "emulator", words[2] == "version" { return "\(words[0]) \(words[3])" }
        return text
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
            With --wait it then waits until every VM the manifest names (those of its applications too) runs.
            Example: vireo apply -f examples/demo.yaml --wait
            """)
    @Option(name: .shortAndLong, help: ArgumentHelp("Manifest file, or - for standard input.", valueName: "file"))
    var file: String
    @OptionGroup var waiting: WaitOptions
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let text = try readInput(file, option: "--file")
        let api = client.client()
        let result = try await api.apply(manifest: text)
        if output.output == .json {
            try printJSON(result)
        } else {
            for item in result.items {
                print("\(item.kind)/\(item.name) \(item.action.rawValue)")
                for change in item.changes ?? [] where item.action == .updated { print("  ~ \(change)") }
            }
        }
        guard waiting.wait else { return }
        var names: [String] = []
        for item in result.items {
            switch item.kind {
            case "VirtualMachine": names.append(item.name)
            case "Application": names += try await api.app(item.name).vms.map(\.name)
            default: break
            }
        }
        // Every VM at once: each prints its own state changes, and the first to fail ends the wait.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for name in Set(names) {
                let vm = try await api.vm(name)
                group.addTask { _ = try await waiting.waitFor(vm, client: api) { $0?.state == .running } }
            }
            try await group.waitForAll()
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
