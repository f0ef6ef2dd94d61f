import Foundation
import Synchronization
import VireoAPI
import VireoModel

/// The controller's side of desktop contexts: what each host last said about its contexts, and
/// the verbs waiting to be carried to hosts.
///
/// Hosts are the contexts' authority (they open, reset and close them while the controller is
/// away), so the controller keeps no copy of its own in the store: its view of a host's contexts
/// is the host's last report, replaced whole at every heartbeat. Nothing can be lost or
/// duplicated by reconciling: there is nothing to reconcile but the journal, whose entries are
/// numbered by the host and recorded here once each.
final class ContextDesk: Sendable {
    struct HostEntry {
        var name: String
        var report: HostContexts
        /// The highest journal entry recorded as an event.
        var recordedSeq = 0
    }

    struct Waiting {
        var host: HostID
        var command: ContextCommand
        var continuation: CheckedContinuation<ContextCommandResult, any Error>
    }

    struct State {
        var hosts: [HostID: HostEntry] = [:]
        var waiting: [String: Waiting] = [:]
        var wake: [@Sendable (HostID) -> Void] = []
    }

    private let state = Mutex(State())

    /// Every context the hosts reported, and their pools.
    func all() -> (items: [(HostID, Context)], pools: [ContextPoolStatus]) {
        state.withLock { s in
            var items: [(HostID, Context)] = []
            var pools: [ContextPoolStatus] = []
            for (id, entry) in s.hosts {
                items += entry.report.items.map { (id, $0) }
                pools += entry.report.pools
            }
            return (items, pools)
        }
    }

    /// Takes a host's report: its contexts replace what it said before, answers resume their
    /// callers, and returns the journal entries not recorded yet.
    func take(_ report: HostContexts, from host: HostID, name: String) -> [ContextJournalEntry] {
        var resumed: [(CheckedContinuation<ContextCommandResult, any Error>, Result<ContextCommandResult, any Error>)] = []
        let fresh = state.withLock { s -> [ContextJournalEntry] in
            var entry = s.hosts[host] ?? HostEntry(name: name, report: report)
            entry.name = name
            entry.report = HostContexts(items: report.items, pools: report.pools)
            let fresh = (report.journal ?? []).filter { $0.seq > entry.recordedSeq }
            entry.recordedSeq = max(entry.recordedSeq, fresh.map(\.seq).max() ?? 0)
            s.hosts[host] = entry
            for result in report.results ?? [] {
                guard let waiting = s.waiting.removeValue(forKey: result.id) else { continue }
                if let error = result.error {
                    resumed.append((waiting.continuation, .failure(error)))
                } else {
                    resumed.append((waiting.continuation, .success(result)))
                }
            }
            return fresh
        }
        for (continuation, result) in resumed { continuation.resume(with: result) }
        return fresh
    }

    /// The journal position recorded for a host: what the reply acknowledges.
    func recordedSeq(of host: HostID) -> Int? {
        state.withLock { $0.hosts[host]?.recordedSeq }
    }

    /// An agent (re)registered: its journal may have started over (a new state directory).
    func restart(_ host: HostID) {
        state.withLock { $0.hosts[host]?.recordedSeq = 0 }
    }

    /// The commands waiting for a host's answer.
    func commands(for host: HostID) -> [ContextCommand]? {
        state.withLock { s in
            let commands = s.waiting.values.filter { $0.host == host }.map(\.command).sorted { $0.id < $1.id }
            return commands.isEmpty ? nil : commands
        }
    }

    /// Sends `command` to `host` with its next reply and waits for the answer, at most `timeout`.
    func send(_ command: ContextCommand, to host: HostID, hostName: String, timeout: Duration) async throws
        -> ContextCommandResult
    {
        try await withThrowingTaskGroup(of: ContextCommandResult?.self) { group in
            group.addTask {
                try await withCheckedThrowingContinuation { continuation in
                    let wake = self.state.withLock { s in
                        s.waiting[command.id] = Waiting(host: host, command: command, continuation: continuation)
                        return s.wake
                    }
                    for call in wake { call(host) }
                }
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            while let next = try await group.next() {
                if let result = next { return result }
                // Timed out: whoever still waits is told so, once.
                if let waiting = state.withLock({ $0.waiting.removeValue(forKey: command.id) }) {
                    waiting.continuation.resume(
                        throwing: VireoError(
                            .unavailable,
                            "host \(hostName) did not answer '\(command.action.rawValue) \(command.name)' within \(timeout); "
                                + "see `vireo context list` for what it did"))
                }
            }
            throw VireoError(.internal, "context command ended without an answer")
        }
    }

    /// Calls `wake` with the host whenever a command is waiting to be sent to it (its agent, told
    /// through `DesiredStateWatch`, acts at once instead of at its next heartbeat).
    func onCommand(_ wake: @escaping @Sendable (HostID) -> Void) {
        state.withLock { $0.wake.append(wake) }
    }
}
