import AsyncHTTPClient
import Foundation
import Testing
import VireoAPI
import VireoAgent
import VireoController
import VireoDriver
import VireoDriverLibvirt
import VireoDriverQEMU
import VireoModel
import VireoSecurity
import VireoStore

/// Clusters in this process on real hypervisors: a controller and in-process agents on the QEMU
/// driver and on libvirt's qemu:///system; VMs moved cold between families and live between QEMU
/// hosts that share no storage.
extension RealQEMU {
    @Suite("Moves through the controller on real hypervisors: cold across families, live without shared storage")
    struct RealMoveTests {
        func mark(_ address: String, set value: String? = nil) async throws -> JSONValue {
            var request = HTTPClientRequest(url: "http://\(address)/mark" + (value.map { "?value=\($0)" } ?? ""))
            if value != nil { request.method = .POST }
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
            return try JSONDecoder().decode(JSONValue.self, from: Data(buffer: try await response.body.collect(upTo: 1 << 16)))
        }

        /// A controller and one in-process agent per driver; `body` runs with them, then all stops.
        func withCluster(
            _ drivers: [(String, any HypervisorDriver)], _ body: (Controller) async throws -> Void
        ) async throws {
            // Real hypervisors: libvirt's calls take seconds at times (a destroy, a start).
            // Live moves over TLS, as `vireo server` makes them by default.
            let settings = ControllerSettings(
                heartbeatInterval: .milliseconds(100), hostTimeout: .seconds(15), tickInterval: .milliseconds(50),
                migrationStartTimeout: .seconds(30), migrationAuthority: MigrationAuthority())
            let controller = try await Controller.open(store: try SQLiteStore(), settings: settings)
            let loops = controllerLoops(controller)
            let agents = drivers.map { name, driver in
                let agent = Agent(
                    settings: .init(name: name, heartbeatInterval: .milliseconds(100)), driver: driver, link: controller)
                return Task { try await agent.run() }
            }
            defer {
                loops.cancel()
                for agent in agents { agent.cancel() }
            }
            try await eventually("every agent registered", within: 60) {
                await controller.listHosts().items.filter { $0.state == .ready }.count == drivers.count
            }
            do {
                try await body(controller)
            } catch {
                _ = try? await controller.deleteVM("mover")
                for (_, driver) in drivers {
                    for status in (try? await driver.status()) ?? [] { try? await driver.delete(status.id) }
                }
                throw error
            }
        }

        func waitMoved(_ controller: Controller, _ migration: MigrationView) async throws -> MigrationView {
            try await eventually("migration \(migration.id) ends", within: 180) {
                !(try await controller.migration(migration.id.rawValue).state.isActive)
            }
            return try await controller.migration(migration.id.rawValue)
        }

