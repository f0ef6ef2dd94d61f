import HeapModule
import Synchronization
import VireoAPI
import VireoModel

/// A generation per host that moves whenever what the host should do changes (a VM placed on it,
/// started, stopped, deleted or moved away, a migration it takes part in, a context verb for it, an
/// application of one of its VMs). Agents wait on it (`GET /v1/agent/watch`) between heartbeats and
/// heartbeat at once when it moves, so a request reaches its host in milliseconds while heartbeats
/// stay seconds apart: the cost of a quiet cluster is its heartbeats, and the cost of a change is
/// one answer to the one host it concerns.
///
/// Generations live in memory. A controller that restarts starts them again, so a waiting agent
/// sees a different number and heartbeats once more, which is what it should do after a restart.
///
/// Every agent of the cluster waits here at once (10,000 in `vireo bench cluster`), so a wait is
/// one continuation and a deadline: one reaper task, not a timer per wait, ends those that expire,
/// taking them from a heap ordered by deadline (looking at every wait four times a second cost
/// 6 % of the controller at 10,000 agents, and held the lock each heartbeat takes).
public final class DesiredStateWatch: Sendable {
    private struct Waiter {
        var host: HostID
        /// Answered with the generation, or nil once the watch is closed.
        var continuation: CheckedContinuation<Int?, Never>
    }
    private struct Entry {
        var generation = 0
        var waiters: Set<Int> = []
    }
    private struct Deadline: Comparable {
        var at: ContinuousClock.Instant
        var waiter: Int
        static func < (a: Deadline, b: Deadline) -> Bool { (a.at, a.waiter) < (b.at, b.waiter) }
    }
    private struct State {
        var hosts: [HostID: Entry] = [:]
        var waiters: [Int: Waiter] = [:]
        /// Every wait's deadline, including those of waits answered since (skipped when reached).
        var deadlines = Heap<Deadline>()
        var nextWaiter = 0
        var closed = false
        var reaper: Task<Void, Never>?

        mutating func remove(_ id: Int) -> Waiter? {
            guard let waiter = waiters.removeValue(forKey: id) else { return nil }
            hosts[waiter.host]?.waiters.remove(id)
            return waiter
        }
    }
    private let state = Mutex(State())
    /// Generations start here, so that those of a restarted controller are unlikely to equal what
    /// an agent saw before the restart.
    private let base: Int
    /// How often the reaper looks for expired waits: how late a wait may end past its timeout.
    static let reapInterval = Duration.milliseconds(250)

    init(base: Int = Int.random(in: 1..<(1 << 40))) { self.base = base }

    deinit { state.withLock { $0.reaper?.cancel() } }

    /// The host's generation now.
    public func generation(of host: HostID) -> Int {
        base + state.withLock { $0.hosts[host]?.generation ?? 0 }
    }

    /// Moves the generation of each host and answers whoever waits on them.
    func bump(_ hosts: some Sequence<HostID>) {
        var answers: [(CheckedContinuation<Int?, Never>, Int)] = []
        state.withLock { s in
            for host in hosts {
                var entry = s.hosts[host] ?? Entry()
                entry.generation += 1
                for id in entry.waiters {
                    if let waiter = s.waiters.removeValue(forKey: id) {
                        answers.append((waiter.continuation, base + entry.generation))
                    }
                }
                entry.waiters = []
                s.hosts[host] = entry
            }
        }
        for (waiter, generation) in answers { waiter.resume(returning: generation) }
    }

    /// Ends every wait, now and from now on, with nil: the controller is stopping, and its HTTP
    /// server waits for every response to finish before it stops.
    public func close() {
        let waiters = state.withLock { s in
            s.closed = true
            s.reaper?.cancel()
            s.reaper = nil
            defer {
                s.waiters = [:]
                s.deadlines = Heap()
                for host in s.hosts.keys { s.hosts[host]?.waiters = [] }
            }
            return s.waiters.values.map(\.continuation)
        }
        for waiter in waiters { waiter.resume(returning: nil) }
    }

    /// Returns the host's generation once it differs from `known`, or after `timeout` (then it
    /// may equal `known`; up to `reapInterval` late), or at cancellation; nil once the watch is
    /// closed.
    public func wait(host: HostID, after known: Int, timeout: Duration) async -> Int? {
        let (current, closed, id) = state.withLock { s in
            s.nextWaiter += 1
            return (base + (s.hosts[host]?.generation ?? 0), s.closed, s.nextWaiter)
        }
        if closed { return nil }
        guard current == known else { return current }
        let deadline = ContinuousClock.now + timeout
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Int?, Never>) in
                let now = state.withLock { s -> Int?? in
                    let generation = base + (s.hosts[host]?.generation ?? 0)
                    if s.closed { return .some(nil) }
                    if generation != known || Task.isCancelled { return generation }
                    s.hosts[host, default: Entry()].waiters.insert(id)
                    s.waiters[id] = Waiter(host: host, continuation: continuation)
                    s.deadlines.insert(Deadline(at: deadline, waiter: id))
                    if s.reaper == nil { s.reaper = Task { [weak self] in await self?.reap() } }
                    return .none
                }
                if let now { continuation.resume(returning: now) }
            }
        } onCancel: {
            self.end(id, of: host)
        }
    }

    /// Ends, with the current generation, the waits whose deadline passed; until none is left.
    private func reap() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: Self.reapInterval)
            let now = ContinuousClock.now
            let (expired, done) = state.withLock { s -> ([(CheckedContinuation<Int?, Never>, Int)], Bool) in
                var expired: [(CheckedContinuation<Int?, Never>, Int)] = []
                while let next = s.deadlines.min, next.at <= now {
                    s.deadlines.removeMin()
                    guard let waiter = s.remove(next.waiter) else { continue }
                    expired.append((waiter.continuation, base + (s.hosts[waiter.host]?.generation ?? 0)))
                }
                if s.waiters.isEmpty {
                    s.reaper = nil
                    s.deadlines = Heap()
                }
                return (expired, s.waiters.isEmpty)
            }
            for (waiter, generation) in expired { waiter.resume(returning: generation) }
            if done { return }
        }
    }

    /// Answers the waiter `id` now with the current generation (its request was cancelled).
    private func end(_ id: Int, of host: HostID) {
        let found = state.withLock { s -> (CheckedContinuation<Int?, Never>, Int)? in
            guard let waiter = s.remove(id) else { return nil }
            return (waiter.continuation, base + (s.hosts[host]?.generation ?? 0))
        }
        if let (waiter, generation) = found { waiter.resume(returning: generation) }
    }

    /// Agents waiting now (for tests and the bench).
    public var waiting: Int { state.withLock { $0.waiters.count } }
}

/// The desired state last sent to each host, named by a revision: a heartbeat from an agent that
/// holds that revision is answered `unchanged`. Revisions start from a random number, so an agent
/// never takes a restarted controller's revision for the one it holds.
struct SentDesiredStates {
    private var sent: [HostID: (revision: Int, state: DesiredHostState)] = [:]
    private var next = Int.random(in: 1..<(1 << 40))

    /// The revision of `state` for `host`: the one sent last if `state` equals it, else a new one.
    mutating func revision(of state: DesiredHostState, for host: HostID) -> Int {
        if let last = sent[host], last.state == state { return last.revision }
        next += 1
        sent[host] = (next, state)
        return next
    }
}
