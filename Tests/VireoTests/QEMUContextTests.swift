import AsyncHTTPClient
import Foundation
import Testing
import VireoDriver
import VireoModel
import VireoProcess

@testable import VireoDriverQEMU

/// What desktop contexts need of real QEMU guests: snapshots that bring back everything a guest
/// holds, that survive the agent dying mid-save, private networks that isolate, and a display.
extension RealQEMU {
    @Suite("QEMU snapshots, private networks and displays (real QEMU)")
    struct QEMUContextTests {
        let tick: @Sendable () async -> Void = { try? await Task.sleep(for: .milliseconds(250)) }

        func spec(_ name: String, image: String = "web", memoryMiB: Int = 128, network: String? = nil) -> InstanceSpec {
            InstanceSpec(id: .generate(), name: name, image: image, cpus: 1, memoryMiB: memoryMiB, privateNetwork: network)
        }

        /// A request on a connection of its own (`Connection: close`): after a snapshot load the
        /// guest's TCP state is the saved one, so a pooled connection could be one it forgot.
        func request(_ address: String, _ path: String, post: Bool = false) async throws -> String {
            var request = HTTPClientRequest(url: "http://\(address)\(path)")
            request.method = post ? .POST : .GET
            request.headers.add(name: "Connection", value: "close")
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(15))
            let body = String(buffer: try await response.body.collect(upTo: 1 << 16))
            try #require(response.status == .ok, "\(path): \(response.status) \(body)")
            return body
        }

        func marks(_ address: String) async throws -> [String: String] {
            try JSONDecoder().decode([String: String].self, from: Data(try await request(address, "/mark").utf8))
        }

        func mark(_ address: String, _ value: String) async throws {
            _ = try await request(address, "/mark?value=\(value)", post: true)
        }

        static func ms(_ duration: Duration) -> Int { QEMUDriver.milliseconds(duration) }

