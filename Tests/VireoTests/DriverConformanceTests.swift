import Foundation
import Testing
import VireoDriver
import VireoDriverLibvirt
import VireoDriverSimulated
import VireoImage
import VireoModel

@testable import VireoDriverQEMU

/// A driver under test and a way to let its time pass: virtual time for the simulated driver,
/// waiting for real ones.
struct DriverFixture: Sendable, CustomTestStringConvertible {
    let name: String
    let make: @Sendable () throws -> (any HypervisorDriver, @Sendable () async -> Void)
    var testDescription: String { name }

    static let simulated = DriverFixture(name: "simulated") {
        let time = ManualTime()
        let driver = SimulatedDriver(
            configuration: .init(cpus: 4, memoryMiB: 1024, bootDelay: .seconds(2), stopDelay: .seconds(1)), time: time)
        return (driver, { time.advance(by: .milliseconds(500)) })
    }

    /// libvirt's built-in test hypervisor: no daemon and no guest, so it runs in the normal suite.
    static let libvirtTest = DriverFixture(name: "libvirt (test:///default)") {
        (TestLibvirt.driver(uri: "test:///default"), { try? await Task.sleep(for: .milliseconds(20)) })
    }

    /// libvirt on `qemu:///system` with real guests; runs in `RealQEMU`, after
    /// `LibvirtQEMUTests.ensureDaemons()`.
    static let libvirtQEMU = DriverFixture(name: "libvirt (qemu:///system)") {
        (TestLibvirt.driver(uri: "qemu:///system"), { try? await Task.sleep(for: .milliseconds(250)) })
    }

    /// Runs in `RealQEMU` (one test at a time with the other real-guest suites), not beside them.
    static let qemu = DriverFixture(name: "qemu (\(TestQEMU.accelerator.rawValue))") {
        (TestQEMU.driver(), { try? await Task.sleep(for: .milliseconds(250)) })
    }
}

/// Real QEMU for tests: the accelerator this machine supports (probed, as the product does) and
/// images built once per test run into `$VIREO_TEST_IMAGES` (`make test` builds them there before
/// the run), else `.build/test-images`, or the temporary directory when the checkout is where
/// QEMU's unprivileged uids cannot reach it (a clone in /root).
enum TestQEMU {
    static let accelerator = try! Accelerator.resolve("auto")
    static let builder = ImageBuilder(cacheDirectory: imageDirectory)

    static var imageDirectory: String {
        // `make test` builds them there before the run.
        if let directory = ProcessInfo.processInfo.environment["VIREO_TEST_IMAGES"], !directory.isEmpty {
            return directory
        }
        let build = FileManager.default.currentDirectoryPath + "/.build"
        let local = build + "/test-images"
        let reachable =
            (try? QEMUConfinement.checkReachable(build, by: QEMUConfinement.defaultUIDs.lowerBound, access: 0o1)) != nil
        return reachable ? local : NSTemporaryDirectory() + "vireo-test-images"
    }

    static func driver(stateDirectory: String = temporaryDirectory() + "/vms", stopTimeout: Duration? = nil) -> QEMUDriver {
        var configuration = QEMUDriver.Configuration(
            stateDirectory: stateDirectory, accelerator: accelerator, cpus: 2, memoryMiB: 4096)
        if let stopTimeout { configuration.stopTimeout = stopTimeout }
        return QEMUDriver(configuration: configuration, images: { name in try await images.image(name) })
    }

    /// One build per image name for the whole run, however many tests ask at once.
    static let images = ImageCache()

    actor ImageCache {
        var builds: [String: Task<GuestImage, any Error>] = [:]
        func image(_ name: String) async throws -> GuestImage {
            if let build = builds[name] { return try await build.value }
            let build = Task {
                let built = try await TestQEMU.builder.build(name)
                return GuestImage(
                    kernel: built.kernel, initrd: built.initrd, baseDisk: built.baseDisk,
                    kernelCommandLine: built.kernelCommandLine, readyMarker: built.readyMarker)
            }
            builds[name] = build
            return try await build.value
        }
    }
}

