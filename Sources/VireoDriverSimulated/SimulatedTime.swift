import Synchronization

/// Where the simulated driver reads time from. Time is elapsed time since some origin; the
/// driver never sleeps, it computes state from the time it reads, so a manual time source makes
/// every run exactly repeatable.
public protocol SimulatedTime: Sendable {
    func now() -> Duration
}

/// Real elapsed time, for `vireo up --driver simulated`.
public struct WallTime: SimulatedTime {
    private let origin = ContinuousClock.now
    public init() {}
    public func now() -> Duration { ContinuousClock.now - origin }
}

/// Time that moves only when told to: tests and what-if runs.
public final class ManualTime: SimulatedTime {
    private let current: Mutex<Duration>
    public init(_ start: Duration = .zero) { current = Mutex(start) }
    public func now() -> Duration { current.withLock { $0 } }
    public func advance(by duration: Duration) { current.withLock { $0 += duration } }
}

/// SplitMix64: small, fast and seedable, so injected failures repeat run after run.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
