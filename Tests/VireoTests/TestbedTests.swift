import AsyncHTTPClient
import Foundation
import NIOCore
import Synchronization
import Testing
import VireoAPI
import VireoModel

/// The whole product on real pieces: `vireo testbed up 2` (network namespaces, a bridge, cgroups,
/// a controller and two `vireo agent --driver qemu`), a web VM on h1, `vireo migrate` to h2 while
/// a client keeps asking the guest for its status, `vireo testbed down`. Uses 198.19.0.0/16 and
/// its own names, so it does not meet a testbed someone has up on 198.18.
extension RealQEMU {
    @Suite("Testbed and live migration end to end (root, real QEMU)", .serialized)
    struct TestbedTests {
        @Test("a guest migrates between testbed hosts through the CLI and keeps serving at its address")
        func migrateAcrossHosts() async throws {
            let directory = temporaryDirectory() + "/testbed"
            let up = try await vireo(["testbed", "up", "2", "--dir", directory, "--name", "vtest", "--network", "198.19"])
            defer { _ = try? vireoBlocking(["testbed", "down", "--dir", directory]) }
            #expect(up.status == 0, "\(up.stderr)")
            #expect(up.stderr.contains("all 2 host(s) ready"))
            let server = "http://198.19.0.1:7480"
            let token = try String(contentsOfFile: directory + "/controller/admin.token", encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines)

            let hosts = try await vireo(["host", "list", "-o", "json"], server: server, token: token)
            let fingerprints = try decodeJSON([HostView].self, hosts.stdout)
            #expect(fingerprints.map(\.name).sorted() == ["h1", "h2"])
            #expect(fingerprints.allSatisfy { $0.driver == "qemu" && $0.capabilities.contains(.liveMigration) })

            let created = try await vireo(
                ["vm", "create", "w", "--image", "web", "--memory", "256MiB", "--host", "h1", "--wait", "--timeout", "90"],
                server: server, token: token)
            #expect(created.status == 0, "\(created.stderr)")
            let address = try #require(try await vmView("w", server: server, token: token).address)
            #expect(address.hasPrefix("198.19.1."))
            let before = try await guestStatus(address)

            // A client keeps asking the guest while it moves; every answer must come from the same boot.
            let answers = Mutex<[JSONValue]>([])
            let stop = Mutex(false)
            let prober = Task {
                for _ in 0..<2000 where !stop.withLock({ $0 }) {
                    if let answer = try? await guestStatus(address, timeout: .seconds(2)) {
                        answers.withLock { $0.append(answer) }
                    }
                    try? await Task.sleep(for: .milliseconds(10))
                }
            }
            try await eventually("the prober hears the guest", within: 60) { answers.withLock { !$0.isEmpty } }
            let beforeMove = answers.withLock { $0.count }
            let moved = try await vireo(["migrate", "w", "--to", "h2", "-o", "json"], server: server, token: token)
            try await eventually("the prober hears the guest after the move", within: 60) {
                answers.withLock { $0.count > beforeMove }
            }
            stop.withLock { $0 = true }
            await prober.value
            let heard = answers.withLock { $0 }
            #expect(moved.status == 0, "\(moved.stderr)")
            let migration = try decodeJSON(MigrationView.self, moved.stdout)
            #expect(migration.state == .completed)
            #expect(migration.source == "h1" && migration.destination == "h2")
            let stats = try #require(migration.stats)
            #expect(stats.transferredBytes > 1 << 20)
            print("testbed migration of 256 MiB: total \(stats.totalTimeMs) ms, downtime \(stats.downtimeMs) ms")

            let after = try await guestStatus(address)
            #expect(after["bootId"] == before["bootId"])
            #expect((after["uptimeSeconds"]?.doubleValue ?? 0) > (before["uptimeSeconds"]?.doubleValue ?? .infinity))
            #expect(heard.count > beforeMove)
            #expect(heard.allSatisfy { $0["bootId"] == before["bootId"] })
            let vm = try await vmView("w", server: server, token: token)
            #expect(vm.host == "h2")
            #expect(vm.state == .running)
            let listed = try await vireo(["migration", "list", "--vm", "w"], server: server, token: token)
            #expect(listed.stdout.contains("completed"))

            // Down removes what up created: namespaces, links, the QEMUs.
            let down = try await vireo(["testbed", "down", "--dir", directory])
            #expect(down.status == 0)
            let namespaces = try await vireo(["testbed", "down", "--dir", directory])
            #expect(namespaces.stderr.contains("no testbed"))
            #expect(!(try runTool("ip", ["netns", "list"])).contains("vtest-h"))
            #expect(!(try runTool("ip", ["link", "show"])).contains("vtest-"))
        }

        func vmView(_ name: String, server: String, token: String) async throws -> VMView {
            let shown = try await vireo(["vm", "show", name, "-o", "json"], server: server, token: token)
            return try decodeJSON(VMView.self, shown.stdout)
        }

        func guestStatus(_ address: String, timeout: TimeAmount = .seconds(5)) async throws -> JSONValue {
            let response = try await HTTPClient.shared.execute(
                HTTPClientRequest(url: "http://\(address)/status"), timeout: timeout)
            return try JSONDecoder().decode(JSONValue.self, from: Data(buffer: try await response.body.collect(upTo: 1 << 16)))
        }

        func runTool(_ tool: String, _ arguments: [String]) throws -> String {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/sbin/\(tool)").standardized
            if !FileManager.default.isExecutableFile(atPath: process.executableURL!.path) {
                process.executableURL = URL(fileURLWithPath: "/usr/bin/\(tool)")
            }
            process.arguments = arguments
            let out = Pipe()
            process.standardOutput = out
            try process.run()
            let data = out.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return String(decoding: data, as: UTF8.self)
        }
    }
}