/// Waits (advancing the fixture's time) until the VM reaches `state`; fails after 720 steps (three
/// minutes of real time at QEMU's 250 ms: a TCG boot on a busy machine can take far longer than the
/// 2 s it takes on a quiet one).
func settle(_ driver: any HypervisorDriver, _ id: VMID, to state: InstanceState, tick: @Sendable () async -> Void)
    async throws -> InstanceStatus
{
    for _ in 0..<720 {
        if let status = try await driver.status().first(where: { $0.id == id }), status.state == state { return status }
        await tick()
    }
    let last = try await driver.status().first { $0.id == id }
    Issue.record("VM never reached \(state); last seen \(String(describing: last))")
    throw VireoError(.internal, "timeout")
}

@Suite("Driver conformance")
struct DriverConformanceTests {
    func spec(_ name: String, memoryMiB: Int = 128) -> InstanceSpec {
        InstanceSpec(id: .generate(), name: name, image: "tiny", cpus: 1, memoryMiB: memoryMiB)
    }

    @Test("a VM goes through create, start, stop and delete", arguments: [DriverFixture.simulated, .libvirtTest])
    func lifecycle(fixture: DriverFixture) async throws {
        let (driver, tick) = try fixture.make()
        let vm = spec("life")
        try await driver.create(vm)
        #expect(try await driver.status().first { $0.id == vm.id }?.state == .stopped)
        try await driver.start(vm.id)
        _ = try await settle(driver, vm.id, to: .running, tick: tick)
        try await driver.stop(vm.id)
        _ = try await settle(driver, vm.id, to: .stopped, tick: tick)
        try await driver.delete(vm.id)
        #expect(try await driver.status().contains { $0.id == vm.id } == false)
    }

    @Test("create and start are idempotent", arguments: [DriverFixture.simulated, .libvirtTest])
    func idempotent(fixture: DriverFixture) async throws {
        let (driver, tick) = try fixture.make()
        let vm = spec("twice")
        try await driver.create(vm)
        try await driver.create(vm)
        try await driver.start(vm.id)
        try await driver.start(vm.id)
        _ = try await settle(driver, vm.id, to: .running, tick: tick)
        #expect(try await driver.status().filter { $0.id == vm.id }.count == 1)
        try await driver.delete(vm.id)
    }

    @Test("operations on an unknown VM fail with not found", arguments: [DriverFixture.simulated, .libvirtTest])
    func unknownVM(fixture: DriverFixture) async throws {
        let (driver, _) = try fixture.make()
        let error = await #expect(throws: VireoError.self) { try await driver.start(VMID("nope")) }
        #expect(error?.code == .notFound)
    }

    @Test("the fingerprint describes the host and the driver", arguments: [DriverFixture.simulated, .libvirtTest])
    func fingerprint(fixture: DriverFixture) async throws {
        let (driver, _) = try fixture.make()
        let fingerprint = try await driver.fingerprint()
        #expect(fingerprint.cpus > 0)
        #expect(fingerprint.memoryMiB > 0)
        #expect(fingerprint.driver == driver.name)
        #expect(Set(fingerprint.capabilities) == driver.capabilities)
    }

    @Test("deleting a running VM stops and removes it", arguments: [DriverFixture.simulated, .libvirtTest])
    func deleteRunning(fixture: DriverFixture) async throws {
        let (driver, tick) = try fixture.make()
        let vm = spec("gone")
        try await driver.create(vm)
        try await driver.start(vm.id)
        _ = try await settle(driver, vm.id, to: .running, tick: tick)
        try await driver.delete(vm.id)
        #expect(try await driver.status().isEmpty)
    }

    // MARK: Snapshots

