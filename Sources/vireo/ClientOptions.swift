import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import VireoClient
import VireoModel

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case table, json
}

/// Options every command that talks to a controller takes.
struct ClientOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "Controller URL (env VIREO_SERVER); several, separated by commas, for controllers sharing one "
                + "database: requests go to whichever leads.",
            valueName: "url[,url...]"))
    var server: String = ProcessInfo.processInfo.environment["VIREO_SERVER"] ?? "http://127.0.0.1:7480"

    @Option(
        help: ArgumentHelp("API token, needed when the controller listens beyond loopback (env VIREO_TOKEN).", valueName: "token")
    )
    var token: String?

    @OptionGroup var trust: TrustOptions

    func client() -> VireoClient { client(timeout: .seconds(30)) }

    /// A client whose requests may take up to `timeout` (a context that boots before answering).
    func client(timeout: TimeAmount) -> VireoClient {
        VireoClient(
            server: server, token: token ?? ProcessInfo.processInfo.environment["VIREO_TOKEN"], timeout: timeout,
            http: trust.http)
    }
}

/// `--ca-cert`: which certificate authority an `https://` controller's certificate must come from.
struct TrustOptions: ParsableArguments {
    @Option(
        name: .customLong("ca-cert"),
        help: ArgumentHelp(
            "For an https:// controller with its own certificate authority: the CA's certificate (PEM) to trust instead of the system's (env VIREO_CA_CERT).",
            valueName: "file"))
    var caCert: String?

    var caFile: String? { caCert ?? ProcessInfo.processInfo.environment["VIREO_CA_CERT"] }

    func validate() throws {
        do {
            if let file = caFile { try VireoClient.checkCAFile(file, field: "--ca-cert") }
        } catch let error as VireoError {
            throw ValidationError(error.message)
        }
    }

    /// The HTTP client that trusts that authority (or the system's roots).
    var http: HTTPClient { caFile.map { VireoClient.httpClient(trusting: $0) } ?? VireoClient.sharedHTTPClient }
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
            if first == "--server" || first == "--token" || first == "--ca-cert", rest.count >= 2 {
                leading += rest.prefix(2)
                rest = rest.dropFirst(2)
            } else if first.hasPrefix("--server=") || first.hasPrefix("--token=") || first.hasPrefix("--ca-cert=") {
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
