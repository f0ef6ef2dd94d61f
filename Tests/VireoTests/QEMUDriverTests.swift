import AsyncHTTPClient
import Foundation
import Synchronization
import Testing
import VireoDriver
import VireoImage
import VireoModel
import VireoProcess
import VireoTelemetry

@testable import VireoDriverQEMU

/// What only a real hypervisor can show: a guest that boots, serves, powers off, crashes, and a
/// QEMU that outlives the agent process that started it.
extension RealQEMU {
    @Suite("QEMU driver (real QEMU)")
    struct QEMUDriverTests {
        let tick: @Sendable () async -> Void = { try? await Task.sleep(for: .milliseconds(250)) }

        func spec(_ name: String, image: String = "tiny") -> InstanceSpec {
            InstanceSpec(id: .generate(), name: name, image: image, cpus: 1, memoryMiB: 128)
        }

        /// GETs `path` from the guest's forwarded port.
        func get(_ address: String, _ path: String) async throws -> (status: UInt, body: String) {
            let response = try await HTTPClient.shared.execute(
                HTTPClientRequest(url: "http://\(address)\(path)"), timeout: .seconds(10))
            let body = try await response.body.collect(upTo: 1 << 20)
            return (response.status.code, String(buffer: body))
        }

        @Test("the web image boots to its marker and serves HTTP and metrics on the forwarded port")
        func webGuest() async throws {
            let driver = TestQEMU.driver()
            let vm = spec("web", image: "web")
            try await driver.create(vm)
            try await driver.start(vm.id)
            let status = try await settle(driver, vm.id, to: .running, tick: tick)
            let address = try #require(status.address)
            #expect(address.hasPrefix("127.0.0.1:"))
            #expect(try await driver.consoleLog(vm.id).contains("VIREO-READY name=web"))

            let root = try await get(address, "/")
            #expect(root.status == 200)
            #expect(root.body.contains("\"ok\":true"))
            let metrics = try await get(address, "/metrics")
            #expect(metrics.body.contains("vireo_web_requests_total 1"))
            #expect(metrics.body.contains("vireo_web_request_duration_seconds_bucket{le=\"+Inf\"} 1"))
            // What the guest serves is exposition text the telemetry parser reads.
            let families = try PrometheusText.parse(metrics.body)
            let latency = try #require(families.first { $0.name == "vireo_web_request_duration_seconds" }?.histogram())
            #expect(latency.count == 1)
            #expect((latency.quantile(0.99) ?? 0) > 0)
            #expect(try await get(address, "/nope").status == 404)
            try await driver.delete(vm.id)
        }

        @Test("each image boots with the least memory the catalogue lets a VM ask for")
        func imageMinimumsBoot() async throws {
            // With 64 MiB the tiny guest's kernel panicked ("System is deadlocked on memory")
            // while the API accepted it; tiny boots from 72 MiB and web from 80 MiB here.
            let driver = TestQEMU.driver()
            for image in ImageCatalogue.builtIn {
                let vm = InstanceSpec(
                    id: .generate(), name: "least-\(image.name)", image: image.name, cpus: 1, memoryMiB: image.minimumMemoryMiB)
                try await driver.create(vm)
                try await driver.start(vm.id)
                let status = try await settle(driver, vm.id, to: .running, tick: tick)
                #expect(status.state == .running, "\(image.name) with \(image.minimumMemoryMiB) MiB: \(status.message ?? "")")
                #expect(try await driver.consoleLog(vm.id).contains("VIREO-READY name=least-\(image.name)"))
                try await driver.delete(vm.id)
            }
        }