    @Test(
        "snapshots are saved, listed in the order taken, loaded and deleted; the VM runs on",
        arguments: [DriverFixture.simulated, .libvirtTest])
    func snapshots(fixture: DriverFixture) async throws {
        let (driver, tick) = try fixture.make()
        #expect(driver.capabilities.contains(.snapshots))
        let vm = spec("snap")
        try await driver.create(vm)
        #expect(try await driver.snapshots(vm.id) == [])
        try await driver.start(vm.id)
        _ = try await settle(driver, vm.id, to: .running, tick: tick)
        let saved = try await driver.saveSnapshot(vm.id, tag: "clean")
        _ = try await driver.saveSnapshot(vm.id, tag: "kept-2")
        #expect(try await driver.snapshots(vm.id) == ["clean", "kept-2"])
        let loaded = try await driver.loadSnapshot(vm.id, tag: "clean")
        #expect(saved >= .zero && loaded >= .zero)
        #expect(try await driver.status().first { $0.id == vm.id }?.state == .running)
        // What a kept context does: a new tag, then the old one goes; a deleted tag can be taken again.
        try await driver.deleteSnapshot(vm.id, tag: "clean")
        #expect(try await driver.snapshots(vm.id) == ["kept-2"])
        _ = try await driver.saveSnapshot(vm.id, tag: "clean")
        #expect(try await driver.snapshots(vm.id) == ["kept-2", "clean"])
        _ = try await driver.loadSnapshot(vm.id, tag: "kept-2")
        #expect(try await driver.status().first { $0.id == vm.id }?.state == .running)
        try await driver.delete(vm.id)
    }

    @Test(
        "snapshot operations fail saying why: VM not running, tag taken, tag unknown, bad tag, VM unknown",
        arguments: [DriverFixture.simulated, .libvirtTest])
    func snapshotErrors(fixture: DriverFixture) async throws {
        let (driver, tick) = try fixture.make()
        let vm = spec("snaperr")
        try await driver.create(vm)
        func code(_ operation: () async throws -> Void) async -> VireoError.Code? {
            do {
                try await operation()
                return nil
            } catch let error as VireoError {
                return error.code
            } catch {
                Issue.record("not a VireoError: \(error)")
                return nil
            }
        }
        #expect(await code { _ = try await driver.saveSnapshot(vm.id, tag: "a") } == .failedPrecondition)
        #expect(await code { _ = try await driver.loadSnapshot(vm.id, tag: "a") } == .failedPrecondition)
        try await driver.start(vm.id)
        _ = try await settle(driver, vm.id, to: .running, tick: tick)
        _ = try await driver.saveSnapshot(vm.id, tag: "a")
        #expect(await code { _ = try await driver.saveSnapshot(vm.id, tag: "a") } == .conflict)
        #expect(await code { _ = try await driver.loadSnapshot(vm.id, tag: "nope") } == .notFound)
        #expect(await code { try await driver.deleteSnapshot(vm.id, tag: "nope") } == .notFound)
        for bad in ["", "12", "a b", "tag/x", String(repeating: "t", count: 129)] {
            let error = await #expect(throws: VireoError.self) { _ = try await driver.saveSnapshot(vm.id, tag: bad) }
            #expect(error?.code == .invalidArgument && error?.message.contains("tag") == true, "\(bad)")
        }
        let unknown = VMID("nope")
        #expect(await code { _ = try await driver.saveSnapshot(unknown, tag: "a") } == .notFound)
        #expect(await code { _ = try await driver.snapshots(unknown) } == .notFound)
        #expect(await code { try await driver.start(unknown, fromSnapshot: "a") } == .notFound)
        // Nothing of the failed calls is left: the VM runs with its one snapshot.
        #expect(try await driver.snapshots(vm.id) == ["a"])
        _ = try await driver.loadSnapshot(vm.id, tag: "a")
        #expect(try await driver.status().first { $0.id == vm.id }?.state == .running)
        try await driver.delete(vm.id)
    }

