import ArgumentParser
import Foundation
import Logging
import VireoDriver
import VireoModel

struct DriverCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "driver", abstract: "The hypervisor drivers this build has, and what each can do.",
        subcommands: [DriverList.self])
}

/// One driver, as configured, and what it can do.
struct DriverCapabilities: Codable, Equatable {
    var driver: String
    /// The settings this row is for (`--driver-opt`), none for the defaults.
    var settings: [String: String]
    var capabilities: [Capability]
}

struct DriverList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List the drivers and their capabilities (no server needed).",
        discussion: """
            Each driver is made with its default settings (in a temporary directory; nothing is started), \
            plus the settings that change what it can do. docs/hypervisors.md holds this table: \
            `vireo driver list -o markdown`.
            """)

    enum Format: String, ExpressibleByArgument, CaseIterable { case table, json, markdown }
    @Option(name: .shortAndLong, help: "Output format: table, json or markdown.") var output: Format = .table

    /// Settings that change a driver's capabilities, shown as rows of their own.
    static let variants: [String: [[String: String]]] = [
        "qemu": [[:]],
        "libvirt": [["uri": "test:///default"], ["uri": "test:///default", "shared-disks": "/srv/vireo-disks"]],
    ]

    func run() async throws {
        let rows = try Self.rows()
        switch output {
        case .json: try printJSON(rows)
        case .markdown: print(Self.markdown(rows), terminator: "")
        case .table:
            printTable(
                ["DRIVER", "SETTINGS", "CAPABILITIES"],
                rows.map { [$0.driver, Self.settings($0.settings), $0.capabilities.map(\.rawValue).joined(separator: ", ")] })
        }
    }

    static func rows() throws -> [DriverCapabilities] {
        var logger = Logger(label: "vireo.driver-list")
        logger.logLevel = .error
        let registry = DriverSelection.registry(logger: logger)
        let directory = FileManager.default.temporaryDirectory.path + "/vireo-driver-list-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var rows: [DriverCapabilities] = []
        for name in registry.names {
            for settings in variants[name] ?? [[:]] {
                let driver = try registry.make(name, options: DriverOptions(stateDirectory: directory, settings: settings))
                rows.append(DriverCapabilities(driver: name, settings: settings, capabilities: driver.capabilities.sorted()))
            }
        }
        return rows
    }

    static func settings(_ settings: [String: String]) -> String {
        settings.isEmpty ? "defaults" : settings.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
    }

    /// The capability table: a row per driver and settings, a column per capability.
    static func markdown(_ rows: [DriverCapabilities]) -> String {
        let all = Capability.allCases.sorted()
        var text = "| driver | settings | " + all.map(\.rawValue).joined(separator: " | ") + " |\n"
        text += "|---|---|" + String(repeating: "---|", count: all.count) + "\n"
        for row in rows {
            let marks = all.map { row.capabilities.contains($0) ? "yes" : "—" }
            text += "| \(row.driver) | \(settings(row.settings)) | " + marks.joined(separator: " | ") + " |\n"
        }
        return text
    }
}