        @Test("a VM's disk is an overlay on the image's base, and the base is never written")
        func overlay() async throws {
            let driver = TestQEMU.driver()
            let vm = spec("disk")
            try await driver.create(vm)
            let base = try #require(try await TestQEMU.builder.image(named: "tiny")).baseDisk
            let baseBefore = try Data(contentsOf: URL(fileURLWithPath: base))
            let info = try await HostTool.text(
                "qemu-img", ["info", "--output=json", await driver.paths(vm.id).directory + "/disk.qcow2"])
            #expect(info.contains("\"backing-filename\": \"\(base)\""))
            try await driver.start(vm.id)
            _ = try await settle(driver, vm.id, to: .running, tick: tick)
            try await driver.stop(vm.id)
            _ = try await settle(driver, vm.id, to: .stopped, tick: tick)
            #expect(try Data(contentsOf: URL(fileURLWithPath: base)) == baseBefore)
            try await driver.delete(vm.id)
            #expect(!FileManager.default.fileExists(atPath: await driver.paths(vm.id).directory))
        }

        @Test("stop presses the ACPI power button and the guest powers itself off")
        func acpiStop() async throws {
            // Time enough for a busy machine's guest to run its power-button handler before the
            // driver would quit QEMU instead (which this test tells apart by the console).
            let driver = TestQEMU.driver(stopTimeout: .seconds(60))
            let vm = spec("acpi")
            try await driver.create(vm)
            try await driver.start(vm.id)
            _ = try await settle(driver, vm.id, to: .running, tick: tick)
            try await driver.stop(vm.id)
            #expect(try await driver.status().first?.state == .stopping)
            let status = try await settle(driver, vm.id, to: .stopped, tick: tick)
            #expect(status.message == nil)
            // The guest's handler ran: the kernel logs its power-down, which QEMU's quit would not.
            #expect(try await driver.consoleLog(vm.id).contains("reboot: Power down"))
            try await driver.delete(vm.id)
        }

        @Test("a guest whose kernel panics while booting is reported failed with the panic's line, not stopped")
        func panicAtBoot() async throws {
            // The tiny image with no init to run: the kernel panics, resets, and -no-reboot ends QEMU.
            let configuration = QEMUDriver.Configuration(
                stateDirectory: temporaryDirectory() + "/vms", accelerator: TestQEMU.accelerator, cpus: 2, memoryMiB: 4096)
            let driver = QEMUDriver(configuration: configuration) { name in
                var image = try await TestQEMU.images.image(name)
                image.kernelCommandLine += " rdinit=/nonexistent init=/nonexistent"
                return image
            }
            let vm = spec("panics")
            try await driver.create(vm)
            try await driver.start(vm.id)
            let failed = try await settle(driver, vm.id, to: .failed, tick: tick)
            #expect(failed.message?.hasPrefix("the guest went off while booting") == true, "\(failed.message ?? "-")")
            #expect(failed.message?.contains("Kernel panic") == true, "\(failed.message ?? "-")")
            try await driver.delete(vm.id)
        }

        @Test("a QEMU killed from outside is reported failed with the reason; starting again recovers")
        func crash() async throws {
            let driver = TestQEMU.driver()
            let vm = spec("crash")
            try await driver.create(vm)
            try await driver.start(vm.id)
            _ = try await settle(driver, vm.id, to: .running, tick: tick)
            let pid = try QEMUDriver.readPID(await driver.paths(vm.id).pid)
            kill(pid, SIGKILL)
            let failed = try await settle(driver, vm.id, to: .failed, tick: tick)
            #expect(failed.message?.contains("exited unexpectedly") == true)
            try await driver.start(vm.id)
            _ = try await settle(driver, vm.id, to: .running, tick: tick)
            try await driver.delete(vm.id)
        }