    @Test(
        "a stopped VM keeps its snapshots and starts from one instead of booting",
        arguments: [DriverFixture.simulated, .libvirtTest])
    func startFromSnapshot(fixture: DriverFixture) async throws {
        let (driver, tick) = try fixture.make()
        let vm = spec("restore")
        try await driver.create(vm)
        try await driver.start(vm.id)
        _ = try await settle(driver, vm.id, to: .running, tick: tick)
        _ = try await driver.saveSnapshot(vm.id, tag: "s")
        let running = await #expect(throws: VireoError.self) { try await driver.start(vm.id, fromSnapshot: "s") }
        #expect(running?.code == .failedPrecondition)
        try await driver.stop(vm.id)
        _ = try await settle(driver, vm.id, to: .stopped, tick: tick)
        #expect(try await driver.snapshots(vm.id) == ["s"])
        let unknown = await #expect(throws: VireoError.self) { try await driver.start(vm.id, fromSnapshot: "nope") }
        #expect(unknown?.code == .notFound)

        try await driver.start(vm.id, fromSnapshot: "s")
        _ = try await settle(driver, vm.id, to: .running, tick: tick)
        _ = try await driver.saveSnapshot(vm.id, tag: "t")
        try await driver.stop(vm.id)
        _ = try await settle(driver, vm.id, to: .stopped, tick: tick)
        // Stopped, a snapshot can still be deleted.
        try await driver.deleteSnapshot(vm.id, tag: "t")
        #expect(try await driver.snapshots(vm.id) == ["s"])
        try await driver.delete(vm.id)
    }

    @Test(
        "a display is given where the driver has one and refused at create where it has none",
        arguments: [DriverFixture.simulated, .libvirtTest])
    func displayUnsupported(fixture: DriverFixture) async throws {
        let (driver, _) = try fixture.make()
        var vm = spec("screen")
        vm.display = .vnc
        if driver.capabilities.contains(.display) {
            try await driver.create(vm)
            // Stopped: nothing to show yet.
            #expect(try await driver.status().first { $0.id == vm.id }?.display == nil)
            try await driver.delete(vm.id)
        } else {
            let error = await #expect(throws: VireoError.self) { try await driver.create(vm) }
            #expect(error?.code == .unsupported && error?.message.contains("display") == true)
            #expect(try await driver.status().contains { $0.id == vm.id } == false)
        }
    }
}

extension RealQEMU {
    /// The same conformance tests on real QEMU guests.
    @Suite("Driver conformance (real QEMU)")
    struct QEMUDriverConformanceTests {
        let tests = DriverConformanceTests()

        @Test("a VM goes through create, start, stop and delete")
        func lifecycle() async throws { try await tests.lifecycle(fixture: .qemu) }

        @Test("create and start are idempotent")
        func idempotent() async throws { try await tests.idempotent(fixture: .qemu) }

        @Test("operations on an unknown VM fail with not found")
        func unknownVM() async throws { try await tests.unknownVM(fixture: .qemu) }

        @Test("the fingerprint describes the host and the driver")
        func fingerprint() async throws { try await tests.fingerprint(fixture: .qemu) }

        @Test("deleting a running VM stops and removes it")
        func deleteRunning() async throws { try await tests.deleteRunning(fixture: .qemu) }

        @Test("snapshots are saved, listed in the order taken, loaded and deleted; the VM runs on")
        func snapshots() async throws { try await tests.snapshots(fixture: .qemu) }

        @Test("snapshot operations fail saying why: VM not running, tag taken, tag unknown, bad tag, VM unknown")
        func snapshotErrors() async throws { try await tests.snapshotErrors(fixture: .qemu) }

        @Test("a stopped VM keeps its snapshots and starts from one instead of booting")
        func startFromSnapshot() async throws { try await tests.startFromSnapshot(fixture: .qemu) }

        @Test("a display is given where the driver has one and refused at create where it has none")
        func displayUnsupported() async throws { try await tests.displayUnsupported(fixture: .qemu) }
    }
}

extension RealQEMU {
    /// The same conformance tests on libvirt's qemu:///system, with libvirtd and virtlogd started
    /// by the test when they do not run.
    @Suite("Driver conformance (libvirt qemu:///system)")
    struct LibvirtQEMUConformanceTests {
        let tests = DriverConformanceTests()

