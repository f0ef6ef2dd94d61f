import ArgumentParser
import Foundation
import VireoAPI
import VireoClient
import VireoModel

/// Result of `vireo bench context`.
struct ContextBenchResult: Codable {
    var server: String
    var image: String
    var memoryMiB: Int
    /// `open --disposable --wait` of a context booted anew, request to answer, per run.
    var coldOpenMs: [Double]
    /// Per reset: `resetMs` as the host measured it (request reaching it → guest running again).
    var resetMs: [Int]
    /// Per reset: the hypervisor's part (`loadMs`).
    var loadMs: [Int]
    /// Per reset: `resetMs - loadMs`, Vireo's own share on the host.
    var vireoShareMs: [Int]
    /// Per reset: request to answer as this client saw it (adds HTTP and JSON both ways).
    var clientMs: [Double]
    var resetMedianMs: Double
    var resetMaxMs: Int
    var loadMedianMs: Double
    var vireoShareMedianMs: Double
    var vireoShareMaxMs: Int
    /// `open --disposable` answered from the host's pool, request to answer, per run (empty when
    /// the host keeps no pool of this image).
    var poolOpenMs: [Double]
    var poolOpenMaxMs: Double?
    /// What the pool's VMs held in the host's memory, by pool size, as the host reported it.
    var poolResidentMiB: Int?
    var poolSize: Int?
}

