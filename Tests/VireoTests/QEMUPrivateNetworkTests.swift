import Foundation
import Testing
import VireoDriver
import VireoModel
import VireoProcess

@testable import VireoDriverQEMU

/// Private networks on real guests: who reaches whom, what is left in the namespaces, and how a
/// private VM comes back after a crash and after a host reboot.
extension RealQEMU {
    @Suite("QEMU private networks (root, real QEMU)")
    struct QEMUPrivateNetworkTests {
        let tick: @Sendable () async -> Void = { try? await Task.sleep(for: .milliseconds(250)) }

        /// The server network of these tests: a bridge in the host's namespace with the host on .1.
        static let serverPool = "198.18.253.0/24"
        static let hostAddress = "198.18.253.1"

        /// Runs `curl` for `url` inside a private network's namespace (or the host's, without one)
        /// and returns what it printed; curl's own failure (the address cannot be reached) is nil.
        static func curl(_ url: String, in namespace: String? = nil) async throws -> String? {
            var arguments = ["-s", "-m", "15", url]
            var tool = "curl"
            if let namespace {
                arguments = ["--net=\(namespace)", "curl"] + arguments
                tool = "nsenter"
            }
            do {
                return try await HostTool.text(tool, arguments)
            } catch let error as VireoError where error.code == .internal {
                return nil
            }
        }

        /// Whether the web guest at `from` (seen from `namespace`) can open a TCP connection to `to`.
        static func connects(from: String, in namespace: String?, to: String) async throws -> Bool {
            let answer = try #require(
                try await curl("http://\(from)/connect?to=\(to)&timeoutMs=2000", in: namespace),
                "the guest at \(from) answers")
            #expect(answer.hasPrefix("{\"connected\":"), "\(answer)")
            return answer.hasPrefix("{\"connected\":true")
        }