        @Test("a new driver on the same state re-adopts the running QEMU instead of starting another, paused if it was")
        func readopt() async throws {
            let state = temporaryDirectory() + "/vms"
            let first = TestQEMU.driver(stateDirectory: state)
            let vm = spec("keep", image: "web")
            try await first.create(vm)
            try await first.start(vm.id)
            let address = try #require(try await settle(first, vm.id, to: .running, tick: tick).address)
            let bootID = try await get(address, "/status").body
            let pid = try QEMUDriver.readPID(await first.paths(vm.id).pid)

            // The agent process restarts: it lets go, and a fresh driver takes over the same directory.
            await first.detach()
            let second = TestQEMU.driver(stateDirectory: state)
            let recovered = try await second.recover()
            #expect(recovered.map(\.id) == [vm.id])
            let status = try await settle(second, vm.id, to: .running, tick: tick)
            #expect(status.address == address)
            #expect(try QEMUDriver.readPID(await second.paths(vm.id).pid) == pid)
            try await second.start(vm.id)  // already running: no second QEMU
            let again = try await get(address, "/status").body
            #expect(again.components(separatedBy: "\"bootId\"").last == bootID.components(separatedBy: "\"bootId\"").last)

            // A guest paused when its agent went (a paused migration's source) is re-adopted as
            // paused, for the agent to resume.
            try await second.pause(vm.id)
            #expect(try await second.status().first { $0.id == vm.id }?.paused == true)
            await second.detach()
            let third = TestQEMU.driver(stateDirectory: state)
            _ = try await third.recover()
            let pausedStatus = try await settle(third, vm.id, to: .running, tick: tick)
            #expect(pausedStatus.paused == true)
            try await third.resume(vm.id)
            #expect(try await third.status().first { $0.id == vm.id }?.paused == nil)
            #expect(try await get(address, "/status").status == 200, "the guest answers again")
            try await third.delete(vm.id)
            #expect(kill(pid, 0) != 0)
        }

        @Test("a QEMU that cannot start fails the VM with QEMU's own message")
        func startFailure() async throws {
            var configuration = QEMUDriver.Configuration(
                stateDirectory: temporaryDirectory() + "/vms", accelerator: TestQEMU.accelerator, cpus: 1, memoryMiB: 1024)
            configuration.binary = "qemu-system-x86_64"
            // A kernel QEMU can read but not boot: QEMU exits while starting, and says why.
            let bogus = temporaryDirectory() + "/vmlinux"
            try Data("not a kernel".utf8).write(to: URL(fileURLWithPath: bogus))
            let driver = QEMUDriver(configuration: configuration) { name in
                var image = try await TestQEMU.images.image(name)
                image.kernel = bogus
                return image
            }
            let vm = spec("broken")
            try await driver.create(vm)
            await #expect(throws: VireoError.self) { try await driver.start(vm.id) }
            let status = try #require(try await driver.status().first)
            #expect(status.state == .failed)
            #expect(status.message?.contains("QEMU exited while starting") == true)
            #expect(status.message?.contains("linux kernel too old to load a ram disk") == true)
            // A kernel QEMU's uid cannot even reach is refused before QEMU runs, naming the file.
            let hidden = QEMUDriver(configuration: configuration) { name in
                var image = try await TestQEMU.images.image(name)
                image.kernel = "/nonexistent/vmlinux"
                return image
            }
            let other = spec("unreachable")
            try await hidden.create(other)
            await #expect(throws: VireoError.self) { try await hidden.start(other.id) }
            #expect(try await hidden.status().first?.message?.contains("/nonexistent/vmlinux") == true)
            try await hidden.delete(other.id)
            try await driver.delete(vm.id)
        }

        @Test("bad qemu settings are rejected naming the setting and the value")
        func badSettings() throws {
            var registry = DriverRegistry()
            registry.registerQEMU()
            for (key, value) in [
                ("accel", "hvf"), ("network", "wifi"), ("cpus", "many"), ("colour", "blue"), ("migration-mode", "postcopy"),
            ] {
                let error = #expect(throws: VireoError.self) {
                    _ = try registry.make("qemu", options: .init(stateDirectory: "/tmp/x", settings: [key: value]))
                }
                #expect(error?.message.contains(key) == true || error?.message.contains(value) == true)
            }
        }
    }
}

