import ArgumentParser
import Foundation
import Subprocess
import VireoAPI
import VireoClient
import VireoDriverQEMU
import VireoImage
import VireoModel
import VireoProcess

/// Result of `vireo bench boot`.
struct BootBenchResult: Codable {
    var image: String
    var accelerator: String
    var runs: Int
    /// QEMU started by hand (the same command line, in the foreground) until the ready marker.
    var byHandMs: [Double]
    /// `POST /v1/vms` until `GET /v1/vms/{vm}` says running.
    var apiMs: [Double]
    /// Per API run: the driver's own time from launching QEMU to the ready marker (`lastBootMs`).
    var driverBootMs: [Double]
    /// Per API run: API time minus the driver's launch → ready time, i.e. everything Vireo does
    /// around QEMU (request, store, placement, agent, overlay, reporting, the client's polling).
    var aroundQEMUMs: [Double]
    var byHandMedianMs: Double
    var apiMedianMs: Double
    var driverBootMedianMs: Double
    /// API median minus by-hand median: includes the run-to-run noise of whole boots.
    var overheadMs: Double
    /// Median of `aroundQEMUMs`: Vireo's overhead measured per VM.
    var aroundQEMUMedianMs: Double
}

struct BenchBoot: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "boot",
        abstract: "Time `vm create` until the guest is ready, against starting the same QEMU by hand.",
        discussion: """
            Needs a controller with a qemu host (e.g. `vireo up`). Runs alternate: by hand (the driver's own \
            QEMU command line without QMP and daemonizing, timed from process start to the guest's ready \
            marker on its serial console), then through the API (create, then poll every 2 ms until running).
            """)

    @Option(help: "Runs of each kind.") var count: Int = 5
    @Option(help: "Guest image.") var image: String = "tiny"
    @Option(help: ArgumentHelp("Guest memory.", valueName: "size")) var memory: String = "128MiB"
    @Option(help: ArgumentHelp("Image cache for the by-hand runs.", valueName: "dir"))
    var images: String = ServeOptions.defaultDataDirectory() + "/images"
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard (1...100).contains(count) else { throw ValidationError("--count must be 1...100 (got \(count))") }
    }

    func run() async throws {
        let memoryMiB = try ByteSize.parseMiB(memory, field: "--memory")
        let accelerator = try Accelerator.resolve("auto")
        let built = try await ImageBuilder(cacheDirectory: images).build(image)
        let api = client.client()
        var byHand: [Double] = []
        var viaAPI: [Double] = []
        var driverBoot: [Double] = []
        for run in 0..<count {
            byHand.append(try await bootByHand(built, accelerator: accelerator, memoryMiB: memoryMiB, run: run))
            let (total, boot) = try await bootViaAPI(api, memoryMiB: memoryMiB, run: run)
            viaAPI.append(total)
            driverBoot.append(boot)
            FileHandle.standardError.write(
                Data(
                    String(
                        format: "run %d: by hand %.0f ms, via API %.0f ms (QEMU launch to ready %.0f ms)\n", run + 1,
                        byHand.last!, total, boot
                    ).utf8))
        }
        let around = zip(viaAPI, driverBoot).map { $0 - $1 }
        let result = BootBenchResult(
            image: image, accelerator: accelerator.rawValue, runs: count, byHandMs: byHand, apiMs: viaAPI,
            driverBootMs: driverBoot, aroundQEMUMs: around, byHandMedianMs: median(byHand),
            apiMedianMs: median(viaAPI), driverBootMedianMs: median(driverBoot),
            overheadMs: median(viaAPI) - median(byHand), aroundQEMUMedianMs: median(around))
        if output.output == .json { return try printJSON(result) }
        print(
            String(
                format: "%@ on %@, %d runs: by hand median %.0f ms, via API median %.0f ms (QEMU launch to ready "
                    + "%.0f ms); Vireo around QEMU: median %.0f ms, max %.0f ms",
                image, accelerator.rawValue, count, result.byHandMedianMs, result.apiMedianMs,
                result.driverBootMedianMs, result.aroundQEMUMedianMs, around.max() ?? 0))
    }

    func median(_ values: [Double]) -> Double { Self.median(values) }

    /// The middle value (the mean of the two middle ones for an even count); 0 for none.
    static func median(_ values: [Double]) -> Double {
        guard !values.isEmpty else { return 0 }
        let sorted = values.sorted()
        return sorted.count % 2 == 1
            ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }

    /// Process start to the ready marker, for the same QEMU command line the driver uses.
    func bootByHand(_ image: BuiltImage, accelerator: Accelerator, memoryMiB: Int, run: Int) async throws -> Double {
        let directory = FileManager.default.temporaryDirectory.path + "/vireo-bench-boot-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let disk = directory + "/disk.qcow2"
        try await HostTool.run("qemu-img", ["create", "-q", "-f", "qcow2", "-b", image.baseDisk, "-F", "qcow2", disk])
        let id = VMID.generate()
        let invocation = QEMUInvocation(
            name: "hand-\(run)", id: id, accelerator: accelerator, cpus: 1, memoryMiB: memoryMiB,
            kernel: image.kernel, initrd: image.initrd, kernelCommandLine: image.kernelCommandLine, disk: disk,
            mac: QEMUInvocation.mac(for: id), network: .user(hostPort: try QEMUDriver.freePort(on: "127.0.0.1")), qmpSocket: "",
            serialLog: directory + "/serial.log", managed: false)
        let serial = directory + "/serial.log"
        let marker = Data(image.readyMarker.utf8)
        let result = try await Subprocess.run(
            .path(.init(try HostTool.locate("qemu-system-x86_64"))), arguments: Arguments(invocation.arguments),
            input: .none, output: .discarded, error: .discarded
        ) { execution -> Double? in
            let start = ContinuousClock.now
            defer { try? execution.send(signal: .kill) }
            while ContinuousClock.now - start < .seconds(120) {
                if let log = FileManager.default.contents(atPath: serial), log.range(of: marker) != nil {
                    return milliseconds(ContinuousClock.now - start)
                }
                try await Task.sleep(for: .milliseconds(2))
            }
            return nil
        }
        guard let elapsed = result.closureResult else {
            throw VireoError(.internal, "the guest printed no ready marker within 120 s")
        }
        return elapsed
    }

    /// `POST /v1/vms` to running, polled every 2 ms, and the driver's launch → ready time of that
    /// boot; the VM is deleted afterwards.
    func bootViaAPI(_ api: VireoClient, memoryMiB: Int, run: Int) async throws -> (total: Double, boot: Double) {
        let name = "bench-boot-\(UUID().uuidString.prefix(6).lowercased())"
        let start = ContinuousClock.now
        _ = try await api.createVM([
            "name": .string(name), "image": .string(image), "cpus": .number(1), "memory": .string("\(memoryMiB)MiB"),
        ])
        var elapsed: Double?
        var boot: Int?
        while elapsed == nil, ContinuousClock.now - start < .seconds(120) {
            let vm = try await api.vm(name)
            if vm.state == .running {
                elapsed = milliseconds(ContinuousClock.now - start)
                boot = vm.lastBootMs
            }
            if vm.state == .failed { throw VireoError(.internal, "VM \(name) failed: \(vm.message ?? "")") }
            try await Task.sleep(for: .milliseconds(2))
        }
        // Delete it and wait until it is gone, so that its QEMU winding down does not slow the next run.
        _ = try? await api.deleteVM(name)
        for _ in 0..<300 {
            guard (try? await api.vm(name)) != nil else { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        guard let elapsed else { throw VireoError(.internal, "VM \(name) was not running within 120 s") }
        guard let boot else {
            throw VireoError(.failedPrecondition, "the host's driver does not report boot times (use the qemu driver)")
        }
        return (elapsed, Double(boot))
    }

    func milliseconds(_ duration: Duration) -> Double { Self.milliseconds(duration) }

    static func milliseconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
    }
}