struct BenchContext: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "context",
        abstract: "Time context resets, opens from the pool and cold opens against a host.",
        discussion: """
            Best against a host's local API, e.g.:
              vireo up --context-pool web=2 --local-api 127.0.0.1:7481 &
              vireo bench context --server http://127.0.0.1:7481
            Opens a disposable (booted anew) and resets it --resets times, reporting the host's resetMs, \
            the hypervisor's part (loadMs) and the rest (Vireo's share); then, when the host keeps a pool \
            of the image, opens and closes --pool-opens contexts from it, waiting for the pool to refill \
            between them; then closes what it opened.
            """)

    @Option(help: "Resets to time.") var resets: Int = 20
    @Option(help: "Opens from the pool to time.") var poolOpens: Int = 5
    @Option(help: "Cold opens to time.") var coldOpens: Int = 2
    @Option(help: "Guest image.") var image: String = ContextValidation.defaultImage
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard (1...1000).contains(resets) else { throw ValidationError("--resets must be 1...1000 (got \(resets))") }
        guard (0...100).contains(poolOpens) else { throw ValidationError("--pool-opens must be 0...100 (got \(poolOpens))") }
        guard (1...20).contains(coldOpens) else { throw ValidationError("--cold-opens must be 1...20 (got \(coldOpens))") }
    }

    func run() async throws {
        let api = client.client(timeout: .seconds(400))
        let prefix = "bench-\(UUID().uuidString.prefix(6).lowercased())"
        func request(_ name: String, wait: Bool) throws -> ContextOpenRequest {
            try ContextValidation.fromAPIBody(
                .object(["name": .string(name), "kind": .string("disposable"), "image": .string(image), "wait": .bool(wait)]))
        }
        var opened: [String] = []
        defer {
            // Best effort: a failed run must not leave contexts behind.
            let names = opened
            let semaphore = DispatchSemaphore(value: 0)
            Task {
                for name in names { _ = try? await api.closeContext(name, host: nil) }
                semaphore.signal()
            }
            semaphore.wait()
        }
        // Cold opens. With a pool of this image, a request the pool cannot serve (a different
        // size) would boot anew too, but measure the same size: name the network so no pool member fits.
        var cold: [Double] = []
        for run in 0..<coldOpens {
            var open = try request("\(prefix)-cold-\(run)", wait: true)
            open.spec.network = .named("\(prefix)-cold")
            let start = ContinuousClock.now
            _ = try await api.openContext(open)
            cold.append(Self.milliseconds(ContinuousClock.now - start))
            opened.append(open.spec.name)
            stderr(String(format: "cold open %d: %.0f ms", run + 1, cold.last!))
        }
        let subject = opened[0]
        var resetMs: [Int] = []
        var loadMs: [Int] = []
        var clientMs: [Double] = []
        for run in 0..<resets {
            let start = ContinuousClock.now
            let context = try await api.resetContext(subject, host: nil, force: false)
            clientMs.append(Self.milliseconds(ContinuousClock.now - start))
            guard let reset = context.resetMs, let load = context.loadMs else {
                throw VireoError(.internal, "the host did not say how long the reset took")
            }
            resetMs.append(reset)
            loadMs.append(load)
            stderr("reset \(run + 1): \(reset) ms on the host (loading \(load) ms)")
        }
        // From the pool, if the host keeps one of this image.
        var poolOpen: [Double] = []
        var list = try await api.listContexts()
        let pool = list.pools.first { $0.image == image }
        if let pool, poolOpens > 0 {
            for run in 0..<poolOpens {
                try await waitForPool(api, image: image, ready: 1)
                let name = "\(prefix)-pool-\(run)"
                let start = ContinuousClock.now
                let context = try await api.openContext(try request(name, wait: false))
                poolOpen.append(Self.milliseconds(ContinuousClock.now - start))
                opened.append(name)
                guard context.fromPool else {
                    throw VireoError(.internal, "open did not come from the pool (its size differs from the pool's?)")
                }
                stderr(String(format: "open from the pool %d: %.0f ms", run + 1, poolOpen.last!))
                _ = try await api.closeContext(name, host: nil)
                opened.removeLast()
            }
            try await waitForPool(api, image: image, ready: pool.target)
            list = try await api.listContexts()
        }
        let resident = list.pools.first { $0.image == image }
        let share = zip(resetMs, loadMs).map { $0 - $1 }
        let result = ContextBenchResult(
            server: client.server, image: image, memoryMiB: try request("x", wait: false).spec.memoryMiB, coldOpenMs: cold,
            resetMs: resetMs, loadMs: loadMs, vireoShareMs: share, clientMs: clientMs,
            resetMedianMs: Self.median(resetMs.map(Double.init)), resetMaxMs: resetMs.max() ?? 0,
            loadMedianMs: Self.median(loadMs.map(Double.init)), vireoShareMedianMs: Self.median(share.map(Double.init)),
            vireoShareMaxMs: share.max() ?? 0, poolOpenMs: poolOpen, poolOpenMaxMs: poolOpen.max(),
            poolResidentMiB: resident?.residentMiB, poolSize: resident?.target)
        if output.output == .json { return try printJSON(result) }
        print(
            String(
                format: "%@ %d MiB: %d resets: median %.0f ms, max %d ms (loading median %.0f ms; Vireo median %.0f ms, "
                    + "max %d ms); cold open median %.0f ms",
                image, result.memoryMiB, resets, result.resetMedianMs, result.resetMaxMs, result.loadMedianMs,
                result.vireoShareMedianMs, result.vireoShareMaxMs, Self.median(cold)))
        if let max = result.poolOpenMaxMs {
            print(
                String(
                    format: "open from the pool: median %.0f ms, max %.0f ms; pool of %d holds %d MiB", Self.median(poolOpen),
                    max, result.poolSize ?? 0, result.poolResidentMiB ?? 0))
        }
    }

    private func waitForPool(_ api: VireoClient, image: String, ready: Int) async throws {
        let start = ContinuousClock.now
        while ContinuousClock.now - start < .seconds(300) {
            if let pool = try await api.listContexts().pools.first(where: { $0.image == image }), pool.ready >= ready {
                return
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw VireoError(.unavailable, "the host's pool of \(image) did not have \(ready) ready within 300 s")
    }

    static func median(_ values: [Double]) -> Double { BenchBoot.median(values) }
    static func milliseconds(_ duration: Duration) -> Double { BenchBoot.milliseconds(duration) }
}
