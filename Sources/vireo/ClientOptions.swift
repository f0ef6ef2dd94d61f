import ArgumentParser
import Foundation
import NIOCore
import VireoClient

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case table, json
}

/// Options every command that talks to a controller takes.
struct ClientOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Controller URL (env VIREO_SERVER).", valueName: "url"))
    var server: String = ProcessInfo.processInfo.environment["VIREO_SERVER"] ?? "http://127.0.0.1:7480"

    @Option(
        help: ArgumentHelp("API token, needed when the controller listens beyond loopback (env VIREO_TOKEN).", valueName: "token")
    )
    var token: String?

    func client() -> VireoClient {
        VireoClient(server: server, token: token ?? ProcessInfo.processInfo.environment["VIREO_TOKEN"])
    }

    /// A client whose requests may take up to `timeout` (a context that boots before answering).
    func client(timeout: TimeAmount) -> VireoClient {
        VireoClient(server: server, token: token ?? ProcessInfo.processInfo.environment["VIREO_TOKEN"], timeout: timeout)
    }
}

struct OutputOptions: ParsableArguments {
    @Option(name: .shortAndLong, help: "Output format: table or json.")
    var output: OutputFormat = .table
}

extension ClientOptions {
    /// `vireo --server URL [--token T] COMMAND ...` as well as `vireo COMMAND ... --server URL`:
    /// the client options given before the command are moved after it, where its parser reads them.
    static func movingLeadingOptions(_ arguments: [String]) -> [String] {
        var leading: [String] = []
        var rest = arguments[...]
        while let first = rest.first {
            if first == "--server" || first == "--token", rest.count >= 2 {
                leading += rest.prefix(2)
                rest = rest.dropFirst(2)
            } else if first.hasPrefix("--server=") || first.hasPrefix("--token=") {
                leading.append(first)
                rest = rest.dropFirst()
            } else {
                break
            }
        }
        guard !leading.isEmpty else { return arguments }
        // After a `--` everything is positional: the options go before it.
        if let separator = rest.firstIndex(of: "--") {
            return Array(rest[..<separator]) + leading + Array(rest[separator...])
        }
        return Array(rest) + leading
    }
}