        @Test(
            "guests on one private network reach each other and nothing else; a private VM comes back after a crash and a reboot; namespaces go with the VMs",
            .enabled(if: getuid() == 0, "needs root: private networks are network namespaces, bridges and taps"))
        func isolation() async throws {
            let bridge = "vrs" + UUID().uuidString.lowercased().prefix(6)
            try await HostTool.run("ip", ["link", "add", bridge, "type", "bridge"])
            var configuration = QEMUDriver.Configuration(
                stateDirectory: temporaryDirectory() + "/vms", accelerator: TestQEMU.accelerator, cpus: 2, memoryMiB: 4096)
            configuration.network = .tap(
                TapNetwork(bridge: bridge, pool: try IPv4Network(Self.serverPool, field: "pool"), guestPrefix: 24))
            let driver = QEMUDriver(configuration: configuration) { name in try await TestQEMU.images.image(name) }
            #expect(driver.capabilities.isSuperset(of: [.privateNetworks, .display]))
            let specs = [("a1", "a"), ("a2", "a"), ("b1", "b"), ("server", nil)].map { name, network in
                InstanceSpec(id: .generate(), name: name, image: "web", cpus: 1, memoryMiB: 128, privateNetwork: network)
            }
            let namespaceA = driver.privateNetworkNamespace("a")
            let namespaceB = driver.privateNetworkNamespace("b")
            let nameA = PrivateNetwork.namespace(stateDirectory: configuration.stateDirectory, network: "a")
            let nameB = PrivateNetwork.namespace(stateDirectory: configuration.stateDirectory, network: "b")
            // Something on the host to reach: a listening socket on all its addresses.
            let listener = try Self.listen()
            defer { close(listener.fd) }
            do {
                try await HostTool.run("ip", ["addr", "add", "\(Self.hostAddress)/24", "dev", bridge])
                try await HostTool.run("ip", ["link", "set", bridge, "up"])
                for spec in specs {
                    try await driver.create(spec)
                    try await driver.start(spec.id)
                }
                var address: [String: String] = [:]
                for spec in specs {
                    let status = try await settle(driver, spec.id, to: .running, tick: tick)
                    let guest: String = try #require(status.address)
                    address[spec.name] = guest
                }
                let (a1, a2, b1, server) = (address["a1"]!, address["a2"]!, address["b1"]!, address["server"]!)
                #expect(a1 == "198.19.1.10" && a2 == "198.19.1.11" && b1 == "198.19.2.10", "\(address)")
                #expect(server == "198.18.253.10")
                let host = "\(Self.hostAddress):\(listener.port)"

                // On network a, each guest reaches the other.
                #expect(try await Self.connects(from: a1, in: namespaceA, to: "\(a2):80"))
                #expect(try await Self.connects(from: a2, in: namespaceA, to: "\(a1):80"))
                // Not across networks, not to the server network, not to the host.
                #expect(try await Self.connects(from: b1, in: namespaceB, to: "\(a1):80") == false)
                #expect(try await Self.connects(from: a1, in: namespaceA, to: "\(server):80") == false)
                #expect(try await Self.connects(from: a1, in: namespaceA, to: host) == false)
                // The controls: on the driver's own network the host reaches the server; the server
                // does not reach the host, which the guest firewall keeps it off (docs/security.md).
                let serverStatus = try await Self.curl("http://\(server)/status") ?? ""
                #expect(serverStatus.contains("\"name\":\"server\""), "the host reaches the server: \(serverStatus)")
                #expect(try await Self.connects(from: server, in: nil, to: host) == false)
                // (The host's default route may lead to a proxy that answers for any address: what
                // matters is that the guest's own answer never comes.)
                let fromHost = try await Self.curl("http://\(a1)/status") ?? ""
                #expect(!fromHost.contains("\"name\":\"a1\""), "the host reaches no private guest: \(fromHost)")
                // The isolation is structural: a private namespace holds its bridge and the VMs' taps, no other link.
                let links = try await HostTool.text("ip", ["-n", nameA, "-o", "link"])
                let names = links.split(separator: "\n").map { $0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces) }
                let taps = specs.prefix(2).map { TapNetwork.device(for: $0.id) }
                #expect(Set(names.map { String($0.split(separator: "@")[0]) }) == Set(["lo", "br0"] + taps), "\(names)")

                // b1's QEMU is killed and leaves its tap in the namespace; the next start clears it.
                let b1ID = specs[2].id
                let tap = TapNetwork.device(for: b1ID)
                kill(try QEMUDriver.readPID(await driver.paths(b1ID).pid), SIGKILL)
                _ = try await settle(driver, b1ID, to: .failed, tick: tick)
                await driver.instances[b1ID]?.tapRemoval?.value
                try await HostTool.run("ip", ["tuntap", "add", "dev", tap, "mode", "tap"])
                try await HostTool.run("ip", ["link", "set", tap, "netns", nameB])
                try await driver.start(b1ID)
                _ = try await settle(driver, b1ID, to: .running, tick: tick)
                #expect(try await Self.curl("http://\(b1)/status", in: namespaceB)?.contains("\"name\":\"b1\"") == true)

                // After a host reboot the namespace is gone; the VM's start makes it again.
                kill(try QEMUDriver.readPID(await driver.paths(b1ID).pid), SIGKILL)
                _ = try await settle(driver, b1ID, to: .failed, tick: tick)
                try await HostTool.run("ip", ["netns", "del", nameB])
                try await driver.start(b1ID)
                #expect(try await settle(driver, b1ID, to: .running, tick: tick).address == b1, "b1 keeps its address")
                #expect(try await Self.curl("http://\(b1)/status", in: namespaceB)?.contains("\"name\":\"b1\"") == true)

                for spec in specs { try await driver.delete(spec.id) }
                #expect(!FileManager.default.fileExists(atPath: namespaceA))
                #expect(!FileManager.default.fileExists(atPath: namespaceB))
                let leftover = try await HostTool.text("ip", ["-o", "link"])
                #expect(!specs.contains { leftover.contains(TapNetwork.device(for: $0.id)) }, "no tap is left")
                try await HostTool.run("ip", ["link", "del", bridge])
                // The driver's tap network put the guest firewall into this namespace: it goes too.
                await GuestFirewall.remove()
            } catch {
                for spec in specs { try? await driver.delete(spec.id) }
                _ = try? await HostTool.run("ip", ["link", "del", bridge], acceptedStatus: [0, 1, 2])
                await GuestFirewall.remove()
                throw error
            }
        }

        /// A TCP socket listening on every address of the host, on a port the kernel picks.
        static func listen() throws -> (fd: Int32, port: Int) {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = INADDR_ANY
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let ok = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, length) == 0 && Glibc.listen(fd, 16) == 0 && getsockname(fd, $0, &length) == 0
                }
            }
            guard ok else {
                close(fd)
                throw VireoError(.internal, "cannot listen: errno \(errno)")
            }
            return (fd, Int(UInt16(bigEndian: address.sin_port)))
        }
    }
}
