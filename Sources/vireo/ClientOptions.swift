import ArgumentParser
import Foundation
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
}

struct OutputOptions: ParsableArguments {
    @Option(name: .shortAndLong, help: "Output format: table or json.")
    var output: OutputFormat = .table
}
