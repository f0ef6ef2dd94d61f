import Foundation
import Testing
import VireoDriver
import VireoDriverSimulated
import VireoModel

/// Fault injection: `vireo chaos` kills the controller or an agent (SIGKILL) in the middle of
/// random operations, with processes of their own on loopback, and checks the invariants after
/// each round. A short run here; `vireo chaos --rounds 50` is the long one (docs/reliability.md).
@Suite("Chaos: kill -9 at random points")
struct ChaosTests {
    struct Result: Decodable {
        var rounds: Int
        var faults: Int
        var violations: Int
        var seed: UInt64
        var faultsByTarget: [String: Int]
        var operations: [String: Int]
        var details: [String]
    }

    @Test("eight rounds of kill -9 of the controller or an agent: every invariant holds after each")
    func shortRun() async throws {
        let run = try await vireo([
            "chaos", "--rounds", "8", "--seed", "11", "--dir", temporaryDirectory() + "/chaos", "-o", "json",
        ])
        let result = try decodeJSON(Result.self, run.stdout)
        #expect(run.status == 0, "\(result.details)\n\(run.stderr)")
        #expect(result.rounds == 8 && result.faults == 8)
        #expect(result.violations == 0, "\(result.details)")
        #expect(result.details.isEmpty)
        #expect(result.operations.values.reduce(0, +) == 8)
        // Seed 11 opens, keeps and closes contexts among its operations.
        #expect(result.operations.keys.filter { $0.hasPrefix("context-") }.count >= 2, "\(result.operations)")
        print("chaos, 8 rounds (seed 11): faults \(result.faultsByTarget), operations \(result.operations)")
    }

    @Test("vireo chaos refuses what it cannot do, naming the option")
    func refusals() async throws {
        let libvirt = try await vireo(["chaos", "--driver", "libvirt"])
        #expect(libvirt.status != 0)
        #expect(libvirt.stderr.contains("--driver") && libvirt.stderr.contains("libvirt"), "\(libvirt.stderr)")
        let images = try await vireo(["chaos", "--images", "/tmp"])
        #expect(images.status != 0)
        #expect(images.stderr.contains("--images") && images.stderr.contains("--driver qemu"), "\(images.stderr)")
        let none = try await vireo(["chaos", "--rounds", "0"])
        #expect(none.status != 0)
        #expect(none.stderr.contains("--rounds"), "\(none.stderr)")
    }

    @Test("a simulated driver that persists: a new driver over the same file takes over what ran, as a QEMU outlives its agent")
    func persistedDriver() async throws {
        let path = temporaryDirectory() + "/simulated.json"
        var configuration = SimulatedDriver.Configuration(bootDelay: .zero, stopDelay: .zero)
        configuration.persistPath = path
        let first = SimulatedDriver(configuration: configuration)
        let a = VMID.generate()
        let b = VMID.generate()
        try await first.create(InstanceSpec(id: a, name: "a", image: "tiny", cpus: 1, memoryMiB: 128))
        try await first.start(a)
        try await first.create(InstanceSpec(id: b, name: "b", image: "tiny", cpus: 1, memoryMiB: 128))
        try await first.start(b)
        try await first.pause(b)
        _ = try await first.status()
        let second = SimulatedDriver(configuration: configuration)
        let taken = try await second.recover().sorted { $0.name < $1.name }
        #expect(taken.map(\.name) == ["a", "b"])
        #expect(taken.allSatisfy { $0.state == .running })
        #expect(taken.map { $0.paused ?? false } == [false, true])
        // A delete is written at once too.
        try await second.delete(a)
        let third = SimulatedDriver(configuration: configuration)
        #expect(try await third.recover().map(\.name) == ["b"])
    }
}

extension RealQEMU {
    /// The same rounds over real QEMU: a two-host testbed (network namespaces, shared disks), each
    /// running VM checked to be exactly one QEMU process in its own host's namespace, and its
    /// vCPUs seen running.
    @Suite("Chaos with real QEMU")
    struct ChaosQEMUTests {
        @Test(
            "eight rounds of kill -9 over a QEMU testbed: every invariant holds after each",
            .enabled(if: getuid() == 0, "needs root: the testbed creates namespaces, bridges and cgroups"))
        func qemuRounds() async throws {
            let run = try await vireo([
                "chaos", "--driver", "qemu", "--images", TestQEMU.builder.cacheDirectory, "--rounds", "8", "--seed", "7",
                "--dir", temporaryDirectory() + "/chaos", "-o", "json",
            ])
            let result = try decodeJSON(ChaosTests.Result.self, run.stdout)
            #expect(run.status == 0, "\(result.details)\n\(run.stderr)")
            #expect(result.rounds == 8 && result.faults == 8)
            #expect(result.violations == 0, "\(result.details)")
            #expect(result.operations.values.reduce(0, +) == 8)
            // Seed 7 opened and reset a context and moved VMs here (its choices follow what the cluster
            // answers, so they may differ under load).
            print("chaos over QEMU, 8 rounds (seed 7): faults \(result.faultsByTarget), operations \(result.operations)")
        }
    }
}
