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