        @Test("a VM goes through create, start, stop and delete")
        func lifecycle() async throws {
            try await LibvirtQEMUTests.ensureDaemons()
            try await tests.lifecycle(fixture: .libvirtQEMU)
        }

        @Test("create and start are idempotent")
        func idempotent() async throws {
            try await LibvirtQEMUTests.ensureDaemons()
            try await tests.idempotent(fixture: .libvirtQEMU)
        }

        @Test("operations on an unknown VM fail with not found")
        func unknownVM() async throws {
            try await LibvirtQEMUTests.ensureDaemons()
            try await tests.unknownVM(fixture: .libvirtQEMU)
        }

        @Test("the fingerprint describes the host and the driver")
        func fingerprint() async throws {
            try await LibvirtQEMUTests.ensureDaemons()
            try await tests.fingerprint(fixture: .libvirtQEMU)
        }

        @Test("deleting a running VM stops and removes it")
        func deleteRunning() async throws {
            try await LibvirtQEMUTests.ensureDaemons()
            try await tests.deleteRunning(fixture: .libvirtQEMU)
        }

        @Test("snapshots are saved, listed in the order taken, loaded and deleted; the VM runs on")
        func snapshots() async throws {
            try await LibvirtQEMUTests.ensureDaemons()
            try await tests.snapshots(fixture: .libvirtQEMU)
        }

        @Test("snapshot operations fail saying why: VM not running, tag taken, tag unknown, bad tag, VM unknown")
        func snapshotErrors() async throws {
            try await LibvirtQEMUTests.ensureDaemons()
            try await tests.snapshotErrors(fixture: .libvirtQEMU)
        }

        @Test("a stopped VM keeps its snapshots and starts from one instead of booting")
        func startFromSnapshot() async throws {
            try await LibvirtQEMUTests.ensureDaemons()
            try await tests.startFromSnapshot(fixture: .libvirtQEMU)
        }

        @Test("a display is given where the driver has one and refused at create where it has none")
        func displayUnsupported() async throws {
            try await LibvirtQEMUTests.ensureDaemons()
            try await tests.displayUnsupported(fixture: .libvirtQEMU)
        }
    }
}

@Suite("Simulated driver")
struct SimulatedDriverTests {
    @Test("boot takes exactly the configured virtual time")
    func bootDelay() async throws {
        let time = ManualTime()
        let driver = SimulatedDriver(configuration: .init(bootDelay: .seconds(3)), time: time)
        let id = VMID.generate()
        try await driver.create(InstanceSpec(id: id, name: "a", image: "tiny", cpus: 1, memoryMiB: 128))
        try await driver.start(id)
        time.advance(by: .milliseconds(2999))
        #expect(try await driver.status().first?.state == .starting)
        time.advance(by: .milliseconds(1))
        #expect(try await driver.status().first?.state == .running)
    }

    @Test("an injected failure fails that start, with a reason, and only that one")
    func injectedFailure() async throws {
        let time = ManualTime()
        let driver = SimulatedDriver(time: time)
        let id = VMID.generate()
        try await driver.create(InstanceSpec(id: id, name: "crashy", image: "tiny", cpus: 1, memoryMiB: 128))
        driver.injectStartFailure(vmNamed: "crashy")
        try await driver.start(id)
        let status = try #require(try await driver.status().first)
        #expect(status.state == .failed)
        #expect(status.message == "simulated boot failure")
        try await driver.start(id)
        time.advance(by: .seconds(10))
        #expect(try await driver.status().first?.state == .running)
    }