extension RealQEMU {
    @Suite("QEMU live migration (real QEMU)")
    struct QEMUMigrationTests {
        let tick: @Sendable () async -> Void = { try? await Task.sleep(for: .milliseconds(250)) }

        /// Two "hosts" on this machine: two drivers with their own state, sharing the disk directory.
        func pair(bandwidth: UInt64? = nil) -> (QEMUDriver, QEMUDriver, shared: String) {
            let shared = temporaryDirectory() + "/disks"
            func make() -> QEMUDriver {
                var configuration = QEMUDriver.Configuration(
                    stateDirectory: temporaryDirectory() + "/vms", accelerator: TestQEMU.accelerator, cpus: 2,
                    memoryMiB: 4096)
                configuration.sharedDisks = shared
                if let bandwidth { configuration.migrationBandwidth = bandwidth }
                return QEMUDriver(configuration: configuration) { name in try await TestQEMU.images.image(name) }
            }
            return (make(), make(), shared)
        }

        func status(_ address: String) async throws -> JSONValue {
            try await guest(address, "/status")
        }

        /// Two "hosts" that share nothing: each keeps its VMs' disks in its own state directory.
        func localPair() -> (QEMUDriver, QEMUDriver) {
            func make() -> QEMUDriver {
                let configuration = QEMUDriver.Configuration(
                    stateDirectory: temporaryDirectory() + "/vms", accelerator: TestQEMU.accelerator, cpus: 2,
                    memoryMiB: 4096)
                return QEMUDriver(configuration: configuration) { name in try await TestQEMU.images.image(name) }
            }
            return (make(), make())
        }

        @Test("without shared storage the disk is copied while the guest writes to it, and every write arrives")
        func copyStorageUnderWrites() async throws {
            let (source, destination) = localPair()
            #expect(source.capabilities.contains(.storageMigration))
            let vm = InstanceSpec(id: .generate(), name: "copier", image: "web", cpus: 1, memoryMiB: 192, diskMiB: 256)
            try await source.create(vm)
            do {
                try await source.start(vm.id)
                let address = try #require(try await settle(source, vm.id, to: .running, tick: tick).address)
                let before = try await status(address)
                let sourceDisk = try #require(await source.instances[vm.id]?.record.disk)
                let uri = try await destination.prepareIncoming(
                    vm, guestAddress: nil, listenAddress: "127.0.0.1", storage: .copy)
                #expect(uri.hasPrefix("tcp:127.0.0.1:") && uri.contains(";disk=nbd:127.0.0.1:"))
                // 32 MiB written past the guest's filesystem over two seconds, each MiB synced to the
                // disk: before, during and after the switch-over.
                _ = try await guest(address, "/fill?mib=32&rate=16", post: true)
                let seen = ProgressLog()
                let stats = try await source.migrate(vm.id, to: uri) { seen.append($0) }
                print(
                    "copy-storage migration (\(TestQEMU.accelerator)): total \(stats.totalTimeMs) ms, downtime \(stats.downtimeMs) ms, "
                        + "disk \(stats.storageBytes ?? 0) bytes in \(stats.storageTimeMs ?? 0) ms, memory \(stats.transferredBytes) bytes"
                )
                // At least the image's 64 MiB filesystem went across, and progress showed the disk.
                #expect((stats.storageBytes ?? 0) >= 64 << 20)
                #expect(seen.all.contains { ($0.storageTotalBytes ?? 0) > 0 })
                try await destination.finishIncoming(vm.id)
                let arrived = try #require(try await settle(destination, vm.id, to: .running, tick: tick).address)
                try await source.release(vm.id)
                #expect(try await source.status().isEmpty)
                #expect(!FileManager.default.fileExists(atPath: sourceDisk), "the source's copy of the disk is removed")

                #expect(try await status(arrived)["bootId"] == before["bootId"])
                try await expectDiskWrites(at: arrived, mib: 32)
                try await destination.delete(vm.id)
            } catch {
                try? await source.delete(vm.id)
                try? await destination.delete(vm.id)
                throw error
            }
        }