        @Test("a loaded snapshot brings back the marks on disk, in memory and in tmpfs, and nothing written after the save")
        func snapshotMarks() async throws {
            let driver = TestQEMU.driver()
            let vm = spec("ctx", memoryMiB: 256)
            try await driver.create(vm)
            do {
                try await driver.start(vm.id)
                let address = try #require(try await settle(driver, vm.id, to: .running, tick: tick).address)
                let clean = ["disk": "clean", "memory": "clean", "tmpfs": "clean"]
                try await mark(address, "clean")
                let save = try await driver.saveSnapshot(vm.id, tag: "clean")
                var loads: [Duration] = []
                for round in 1...3 {
                    try await mark(address, "later-\(round)")
                    #expect(
                        try await marks(address) == [
                            "disk": "later-\(round)", "memory": "later-\(round)", "tmpfs": "later-\(round)",
                        ])
                    loads.append(try await driver.loadSnapshot(vm.id, tag: "clean"))
                    #expect(try await marks(address) == clean, "after load \(round)")
                    #expect(try await driver.status().first?.state == .running)
                }
                // Kept: a new tag, then the old one goes.
                try await mark(address, "kept")
                let keep = try await driver.saveSnapshot(vm.id, tag: "kept")
                let deleteStart = ContinuousClock.now
                try await driver.deleteSnapshot(vm.id, tag: "clean")
                let delete = ContinuousClock.now - deleteStart
                #expect(try await driver.snapshots(vm.id) == ["kept"])
                _ = try await driver.loadSnapshot(vm.id, tag: "kept")
                #expect(try await marks(address) == ["disk": "kept", "memory": "kept", "tmpfs": "kept"])
                print(
                    "snapshots of a 256 MiB web guest (\(TestQEMU.accelerator)): save \(Self.ms(save)) ms, loads "
                        + loads.map { "\(Self.ms($0))" }.joined(separator: ", ")
                        + " ms, save of a second tag \(Self.ms(keep)) ms, delete (call) \(Self.ms(delete)) ms")
                try await driver.delete(vm.id)
            } catch {
                try? await driver.delete(vm.id)
                throw error
            }
        }

        @Test(
            "an agent gone mid-save: QEMU completes it, the next agent dismisses the job, goes on, and re-adopts a restored guest"
        )
        func agentDiesMidSave() async throws {
            let state = temporaryDirectory() + "/vms"
            let first = TestQEMU.driver(stateDirectory: state)
            let vm = spec("survivor", memoryMiB: 256)
            try await first.create(vm)
            var current = first
            do {
                try await first.start(vm.id)
                let address = try #require(try await settle(first, vm.id, to: .running, tick: tick).address)
                try await mark(address, "before")
                // 160 MiB of written memory make the save take a few hundred milliseconds.
                _ = try await request(address, "/dirty?mib=160", post: true)
                _ = try await request(address, "/dirty?mib=0", post: true)
                let disk = await first.paths(vm.id).directory + "/disk.qcow2"
                let sizeBefore = try Self.size(disk)
                let save = Task { try await first.saveSnapshot(vm.id, tag: "interrupted") }
                // The agent goes once QEMU is writing the memory into the disk.
                try await eventually("QEMU writes the snapshot", within: 30) { try Self.size(disk) > sizeBefore + (16 << 20) }
                await first.detach()
                let outcome = await save.result
                #expect(throws: (any Error).self) { try outcome.get() }

                // Left alone, QEMU finished the save; its job waits to be dismissed.
                let look = try await QMPClient.connect(path: await first.paths(vm.id).qmp, timeout: .seconds(60))
                let jobs = try await look.execute(QMP.QueryJobs()).filter(\.isSnapshotJob)
                await look.close()
                #expect(jobs.map(\.status) == [.concluded])
                #expect(jobs.first?.error == nil)

                let second = TestQEMU.driver(stateDirectory: state)
                current = second
                #expect(try await second.recover().map(\.id) == [vm.id])
                _ = try await settle(second, vm.id, to: .running, tick: tick)
                let qmp = try #require(await second.instances[vm.id]?.qmp)
                #expect(try await qmp.execute(QMP.QueryJobs()).isEmpty, "the job was dismissed")
                #expect(try await second.snapshots(vm.id) == ["interrupted"])
                try await mark(address, "after")
                _ = try await second.loadSnapshot(vm.id, tag: "interrupted")
                #expect(try await marks(address)["memory"] == "before")

                // After a host reboot the context comes back from its snapshot; a new agent
                // re-adopts it although its guest printed no ready marker in this run.
                try await second.stop(vm.id)
                _ = try await settle(second, vm.id, to: .stopped, tick: tick)
                try await second.start(vm.id, fromSnapshot: "interrupted")
                let restored = try await settle(second, vm.id, to: .running, tick: tick)
                print("start from a 256 MiB snapshot (\(TestQEMU.accelerator)): \(restored.bootMs ?? -1) ms to running")
                #expect(try await marks(address) == ["disk": "before", "memory": "before", "tmpfs": "before"])
                await second.detach()
                let third = TestQEMU.driver(stateDirectory: state)
                current = third
                _ = try await third.recover()
                _ = try await settle(third, vm.id, to: .running, tick: tick)
                try await third.delete(vm.id)
            } catch {
                try? await current.delete(vm.id)
                throw error
            }
        }

        static func size(_ path: String) throws -> UInt64 {
            (try FileManager.default.attributesOfItem(atPath: path)[.size] as? UInt64) ?? 0
        }

        @Test("a VNC display answers on its loopback port with the RFB greeting while the VM runs")
        func vncDisplay() async throws {
            let driver = TestQEMU.driver()
            var vm = spec("screen", image: "tiny")
            vm.display = .vnc
            try await driver.create(vm)
            do {
                #expect(try await driver.status().first?.display == nil)
                try await driver.start(vm.id)
                let status = try await settle(driver, vm.id, to: .running, tick: tick)
                let display = try #require(status.display)
                let port = try #require(display.split(separator: ":").last.flatMap { UInt16($0) })
                #expect(display == "127.0.0.1:\(port)" && port >= 5900)
                let greeting = try await offPool {
                    let fd = try connectLoopback(port)
                    defer { close(fd) }
                    var buffer = [UInt8](repeating: 0, count: 12)
                    var read = 0
                    while read < 12 {
                        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + read, 12 - read, 0) }
                        if n <= 0 { break }
                        read += n
                    }
                    return String(decoding: buffer.prefix(read), as: UTF8.self)
                }
                #expect(greeting == "RFB 003.008\n")
                try await driver.delete(vm.id)
            } catch {
                try? await driver.delete(vm.id)
                throw error
            }
        }
    }
}