    @Test("seeded failure probability repeats exactly")
    func seededFailures() async throws {
        func outcomes(seed: UInt64) async throws -> [InstanceState] {
            let driver = SimulatedDriver(configuration: .init(startFailureProbability: 0.5, seed: seed), time: ManualTime())
            var result: [InstanceState] = []
            for i in 0..<20 {
                let id = VMID("vm-\(i)")
                try await driver.create(InstanceSpec(id: id, name: "vm-\(i)", image: "tiny", cpus: 1, memoryMiB: 64))
                try await driver.start(id)
                result.append(try await driver.status().first { $0.id == id }!.state)
            }
            return result
        }
        let first = try await outcomes(seed: 42)
        #expect(try await outcomes(seed: 42) == first)
        #expect(first.contains(.failed) && first.contains(.starting))
    }

    @Test("starting beyond the host's memory fails the VM with the reason")
    func outOfMemory() async throws {
        let driver = SimulatedDriver(configuration: .init(memoryMiB: 256), time: ManualTime())
        let a = VMID.generate()
        let b = VMID.generate()
        try await driver.create(InstanceSpec(id: a, name: "a", image: "tiny", cpus: 1, memoryMiB: 200))
        try await driver.create(InstanceSpec(id: b, name: "b", image: "tiny", cpus: 1, memoryMiB: 200))
        try await driver.start(a)
        try await driver.start(b)
        let status = try #require(try await driver.status().first { $0.id == b })
        #expect(status.state == .failed)
        #expect(status.message?.contains("out of memory") == true)
    }

