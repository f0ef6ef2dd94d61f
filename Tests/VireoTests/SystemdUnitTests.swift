import Foundation
import Testing
import VireoDriver
import VireoModel
import VireoProcess

/// The systemd units in deploy/systemd and their example settings: systemd takes them, and their
/// command lines, expanded as systemd expands them, run a controller and an agent that joins it.
@Suite("systemd units (deploy/systemd)")
struct SystemdUnitTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("deploy/systemd").path
    static let units = ["vireo-controller.service", "vireo-agent.service"]

    static func read(_ name: String) throws -> String {
        try String(contentsOfFile: directory + "/" + name, encoding: .utf8)
    }

    /// The `KEY=VALUE` lines of an environment file, as systemd's `EnvironmentFile=` reads ours
    /// (comments and blank lines skipped; no quotes in them).
    static func environment(_ name: String) throws -> [String: String] {
        var values: [String: String] = [:]
        for line in try read(name).split(separator: "\n") where !line.hasPrefix("#") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            values[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
        return values
    }

    /// A unit's `ExecStart=` as systemd makes it a command: `${VAR}` one word, `$VAR` its value
    /// split at spaces (none if empty or unset).
    static func command(of unit: String, environment: [String: String]) throws -> [String] {
        let line = try #require(try read(unit).split(separator: "\n").first { $0.hasPrefix("ExecStart=") })
        return line.dropFirst("ExecStart=".count).split(separator: " ").flatMap { word -> [String] in
            if word.hasPrefix("${"), word.hasSuffix("}") {
                return [environment[String(word.dropFirst(2).dropLast())] ?? ""]
            }
            if word.hasPrefix("$") {
                return (environment[String(word.dropFirst())] ?? "").split(separator: " ").map(String.init)
            }
            return [String(word)]
        }
    }

    @Test("systemd-analyze verify takes both units without a word")
    func verified() async throws {
        let root = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let found = try await HostTool.text("sh", ["-c", "command -v systemd-analyze || true"])
        guard !found.isEmpty else {
            Issue.record("systemd-analyze is missing: install Debian's systemd package (scripts/install-deps.sh does)")
            return
        }
        for unit in Self.units {
            // The unit as installed, its binary where this build has it (verify checks it exists).
            let text = try Self.read(unit).replacingOccurrences(of: "/usr/local/bin/vireo", with: vireoBinary)
            try text.write(toFile: root + "/" + unit, atomically: true, encoding: .utf8)
            let said = try await HostTool.text(
                "sh", ["-c", "systemd-analyze verify \"$1\" 2>&1; echo \"exit $?\"", "sh", root + "/" + unit])
            #expect(said == "exit 0\n", "\(unit): \(said)")
        }
        // The agent's service must not take the VMs down with it.
        #expect(try Self.read("vireo-agent.service").contains("\nKillMode=process\n"))
        for unit in Self.units { #expect(try Self.read(unit).contains("\nRestart=always\n"), "\(unit)") }
    }

    @Test("the units' command lines with the example settings run a TLS controller and an agent that joins it")
    func commandLinesRun() async throws {
        let root = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let port = try LoopbackPort.free()
        // The examples as they are, but for the port, the addresses the agent is given and the
        // directories (what systemd gives as $STATE_DIRECTORY), and the simulated driver: QEMU
        // guests need root. The controller listens on every address, so tokens are required;
        // everything speaks over loopback.
        var controllerSettings = try Self.environment("controller.env")
        #expect(controllerSettings["VIREO_CONTROLLER_OPTS"] == "--tls-auto")
        #expect(controllerSettings["VIREO_LISTEN"] == "0.0.0.0:7480")
        controllerSettings["VIREO_LISTEN"] = "0.0.0.0:\(port)"
        controllerSettings["STATE_DIRECTORY"] = root + "/controller"
        let controllerCommand = try Self.command(of: "vireo-controller.service", environment: controllerSettings)
        #expect(controllerCommand.first == "/usr/local/bin/vireo")
        let controller = try BackgroundVireo(Array(controllerCommand.dropFirst()))
        defer { controller.kill() }
        let ca = root + "/controller/tls/ca-cert.pem"
        let server = "https://127.0.0.1:\(port)"
        try await eventually("the controller serves https", within: 30) {
            guard FileManager.default.fileExists(atPath: root + "/controller/admin.token") else { return false }
            let listed = try await vireo(["host", "list", "--ca-cert", ca], server: server, token: Self.token(root, "admin"))
            return listed.status == 0
        }

        var agentSettings = try Self.environment("agent.env")
        #expect(agentSettings["VIREO_AGENT_OPTS"] == "--driver qemu")
        agentSettings["VIREO_CONTROLLER"] = server
        agentSettings["VIREO_AGENT_OPTS"] = "--driver simulated"
        agentSettings["STATE_DIRECTORY"] = root + "/agent"
        agentSettings["VIREO_TOKEN"] = try Self.token(root, "join")
        agentSettings["VIREO_CA_CERT"] = ca
        let agentCommand = try Self.command(of: "vireo-agent.service", environment: agentSettings)
        let host = try #require(agentSettings["VIREO_HOST"])
        // The agent reads its token and the CA from the environment, as from EnvironmentFile=.
        let agent = try BackgroundVireo(
            Array(agentCommand.dropFirst()),
            environment: ["VIREO_TOKEN": agentSettings["VIREO_TOKEN"] ?? "", "VIREO_CA_CERT": ca])
        defer { agent.kill() }
        try await eventually("host \(host) joins and is ready", within: 30) {
            let listed = try await vireo(
                ["host", "list", "-o", "json", "--ca-cert", ca], server: server, token: Self.token(root, "admin"))
            let hosts = try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [[String: Any]] ?? []
            return hosts.contains { $0["name"] as? String == host && $0["state"] as? String == "ready" }
        }
        // It joined with the join token and speaks with a certificate of its own since.
        #expect(FileManager.default.fileExists(atPath: root + "/agent/tls/agent-cert.pem"), "\(agent.logText)")
    }

    static func token(_ root: String, _ name: String) throws -> String {
        try String(contentsOfFile: root + "/controller/\(name).token", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
