import AsyncHTTPClient
import Foundation
import Synchronization

/// An open-loop HTTP load against one URL, as users arrive: requests start at a fixed rate whether
/// or not earlier ones have finished, at most `maxInFlight` at once (a request due while that many
/// are in flight is not sent, and counted as skipped). Bounded in time and count; after a stall (the
/// guest paused for a migration) it carries on at the rate rather than bursting to catch up.
final class LoadGenerator: Sendable {
    struct Counts: Codable, Equatable {
        var sent = 0
        var failed = 0
        var skipped = 0
    }

    let url: String
    private let stopped = Mutex(false)
    private let counts = Mutex(Counts())
    private let inFlight = Mutex(0)
    private let rate: Mutex<Double>

    /// `rate`: requests a second; `setRate` changes it while the load runs.
    init(url: String, rate: Double) {
        self.url = url
        self.rate = Mutex(rate)
    }

    var sent: Int { counts.withLock { $0.sent } }
    var snapshot: Counts { counts.withLock { $0 } }
    func stop() { stopped.withLock { $0 = true } }
    var currentRate: Double { rate.withLock { $0 } }
    func setRate(_ newRate: Double) { rate.withLock { $0 = newRate } }

    func run(maxInFlight: Int, limit: Duration, maxRequests: Int = 100_000) async {
        let clock = ContinuousClock()
        let deadline = clock.now + limit
        var due = clock.now
        await withDiscardingTaskGroup { group in
            while !stopped.withLock({ $0 }), clock.now < deadline, sent < maxRequests, !Task.isCancelled {
                let admitted = inFlight.withLock { n in
                    guard n < maxInFlight else { return false }
                    n += 1
                    return true
                }
                if admitted {
                    counts.withLock { $0.sent += 1 }
                    group.addTask {
                        if await !self.get() { self.counts.withLock { $0.failed += 1 } }
                        self.inFlight.withLock { $0 -= 1 }
                    }
                } else {
                    counts.withLock { $0.skipped += 1 }
                }
                due += .seconds(1 / currentRate)
                if clock.now - due > .seconds(1) { due = clock.now }
                try? await Task.sleep(until: due, clock: clock)
            }
        }
    }

    /// One request, its answer read to the end (so the connection is kept); whether it was a 200.
    private func get() async -> Bool {
        do {
            let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(5))
            _ = try await response.body.collect(upTo: 1 << 16)
            return response.status == .ok
        } catch {
            return false
        }
    }
}