        @Test("a VM moves cold from QEMU to libvirt and back, its disk with it; a live move between them is refused")
        func coldBetweenFamilies() async throws {
            try await LibvirtQEMUTests.ensureDaemons()
            let drivers: [(String, any HypervisorDriver)] = [
                ("qh", TestQEMU.driver(stopTimeout: .seconds(10))), ("lh", TestLibvirt.driver(uri: "qemu:///system")),
            ]
            try await withCluster(drivers) { controller in
                func waitMoved(_ migration: MigrationView) async throws -> MigrationView {
                    try await self.waitMoved(controller, migration)
                }
                _ = try await controller.createVM(VMSpec(name: "mover", image: "web", cpus: 1, memoryMiB: 128, host: "qh"))
                try await eventually("mover runs on qh", within: 120) { try await controller.vm("mover").state == .running }
                let address = try #require(try await controller.vm("mover").address)
                _ = try await mark(address, set: "before-the-move")

                // Live is refused across families, and says to move it cold.
                let live = await #expect(throws: VireoError.self) { try await controller.migrateVM("mover", to: "lh") }
                #expect(live?.message.contains("cannot take VM 'mover' live") == true, "\(String(describing: live))")

                for (from, to) in [("qh", "lh"), ("lh", "qh")] {
                    let moved = try await waitMoved(try await controller.migrateVMCold("mover", to: to))
                    print("cold move \(from) → \(to): \(moved.state) \(moved.message ?? "")")
                    try #require(moved.state == .completed, "\(moved.message ?? "")")
                    #expect(moved.kind == .cold)
                    print(
                        "cold move \(from) → \(to): down \(moved.stats?.downtimeMs ?? -1) ms, disk copy \(moved.stats?.storageTimeMs ?? -1) ms"
                    )
                    try await eventually("mover runs on \(to)", within: 120) {
                        let vm = try await controller.vm("mover")
                        return vm.state == .running && vm.host == to && vm.address != nil
                    }
                    // The disk came along (the guest rebooted: memory and tmpfs are new).
                    let marks = try await mark(try #require(try await controller.vm("mover").address))
                    #expect(marks["disk"] == .string("before-the-move"))
                    #expect(marks["memory"] == .string(""))
                    // The source let go of it.
                    let source = try #require(drivers.first { $0.0 == from }?.1)
                    try await eventually("\(from) removed its copy", within: 60) {
                        try await source.status().allSatisfy { $0.name != "mover" }
                    }
                    try await eventually("the move is settled on both sides", within: 30) {
                        try await controller.listMigrations(vm: "mover", limit: 10).items.allSatisfy { !$0.state.isActive }
                    }
                }
                _ = try await controller.deleteVM("mover")
                try await eventually("mover deleted", within: 60) { controller.listVMs().items.isEmpty }
            }
        }

        @Test("a cold move between hosts that share storage hands the disk over as it is, copying nothing")
        func coldShared() async throws {
            let shared = temporaryDirectory() + "/disks"
            func sharing() -> QEMUDriver {
                var configuration = QEMUDriver.Configuration(
                    stateDirectory: temporaryDirectory() + "/vms", accelerator: TestQEMU.accelerator, cpus: 2,
                    memoryMiB: 4096)
                configuration.sharedDisks = shared
                return QEMUDriver(configuration: configuration) { name in try await TestQEMU.images.image(name) }
            }
            try await withCluster([("s1", sharing()), ("s2", sharing())]) { controller in
                _ = try await controller.createVM(VMSpec(name: "mover", image: "web", cpus: 1, memoryMiB: 128, host: "s1"))
                try await eventually("mover runs on s1", within: 120) { try await controller.vm("mover").state == .running }
                let id = try await controller.vm("mover").id
                _ = try await mark(try #require(try await controller.vm("mover").address), set: "shared-disk")
                let moved = try await waitMoved(controller, try await controller.migrateVMCold("mover", to: "s2"))
                try #require(moved.state == .completed, "\(moved.message ?? "")")
                #expect(moved.storage == .shared && moved.kind == .cold)
                try await eventually("mover runs on s2", within: 120) {
                    let vm = try await controller.vm("mover")
                    return vm.host == "s2" && vm.state == .running && vm.address != nil
                }
                #expect(try await mark(try #require(try await controller.vm("mover").address))["disk"] == .string("shared-disk"))
                try await eventually("the move is settled on both sides", within: 30) {
                    try await controller.listMigrations(vm: "mover", limit: 10).items.allSatisfy { !$0.state.isActive }
                }
                // The source let go of the VM and left the disk, which the destination runs on.
                #expect(FileManager.default.fileExists(atPath: "\(shared)/\(id).qcow2"))
                _ = try await controller.deleteVM("mover")
                try await eventually("mover deleted", within: 60) { controller.listVMs().items.isEmpty }
                #expect(!FileManager.default.fileExists(atPath: "\(shared)/\(id).qcow2"))
            }
        }

        @Test("between QEMU hosts that share no storage the controller copies the disk during the live move")
        func copyThroughController() async throws {
            let drivers: [(String, any HypervisorDriver)] = [("q1", TestQEMU.driver()), ("q2", TestQEMU.driver())]
            try await withCluster(drivers) { controller in
                _ = try await controller.createVM(
                    VMSpec(name: "mover", image: "web", cpus: 1, memoryMiB: 128, host: "q1", diskMiB: 256))
                try await eventually("mover runs on q1", within: 120) { try await controller.vm("mover").state == .running }
                _ = try await mark(try #require(try await controller.vm("mover").address), set: "local-disk")
                // The verdicts say q2 can take it live (copying), and the move copies.
                let verdicts = try #require(try await controller.vm("mover").liveMoves)
                #expect(verdicts.first { $0.hostName == "q2" }?.filtered == nil)
                let moved = try await waitMoved(controller, try await controller.migrateVM("mover", to: "q2"))
                try #require(moved.state == .completed, "\(moved.message ?? "")")
                #expect(moved.storage == .copy && moved.kind == .live)
                try await eventually("the source's figures recorded", within: 15) {
                    try await controller.migration(moved.id.rawValue).stats?.storageBytes != nil
                }
                let stats = try #require(try await controller.migration(moved.id.rawValue).stats)
                #expect((stats.storageBytes ?? 0) >= 64 << 20)
                try await eventually("mover runs on q2", within: 60) {
                    let vm = try await controller.vm("mover")
                    return vm.host == "q2" && vm.state == .running && vm.address != nil
                }
                let marks = try await mark(try #require(try await controller.vm("mover").address))
                // A live move: the memory came too, and the disk with it.
                #expect(marks["disk"] == .string("local-disk") && marks["memory"] == .string("local-disk"))
                _ = try await controller.deleteVM("mover")
                try await eventually("mover deleted", within: 60) { controller.listVMs().items.isEmpty }
            }
        }
    }
}
