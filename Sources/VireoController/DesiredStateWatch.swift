import Synchronization
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
public final class DesiredStateWatch: Sendable {
    private struct Entry {
        var generation = 0
        /// Answered with the generation, or nil once the watch is closed.
        var waiters: [Int: CheckedContinuation<Int?, Never>] = [:]
    }
    private struct State {
        var hosts: [HostID: Entry] = [:]
        var nextWaiter = 0
        var closed = false
    }
    private let state = Mutex(State())
    /// Generations start here, so that those of a restarted controller are unlikely to equal what
    /// an agent saw before the restart.
    private let base: Int

    init(base: Int = Int.random(in: 1..<(1 << 40))) { self.base = base }

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
                for waiter in entry.waiters.values { answers.append((waiter, base + entry.generation)) }
                entry.waiters = [:]
                s.hosts[host] = entry
            }
        }
        for (waiter, generation) in answers { waiter.resume(returning: generation) }
    }

    /// Ends every wait, now and from now on, with nil: the controller is stopping, and
    /// its HTTP server waits for every response to finish before it stops.
    public func close() {
        let waiters = state.withLock { s in
            s.closed = true
            defer { for host in s.hosts.keys { s.hosts[host]?.waiters = [:] } }
            return s.hosts.values.flatMap(\.waiters.values)
        }
        for waiter in waiters { waiter.resume(returning: nil) }
    }

    /// Returns the host's generation once it differs from `known`, or after `timeout` (then it
    /// may equal `known`), or at cancellation; nil once the watch is closed.
    public func wait(host: HostID, after known: Int, timeout: Duration) async -> Int? {
        let (current, closed, id) = state.withLock { s in
            s.nextWaiter += 1
            return (base + (s.hosts[host]?.generation ?? 0), s.closed, s.nextWaiter)
        }
        if closed { return nil }
        guard current == known else { return current }
        enum Outcome: Sendable {
            case answered(Int?)
            case timedOut
        }
        let outcome = await withTaskGroup(of: Outcome.self) { group in
            group.addTask {
                await withTaskCancellationHandler {
                    let answer = await withCheckedContinuation { (continuation: CheckedContinuation<Int?, Never>) in
                        let now = self.state.withLock { s -> Int?? in
                            let entry = s.hosts[host] ?? Entry()
                            if s.closed { return .some(nil) }
                            if self.base + entry.generation != known || Task.isCancelled {
                                return self.base + entry.generation
                            }
                            s.hosts[host, default: Entry()].waiters[id] = continuation
                            return .none
                        }
                        if let now { continuation.resume(returning: now) }
                    }
                    return .answered(answer)
                } onCancel: {
                    self.release(id, of: host)
                }
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return .timedOut
            }
            let first = await group.next() ?? .timedOut
            group.cancelAll()
            return first
        }
        switch outcome {
        case .answered(let generation): return generation
        case .timedOut: return generation(of: host)
        }
    }

    /// Answers the waiter `id` now with the current generation (its wait ended another way).
    private func release(_ id: Int, of host: HostID) {
        let found = state.withLock { s -> (CheckedContinuation<Int?, Never>, Int)? in
            guard let waiter = s.hosts[host]?.waiters.removeValue(forKey: id) else { return nil }
            return (waiter, base + (s.hosts[host]?.generation ?? 0))
        }
        if let (waiter, generation) = found { waiter.resume(returning: generation) }
    }

    /// Agents waiting now (for tests and the bench).
    public var waiting: Int { state.withLock { $0.hosts.values.reduce(0) { $0 + $1.waiters.count } } }
}