    @Test("memory in use follows starts, stops, deletes and incoming migrations")
    func memoryAccounting() async throws {
        let time = ManualTime()
        let driver = SimulatedDriver(configuration: .init(memoryMiB: 256), time: time)
        let spec = { (name: String) in InstanceSpec(id: .generate(), name: name, image: "tiny", cpus: 1, memoryMiB: 200) }
        let (a, b) = (spec("a"), spec("b"))
        try await driver.create(a)
        try await driver.create(b)
        try await driver.start(a.id)
        time.advance(by: .seconds(1))
        try await driver.stop(a.id)
        // Stopping still holds nothing: only running and starting instances count.
        try await driver.start(b.id)
        #expect(try await driver.status().first { $0.id == b.id }?.state == .starting)
        time.advance(by: .seconds(1))
        #expect(try await driver.status().map(\.state) == [.stopped, .running])
        try await driver.delete(b.id)
        // The memory b held is free again: an incoming guest fits, a second one does not.
        _ = try await driver.prepareIncoming(spec("c"), guestAddress: nil, listenAddress: "127.0.0.1")
        await #expect(throws: VireoError.self) {
            _ = try await driver.prepareIncoming(spec("d"), guestAddress: nil, listenAddress: "127.0.0.1")
        }
        try await driver.start(a.id)
        #expect(try await driver.status().first { $0.id == a.id }?.message?.contains("200 MiB in use") == true)
    }

    @Test("a VM given a workload reports CPU time at its rate and its memory; a restart and a move start from zero")
    func workload() async throws {
        let time = ManualTime()
        let driver = SimulatedDriver(configuration: .init(bootDelay: .seconds(1), stopDelay: .seconds(1)), time: time)
        let spec = InstanceSpec(id: .generate(), name: "busy", image: "tiny", cpus: 2, memoryMiB: 512)
        try await driver.create(spec)
        try await driver.start(spec.id)
        #expect(throws: VireoError.self) { try driver.setLoad(vmNamed: "nope", cores: 1, residentMiB: 1) }
        time.advance(by: .seconds(3))
        // Without a workload it cannot tell, like a driver that does not measure.
        #expect(await driver.usage(spec.id) == nil)
        try driver.setLoad(vmNamed: "busy", cores: 0.5, residentMiB: 300)
        time.advance(by: .seconds(10))
        #expect(await driver.usage(spec.id) == ResourceUsage(cpuSeconds: 5, memoryBytes: 300 << 20))
        try driver.setLoad(vmNamed: "busy", cores: 1.5, residentMiB: 400)
        time.advance(by: .seconds(2))
        #expect(await driver.usage(spec.id)?.cpuSeconds == 8)

        // Stopped, it uses nothing; started again, its new process counts from the moment it is up.
        try await driver.stop(spec.id)
        time.advance(by: .seconds(5))
        #expect(await driver.usage(spec.id) == nil)
        try await driver.start(spec.id)
        time.advance(by: .seconds(3))
        #expect(await driver.usage(spec.id)?.cpuSeconds == 3)

        // Arriving by migration: its process on this host counts from the hand-over.
        let incoming = InstanceSpec(id: .generate(), name: "mover", image: "tiny", cpus: 1, memoryMiB: 128)
        _ = try await driver.prepareIncoming(incoming, guestAddress: nil, listenAddress: "127.0.0.1")
        try driver.setLoad(vmNamed: "mover", cores: 1, residentMiB: 100)
        time.advance(by: .seconds(4))
        #expect(await driver.usage(incoming.id) == nil)
        try await driver.finishIncoming(incoming.id)
        time.advance(by: .seconds(2))
        #expect(await driver.usage(incoming.id) == ResourceUsage(cpuSeconds: 2, memoryBytes: 100 << 20))
    }

    @Test("private networks: a subnet per network in the order first used, guests from .10; the rest keep theirs")
    func privateAddresses() async throws {
        let driver = SimulatedDriver(configuration: .init(bootDelay: .zero), time: ManualTime())
        #expect(driver.capabilities.contains(.privateNetworks))
        let specs = [("a1", "a"), ("b1", "b"), ("a2", "a"), ("server", nil)].map { name, network in
            InstanceSpec(id: .generate(), name: name, image: "tiny", cpus: 1, memoryMiB: 64, privateNetwork: network)
        }
        for spec in specs {
            try await driver.create(spec)
            try await driver.start(spec.id)
        }
        let addresses = Dictionary(uniqueKeysWithValues: try await driver.status().map { ($0.name, $0.address ?? "") })
        #expect(addresses["a1"] == "198.19.1.10")
        #expect(addresses["b1"] == "198.19.2.10")
        #expect(addresses["a2"] == "198.19.1.11")
        #expect(addresses["server"]?.hasPrefix("198.18.") == true)
        let empty = InstanceSpec(id: .generate(), name: "x", image: "tiny", cpus: 1, memoryMiB: 64, privateNetwork: "")
        let error = await #expect(throws: VireoError.self) { try await driver.create(empty) }
        #expect(error?.message.contains("privateNetwork") == true)
    }

    @Test("snapshot saves and loads report the configured virtual time; a start from a snapshot skips the boot delay")
    func snapshotTimes() async throws {
        let time = ManualTime()
        let driver = SimulatedDriver(
            configuration: .init(
                bootDelay: .seconds(5), snapshotSaveTime: .milliseconds(110), snapshotLoadTime: .milliseconds(95)),
            time: time)
        let spec = InstanceSpec(id: .generate(), name: "ctx", image: "tiny", cpus: 1, memoryMiB: 256)
        try await driver.create(spec)
        try await driver.start(spec.id)
        time.advance(by: .seconds(5))
        #expect(try await driver.saveSnapshot(spec.id, tag: "clean") == .milliseconds(110))
        #expect(try await driver.loadSnapshot(spec.id, tag: "clean") == .milliseconds(95))
        try await driver.stop(spec.id)
        time.advance(by: .seconds(1))
        try await driver.start(spec.id, fromSnapshot: "clean")
        #expect(try await driver.status().first?.state == .running)
        #expect(try await driver.consoleOutput(spec.id, from: 0, limit: 4096).text.contains("running from snapshot 'clean'"))
    }

    @Test("bad driver settings are rejected naming the setting")
    func badSettings() throws {
        var registry = DriverRegistry()
        registry.registerSimulated()
        let error = #expect(throws: VireoError.self) {
            _ = try registry.make("simulated", options: .init(stateDirectory: "/tmp", settings: ["boot-delay-ms": "soon"]))
        }
        #expect(error?.message.contains("boot-delay-ms") == true)
        #expect(throws: VireoError.self) { _ = try registry.make("vmware", options: .init(stateDirectory: "/tmp")) }
    }
}
