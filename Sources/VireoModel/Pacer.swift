import Foundation

/// Spreads a long batch over time so that it takes at most `share` of one core: between units of
/// work it sleeps in proportion to the time the work since the last sleep took. A batch that comes
/// once a minute (a usage-history step: 100,000 rows) then never takes a core away from the
/// requests served beside it for long; it takes 1 / `share` times as long instead.
///
/// It sleeps the calling thread: for synchronous work on a thread of its own (a database's writer
/// queue, a dispatch queue), never on Swift's cooperative pool, whose few threads (one per core)
/// serve every request.
public struct Pacer: Sendable {
    /// The fraction of one core the work may take, in (0, 1]; 1 never sleeps.
    public let share: Double
    /// How long work runs between two sleeps at least: sleeping after less would cost more in
    /// wake-ups than it spreads.
    static let slice: Duration = .milliseconds(2)
    private var sliceStart = ContinuousClock.now
    private var units = 0
    private let sleep: @Sendable (Double) -> Void

    /// `sleep` rests the thread for the seconds given (replaced in tests).
    public init(share: Double, sleep: @escaping @Sendable (Double) -> Void = { Thread.sleep(forTimeInterval: $0) }) {
        precondition(share > 0 && share <= 1, "a pacer's share is a fraction of a core in (0, 1]")
        self.share = share
        self.sleep = sleep
    }

    /// Called after `units` units of work (rows); once 64 have been done since it last looked at
    /// the clock, it looks, and sleeps if the slice has run.
    public mutating func pause(after units: Int = 1) {
        guard share < 1 else { return }
        self.units += units
        guard self.units >= 64 else { return }
        self.units = 0
        let worked = ContinuousClock.now - sliceStart
        guard worked >= Self.slice else { return }
        sleep(worked.secondsValue * (1 - share) / share)
        sliceStart = .now
    }
}

/// When a standby controller loads its next snapshot of the cluster to serve reads from.
///
/// A load reads and decodes the whole cluster: tens of milliseconds for a thousand VMs, about two
/// seconds for 100,000 (`vireo bench standby`). Loading again at once after each would keep a core
/// busy for ever, so after a load it waits so that loading takes at most `share` of one core, and
/// never less than `refresh`. A snapshot that is already `maximumAge` old when it is made can never
/// be served (each answer must be younger): then it waits twice as long after each such load, up
/// to `maximumWait`, and reads go to the leader meanwhile.
public struct SnapshotSchedule: Sendable {
    public var refresh: Duration
    public var maximumAge: Duration
    /// The fraction of one core loading may take, in (0, 1].
    public var share: Double
    public var maximumWait: Duration
    /// Loads in a row whose snapshot was too old to serve.
    public private(set) var tooSlow = 0

    public init(
        refresh: Duration = .seconds(1), maximumAge: Duration = .seconds(5), share: Double = 0.25,
        maximumWait: Duration = .seconds(300)
    ) {
        precondition(share > 0 && share <= 1, "a share is a fraction of a core in (0, 1]")
        self.refresh = refresh
        self.maximumAge = maximumAge
        self.share = share
        self.maximumWait = maximumWait
    }

    /// Whether a load that took `took` made a snapshot that can be served.
    public func servable(_ took: Duration) -> Bool { took < maximumAge }

    /// How long to wait before the next load, after one that took `took`.
    public mutating func wait(after took: Duration) -> Duration {
        guard servable(took) else {
            tooSlow += 1
            let doubled = (0..<min(tooSlow, 20)).reduce(maximumAge) { wait, _ in wait * 2 }
            return min(maximumWait, doubled)
        }
        tooSlow = 0
        return max(refresh, took * ((1 - share) / share))
    }
}