        @Test("an idle guest's copied disk is identical to the source's, byte for byte")
        func copyStorageIdentical() async throws {
            let (source, destination) = localPair()
            let vm = InstanceSpec(id: .generate(), name: "twin", image: "web", cpus: 1, memoryMiB: 128)
            try await source.create(vm)
            do {
                try await source.start(vm.id)
                let address = try #require(try await settle(source, vm.id, to: .running, tick: tick).address)
                _ = try await guest(address, "/mark?value=copied", post: true)
                let uri = try await destination.prepareIncoming(
                    vm, guestAddress: nil, listenAddress: "127.0.0.1", storage: .copy)
                _ = try await source.migrate(vm.id, to: uri) { _ in }
                // Both guests stopped: the source's for good, the destination's before it writes.
                try await destination.pause(vm.id)
                let disks = (
                    try #require(await source.instances[vm.id]?.record.disk),
                    try #require(await destination.instances[vm.id]?.record.disk)
                )
                let compare = try await HostTool.text("qemu-img", ["compare", "-U", disks.0, disks.1])
                #expect(compare.contains("Images are identical"), "\(compare)")
                try await destination.resume(vm.id)
                let arrived = try await takeOver(vm.id, from: source, to: destination, tick: tick)
                #expect(try await guest(arrived, "/mark")["disk"] == .string("copied"))
                try await destination.delete(vm.id)
            } catch {
                try? await source.delete(vm.id)
                try? await destination.delete(vm.id)
                throw error
            }
        }

