import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Synchronization
import Testing
import VireoAPI
import VireoModel
import VireoTestbed

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

            // The guest firewall (docs/security.md): a service listening on each host's address
            // answers the controller's namespace but not the guest (now on h2), and neither does
            // the controller; another guest (on h1) it does reach.
            var services: [Process] = []
            defer { for service in services { service.terminate() } }
            for host in ["h1", "h2"] {
                let service = Process()
                service.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
                service.arguments = ["--net=/run/netns/vtest-\(host)", "busybox", "nc", "-ll", "-p", "7999", "-e", "/bin/true"]
                try service.run()
                services.append(service)
            }
            try await eventually("the services in h1 and h2 listen", within: 10) {
                tcpConnects("198.19.1.1", 7999) && tcpConnects("198.19.2.1", 7999)
            }
            let peer = try await vireo(
                ["vm", "create", "w2", "--image", "web", "--memory", "192MiB", "--host", "h1", "--wait", "--timeout", "90"],
                server: server, token: token)
            #expect(peer.status == 0, "\(peer.stderr)")
            let peerAddress = try #require(try await vmView("w2", server: server, token: token).address)
            for (target, reachable) in [
                ("198.19.2.1:7999", false), ("198.19.0.1:7480", false), ("198.19.1.1:7999", false),
                ("\(peerAddress):80", true),
            ] {
                let probe = try await guestJSON(address, "/connect?to=\(target)&timeoutMs=2000")
                #expect(probe["connected"] == .bool(reachable), "guest → \(target): \(probe)")
            }
            #expect(tcpConnects("198.19.1.1", 7999) && tcpConnects("198.19.2.1", 7999), "the controller's namespace reaches both")

            // Down removes what up created: namespaces, links, the QEMUs.
            let down = try await vireo(["testbed", "down", "--dir", directory])
            #expect(down.status == 0)
            let namespaces = try await vireo(["testbed", "down", "--dir", directory])
            #expect(namespaces.stderr.contains("no testbed"))
            #expect(!(try runTool("ip", ["netns", "list"])).contains("vtest-h"))
            #expect(!(try runTool("ip", ["link", "show"])).contains("vtest-"))
        }

        @Test(
            "a testbed with a qemu and a libvirt host: each host shows its driver, a guest on libvirt serves in its host's namespace and moves cold to qemu with its disk; down leaves nothing",
            .enabled(if: getuid() == 0, "needs root: the testbed creates namespaces, bridges, cgroups and libvirtds"),
            .enabled(
                if: FileManager.default.isExecutableFile(atPath: "/usr/sbin/libvirtd"),
                "needs libvirt-daemon-system (libvirtd, virtlogd)"))
        func mixedDrivers() async throws {
            let directory = temporaryDirectory() + "/testbed"
            let up = try await vireo([
                "testbed", "up", "2", "--dir", directory, "--name", "vtmix", "--network", "198.19",
                "--driver", "h1=qemu,h2=libvirt",
            ])
            defer { _ = try? vireoBlocking(["testbed", "down", "--dir", directory]) }
            try #require(up.status == 0, "\(up.stderr)")
            #expect(up.stdout.contains("h1 (qemu), h2 (libvirt)"), "\(up.stdout)")
            let server = "http://198.19.0.1:7480"
            let token = try String(contentsOfFile: directory + "/controller/admin.token", encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let libvirtSocket = directory + "/h2/libvirt/sock/libvirt-sock"
            #expect(FileManager.default.fileExists(atPath: libvirtSocket))

            let hosts = try decodeJSON(
                [HostView].self, try await vireo(["host", "list", "-o", "json"], server: server, token: token).stdout)
            let h1 = try #require(hosts.first { $0.name == "h1" })
            let h2 = try #require(hosts.first { $0.name == "h2" })
            #expect(h1.driver == "qemu")
            #expect(h1.attributes["hypervisor"]?.isEmpty == false, "\(h1.attributes)")
            #expect(h2.driver == "libvirt")
            #expect(h2.attributes["hypervisor"]?.hasPrefix("QEMU ") == true, "\(h2.attributes)")
            #expect(h2.attributes["uri"]?.contains(libvirtSocket) == true, "\(h2.attributes)")
            let table = try await vireo(["host", "list"], server: server, token: token)
            #expect(table.stdout.contains("libvirt") && table.stdout.contains("qemu"), "\(table.stdout)")

            let created = try await vireo(
                ["vm", "create", "web", "--image", "web", "--memory", "256MiB", "--host", "h2", "--wait", "--timeout", "180"],
                server: server, token: token)
            try #require(created.status == 0, "\(created.stderr)")
            let onLibvirt = try await vmView("web", server: server, token: token)
            #expect(onLibvirt.host == "h2" && onLibvirt.state == .running)
            // User networking: the guest's port 80 is a loopback port of h2's namespace, where
            // h2's libvirtd runs its QEMU; h2's agent and anything in that namespace reach it.
            let loopback = try #require(onLibvirt.address)
            #expect(loopback.hasPrefix("127.0.0.1:"), "\(loopback)")
            _ = try runTool(
                "nsenter", ["--net=/run/netns/vtmix-h2", "curl", "-sf", "-X", "POST", "http://\(loopback)/mark?value=from-h2"])
            let marked = try runTool("nsenter", ["--net=/run/netns/vtmix-h2", "curl", "-sf", "http://\(loopback)/mark"])
            #expect(marked.contains("\"disk\":\"from-h2\""), "\(marked)")
            let status = try runTool("nsenter", ["--net=/run/netns/vtmix-h2", "curl", "-sf", "http://\(loopback)/status"])
            #expect(status.contains("bootId"), "\(status)")
            let domains = try runTool("virsh", ["-c", "qemu+unix:///system?socket=\(libvirtSocket)", "list", "--name"])
            #expect(domains.contains("vireo-web"), "\(domains)")

            let moved = try await vireo(
                ["migrate", "web", "--to", "h1", "--cold", "--timeout", "240", "-o", "json"], server: server, token: token)
            try #require(moved.status == 0, "\(moved.stderr)")
            let migration = try decodeJSON(MigrationView.self, moved.stdout)
            #expect(migration.state == .completed && migration.kind == .cold, "\(migration)")
            #expect(migration.source == "h2" && migration.destination == "h1")
            print(
                "testbed cold move libvirt → qemu: down \(migration.stats?.downtimeMs ?? -1) ms, disk copy \(migration.stats?.storageTimeMs ?? -1) ms"
            )
            try await eventually("web runs on h1 with an address", within: 120) {
                let vm = try await vmView("web", server: server, token: token)
                return vm.state == .running && vm.host == "h1" && vm.address?.hasPrefix("198.19.1.") == true
            }
            let onQEMU = try #require(try await vmView("web", server: server, token: token).address)
            // Running means the guest printed its ready marker; its first answers over the new tap
            // can still be refused while the bridge learns its address.
            var marks: JSONValue = .null
            try await eventually("the guest answers on h1", within: 30) {
                guard let answer = try? await guestJSON(onQEMU, "/mark") else { return false }
                marks = answer
                return true
            }
            #expect(marks["disk"] == .string("from-h2"), "the disk came along: \(marks)")
            #expect(marks["memory"] == .string(""), "the guest booted again: \(marks)")
            try await eventually("h2's libvirtd let go of the domain", within: 60) {
                !(try runTool("virsh", ["-c", "qemu+unix:///system?socket=\(libvirtSocket)", "list", "--all", "--name"]))
                    .contains("vireo-web")
            }

            let libvirtdPID = try String(contentsOfFile: directory + "/h2/libvirt/libvirtd.pid", encoding: .utf8)
            let down = try await vireo(["testbed", "down", "--dir", directory])
            #expect(down.status == 0, "\(down.stderr)")
            #expect(!(try runTool("ip", ["netns", "list"])).contains("vtmix-h"))
            #expect(!(try runTool("ip", ["link", "show"])).contains("vtmix-"))
            #expect(!FileManager.default.fileExists(atPath: directory + "/h2/libvirt"))
            let pid = try #require(Int32(libvirtdPID.trimmingCharacters(in: .whitespacesAndNewlines)))
            #expect(kill(pid, 0) != 0, "h2's libvirtd \(pid) is gone")
            // No QEMU of this testbed is left, on either driver.
            let processes = try runTool("ps", ["-eo", "args"])
            #expect(!processes.contains(directory), "\(processes.split(separator: "\n").filter { $0.contains(directory) })")
        }

        func vmView(_ name: String, server: String, token: String) async throws -> VMView {
            let shown = try await vireo(["vm", "show", name, "-o", "json"], server: server, token: token)
            return try decodeJSON(VMView.self, shown.stdout)
        }

        func guestJSON(_ address: String, _ path: String) async throws -> JSONValue {
            let response = try await HTTPClient.shared.execute(guestRequest("http://\(address)\(path)"), timeout: .seconds(10))
            return try JSONDecoder().decode(JSONValue.self, from: Data(buffer: try await response.body.collect(upTo: 1 << 16)))
        }

        func guestStatus(_ address: String, timeout: TimeAmount = .seconds(5)) async throws -> JSONValue {
            let response = try await HTTPClient.shared.execute(guestRequest("http://\(address)/status"), timeout: timeout)
            return try JSONDecoder().decode(JSONValue.self, from: Data(buffer: try await response.body.collect(upTo: 1 << 16)))
        }

        /// A request to a guest on a connection of its own: testbeds give the next test's guests the
        /// same addresses, and a connection kept in the shared pool to the last one's is answered
        /// with a reset (seen: the migration test right after the host-loss test failed so).
        func guestRequest(_ url: String, method: HTTPMethod = .GET) -> HTTPClientRequest {
            var request = HTTPClientRequest(url: url)
            request.method = method
            request.headers.add(name: "Connection", value: "close")
            return request
        }

        func runTool(_ tool: String, _ arguments: [String]) throws -> String {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/sbin/\(tool)").standardized
            for directory in ["/usr/bin", "/bin"]
            where !FileManager.default.isExecutableFile(atPath: process.executableURL!.path) {
                process.executableURL = URL(fileURLWithPath: "\(directory)/\(tool)")
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

/// `--driver` of `vireo testbed up` is checked before anything is created.
@Suite("Testbed --driver")
struct TestbedDriverOptionTests {
    @Test("HOST=DRIVER pairs parse; hosts not named are left to the default")
    func parsesPairs() throws {
        #expect(try TestbedDriver.parse("h1=qemu,h2=libvirt", hosts: 2) == ["h1": .qemu, "h2": .libvirt])
        #expect(try TestbedDriver.parse("h3=libvirt", hosts: 3) == ["h3": .libvirt])
    }

    @Test(
        "bad --driver values are refused naming the value",
        arguments: [
            ("h3=libvirt", "'h3'"), ("h1=xen", "'xen'"), ("h1", "'h1'"), ("h1=qemu,,h2=qemu", "''"),
            ("h1=qemu=libvirt", "'h1=qemu=libvirt'"), ("web=qemu", "'web'"), ("h01=qemu", "'h01'"),
            ("h0=qemu", "'h0'"), ("h1=qemu,h1=libvirt", "'h1'"), ("=qemu", "'=qemu'"),
        ])
    func refusesBadValues(value: String, named: String) throws {
        let error = #expect(throws: VireoError.self) { try TestbedDriver.parse(value, hosts: 2) }
        #expect(error?.code == .invalidArgument, "\(String(describing: error))")
        #expect(error?.message.contains("--driver") == true, "\(String(describing: error))")
        #expect(error?.message.contains(named) == true, "\(String(describing: error))")
    }

    @Test("vireo testbed up refuses a bad --driver before it creates anything, even without root")
    func cliRefusesFirst() async throws {
        let directory = temporaryDirectory() + "/testbed"
        let result = try await vireo(["testbed", "up", "2", "--dir", directory, "--name", "vtbad", "--driver", "h2=xen"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("'xen'"), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: directory), "nothing was created")
    }
}