        @Test("a copy to a host without room, or to one that does not share storage, is refused before anything is made")
        func copyStorageRefused() async throws {
            let (_, destination) = localPair()
            let huge = InstanceSpec(
                id: .generate(), name: "huge", image: "web", cpus: 1, memoryMiB: 128, diskMiB: 1 << 30)
            let error = await #expect(throws: VireoError.self) {
                _ = try await destination.prepareIncoming(huge, guestAddress: nil, listenAddress: "127.0.0.1", storage: .copy)
            }
            #expect(error?.message.contains("no room for the VM's disk") == true, "\(String(describing: error))")
            let shared = await #expect(throws: VireoError.self) {
                _ = try await destination.prepareIncoming(huge, guestAddress: nil, listenAddress: "127.0.0.1", storage: .shared)
            }
            #expect(shared?.message.contains("shared storage") == true)
            #expect(try await destination.status().isEmpty)
            #expect(
                (try? FileManager.default.contentsOfDirectory(atPath: destination.configuration.stateDirectory))?.isEmpty
                    ?? true)
        }

        @Test(
            "a running guest moves to the other host and keeps running: same boot, uptime goes on; a restarted destination re-adopts it running"
        )
        func migrate() async throws {
            let (source, destination, shared) = pair()
            let vm = InstanceSpec(id: .generate(), name: "mover", image: "web", cpus: 1, memoryMiB: 128)
            #expect(source.capabilities.contains(.liveMigration))
            try await source.create(vm)
            try await source.start(vm.id)
            let before = try await status(try #require(try await settle(source, vm.id, to: .running, tick: tick).address))

            let uri = try await destination.prepareIncoming(vm, guestAddress: nil, listenAddress: "127.0.0.1")
            #expect(uri.hasPrefix("tcp:127.0.0.1:"))
            #expect(try await destination.prepareIncoming(vm, guestAddress: nil, listenAddress: "127.0.0.1") == uri)
            let seen = ProgressLog()
            let stats = try await source.migrate(vm.id, to: uri) { seen.append($0) }
            print(
                "migration of 128 MiB (\(TestQEMU.accelerator)): total \(stats.totalTimeMs) ms, downtime \(stats.downtimeMs) ms, \(stats.transferredBytes) bytes"
            )
            #expect(stats.totalTimeMs > 0)
            #expect(stats.transferredBytes > 1 << 20)
            try await source.release(vm.id)
            try await destination.finishIncoming(vm.id)
            #expect(try await source.status().isEmpty)

            let after = try await status(try #require(try await settle(destination, vm.id, to: .running, tick: tick).address))
            #expect(after["bootId"] == before["bootId"])
            #expect((after["uptimeSeconds"]?.doubleValue ?? 0) > (before["uptimeSeconds"]?.doubleValue ?? .infinity))
            #expect(FileManager.default.fileExists(atPath: "\(shared)/\(vm.id).qcow2"))

            // The destination's agent restarts: a new driver re-adopts the guest that arrived and
            // finds it ready from QEMU's run state, as it printed its ready marker on the source
            // (it waited for a marker that never came, found by `vireo chaos --driver qemu`).
            await destination.detach()
            let restarted = QEMUDriver(configuration: destination.configuration) { name in try await TestQEMU.images.image(name) }
            #expect(try await restarted.recover().map(\.id) == [vm.id])
            let readopted = try await settle(restarted, vm.id, to: .running, tick: tick)
            #expect(try await status(try #require(readopted.address))["bootId"] == before["bootId"])
            try await restarted.delete(vm.id)
            #expect(!FileManager.default.fileExists(atPath: "\(shared)/\(vm.id).qcow2"))
        }

        @Test("a guest writing 48 MiB as fast as it can moves there and back with every write intact")
        func dirtyingGuest() async throws {
            let (a, b, _) = pair()
            let mode = QEMUDriver.MigrationMode.auto.resolved(for: TestQEMU.accelerator, memoryTrimmed: true)
            let vm = InstanceSpec(id: .generate(), name: "writer", image: "web", cpus: 1, memoryMiB: 128)
            try await a.create(vm)
            do {
                try await a.start(vm.id)
                var address = try #require(try await settle(a, vm.id, to: .running, tick: tick).address)
                // Under TCG the guest's RAM is 8 KiB short of its 128 MiB, so QEMU 7.2 syncs its
                // dirty pages one by one and live pre-copy loses no write (`memoryTrimKiB(on:)`).
                let ram = try await a.running(vm.id).execute(QueryMemorySizeSummary()).baseMemory
                #expect(ram == UInt64(128 * 1024 - (QEMUInvocation.memoryTrimKiB(on: TestQEMU.accelerator) ?? 0)) * 1024)
                #expect(mode == .live)
                var startLoad = HTTPClientRequest(url: "http://\(address)/dirty?mib=48")
                startLoad.method = .POST
                #expect(try await HTTPClient.shared.execute(startLoad, timeout: .seconds(30)).status == .ok)
                let before = try await status(address)
                for (source, destination) in [(a, b), (b, a)] {
                    let uri = try await destination.prepareIncoming(vm, guestAddress: nil, listenAddress: "127.0.0.1")
                    let stats = try await source.migrate(vm.id, to: uri) { _ in }
                    print(
                        "\(mode) migration of 128 MiB dirtying 48 MiB (\(TestQEMU.accelerator)): total \(stats.totalTimeMs) ms, "
                            + "downtime \(stats.downtimeMs) ms, \(stats.transferredBytes) bytes")
                    #expect(stats.mode == mode)
                    // Paused for the whole copy: the downtime is at least the copy.
                    if mode == .paused { #expect(stats.downtimeMs >= stats.totalTimeMs) }
                    try await destination.finishIncoming(vm.id)
                    address = try #require(try await settle(destination, vm.id, to: .running, tick: tick).address)
                    // The guest ran nowhere from its pause on the source (QEMU's, for a live move)
                    // to its resumption here.
                    let paused = try #require(await source.migrationInstants(vm.id).paused)
                    let resumed = try #require(await destination.migrationInstants(vm.id).resumed)
                    #expect(paused < resumed)
                    try await source.release(vm.id)
                    // Once the load has rewritten all 12,288 pages here, every page has been checked.
                    let arrived = try await status(address)
                    try await eventually("the load rewrites 48 MiB on the destination", within: 120) {
                        (try await status(address)["dirtiedPages"]?.doubleValue ?? 0)
                            >= (arrived["dirtiedPages"]?.doubleValue ?? .infinity) + 12_288
                    }
                    let after = try await status(address)
                    #expect(after["bootId"] == before["bootId"])
                    #expect(after["dirtyMiB"] == .number(48))
                    #expect(after["lostWrites"] == .number(0), "pages that lost the guest's last write")
                }
                try await a.delete(vm.id)
            } catch {
                try? await a.delete(vm.id)
                try? await b.delete(vm.id)
                throw error
            }
        }

        @Test("the destination dies mid-migration: the guest keeps running on the source, nothing is left behind")
        func destinationDies() async throws {
            // 16 MiB/s: the guest's non-zero memory takes seconds to send, so "mid-migration" is certain.
            let (source, destination, shared) = pair(bandwidth: 16 << 20)
            let vm = InstanceSpec(id: .generate(), name: "stayer", image: "web", cpus: 1, memoryMiB: 512)
            try await source.create(vm)
            try await source.start(vm.id)
            let address = try #require(try await settle(source, vm.id, to: .running, tick: tick).address)
            let before = try await status(address)

            let uri = try await destination.prepareIncoming(vm, guestAddress: nil, listenAddress: "127.0.0.1")
            let incomingPID = try QEMUDriver.readPID(await destination.paths(vm.id).pid)
            let killedAt = ProgressLog()
            let error = await #expect(throws: VireoError.self) {
                _ = try await source.migrate(vm.id, to: uri) { progress in
                    // Kill the destination once memory is flowing.
                    if progress.transferredBytes > 1 << 20, killedAt.all.isEmpty {
                        killedAt.append(progress)
                        kill(incomingPID, SIGKILL)
                    }
                }
            }
            #expect(killedAt.all.count == 1)
            #expect(error?.message.contains("keeps running here") == true)

            #expect(try await source.status().first?.state == .running)
            #expect(try await status(address)["bootId"] == before["bootId"])
            _ = try await settle(destination, vm.id, to: .failed, tick: tick)
            try await destination.abortIncoming(vm.id)
            #expect(try await destination.status().isEmpty)
            #expect(FileManager.default.fileExists(atPath: "\(shared)/\(vm.id).qcow2"))
            try await source.delete(vm.id)
        }

        /// Seen in `vireo chaos --driver qemu` (a controller killed just after ordering a move): the
        /// restarted controller failed the move, the destination discarded its incoming VM while
        /// that VM's QEMU was still starting, and the QEMU was forgotten but left running, paused,
        /// for good — a second QEMU on the VM's disk.
        @Test("an incoming VM discarded while its QEMU is still starting leaves no QEMU behind")
        func discardedWhileStarting() async throws {
            let (source, destination, _) = pair()
            let vm = InstanceSpec(id: .generate(), name: "early", image: "tiny", cpus: 1, memoryMiB: 128)
            try await source.create(vm)
            let preparing = Task {
                try await destination.prepareIncoming(vm, guestAddress: nil, listenAddress: "127.0.0.1")
            }
            // The window: QEMU has been started and does not answer QMP yet.
            var qemu: Int32?
            let deadline = ContinuousClock.now + .seconds(30)
            while qemu == nil, ContinuousClock.now < deadline {
                let pidFile = await destination.paths(vm.id).pid
                if await destination.instances[vm.id]?.qmp == nil, let pid = try? QEMUDriver.readPID(pidFile),
                    QEMUDriver.isQEMU(pid, running: vm.id)
                {
                    qemu = pid
                } else {
                    try await Task.sleep(for: .milliseconds(1))
                }
            }
            let pid = try #require(qemu, "QEMU was never seen starting")
            try await destination.abortIncoming(vm.id)
            // The preparation fails, or (when QMP answered just before the discard) ends with a URI
            // of a VM that is gone: either way nothing of it is left.
            _ = try? await preparing.value
            #expect(await QEMUDriver.waitForExit(pid, timeout: .seconds(5)), "QEMU \(pid) still runs")
            #expect(try await destination.status().isEmpty)
            // The disk is the source's: it stays.
            #expect(try await source.status().map(\.id) == [vm.id])
            try await source.delete(vm.id)
            // With their last VM, the drivers' runtime directories (under /tmp) go too.
            for driver in [source, destination] {
                #expect(!FileManager.default.fileExists(atPath: await driver.runtimeDirectory))
            }
        }

        /// Also from `vireo chaos --driver qemu`: the destination's agent killed just after it
        /// prepared; its successor re-adopted the waiting QEMU, which then sat paused for good.
        @Test(
            "a destination's agent that restarts discards the arrival its predecessor left waiting, and keeps a VM that arrived")
        func restartedDestination() async throws {
            let shared = temporaryDirectory() + "/disks"
            func driver(_ state: String) -> QEMUDriver {
                var configuration = QEMUDriver.Configuration(
                    stateDirectory: state, accelerator: TestQEMU.accelerator, cpus: 2, memoryMiB: 4096)
                configuration.sharedDisks = shared
                return QEMUDriver(configuration: configuration) { name in try await TestQEMU.images.image(name) }
            }
            let source = driver(temporaryDirectory() + "/vms")
            let destinationState = temporaryDirectory() + "/vms"
            let destination = driver(destinationState)
            let vm = InstanceSpec(id: .generate(), name: "waiting", image: "tiny", cpus: 1, memoryMiB: 128)
            try await source.create(vm)
            try await source.start(vm.id)
            _ = try await settle(source, vm.id, to: .running, tick: tick)
            _ = try await destination.prepareIncoming(vm, guestAddress: nil, listenAddress: "127.0.0.1")
            let waiting = try QEMUDriver.readPID(await destination.paths(vm.id).pid)

            // The destination's agent restarts before anything was sent.
            await destination.detach()
            let successor = driver(destinationState)
            #expect(try await successor.recover().isEmpty)
            #expect(await QEMUDriver.waitForExit(waiting, timeout: .seconds(5)), "the waiting QEMU \(waiting) is gone")
            #expect(!FileManager.default.fileExists(atPath: await successor.paths(vm.id).directory))
            #expect(FileManager.default.fileExists(atPath: "\(shared)/\(vm.id).qcow2"), "the source's disk stays")
            #expect(try await source.status().first?.state == .running)

            // A VM that did arrive is the destination's, restart or not.
            let uri = try await successor.prepareIncoming(vm, guestAddress: nil, listenAddress: "127.0.0.1")
            _ = try await source.migrate(vm.id, to: uri) { _ in }
            try await source.release(vm.id)
            _ = try await settle(successor, vm.id, to: .running, tick: tick)
            try await successor.finishIncoming(vm.id)
            await successor.detach()
            let third = driver(destinationState)
            #expect(try await third.recover().map(\.id) == [vm.id])
            _ = try await settle(third, vm.id, to: .running, tick: tick)
            try await third.delete(vm.id)
        }
    }
}

final class ProgressLog: Sendable {
    private let entries = Mutex<[MigrationProgress]>([])
    func append(_ progress: MigrationProgress) { entries.withLock { $0.append(progress) } }
    var all: [MigrationProgress] { entries.withLock { $0 } }
}

/// QEMU's idea of the guest's RAM (`base-memory`, bytes).
struct QueryMemorySizeSummary: QMPCommand {
    static let name = "query-memory-size-summary"
    struct Response: Decodable, Sendable {
        var baseMemory: UInt64
        enum CodingKeys: String, CodingKey { case baseMemory = "base-memory" }
    }
}
