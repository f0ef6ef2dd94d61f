/// Lifecycle of a VM as the controller records it.
///
/// ```
/// pending ─▶ scheduled ─▶ starting ─▶ running ─▶ stopping ─▶ stopped
///     │           │            │          │           │          │
///     └───────────┴────────────┴──── failed ◀─────────┴──────────┘
/// any state ─▶ deleting ─▶ (record removed)
/// ```
/// `pending`: no host chosen yet. `scheduled`: a host is chosen, its agent has not started the VM.
/// A stopped or failed VM goes back to `starting` when started again; a running VM that its
/// host no longer reports goes back to `scheduled` to be started again there.
public enum VMState: String, Sendable, Codable, CaseIterable, Comparable {
    case pending, scheduled, starting, running, stopping, stopped, failed, deleting

    /// Whether the controller may move a VM from `self` to `next`.
    public func canTransition(to next: VMState) -> Bool {
        next == self || next == .deleting || VMState.successors[self]!.contains(next)
    }

    private static let successors: [VMState: Set<VMState>] = [
        .pending: [.scheduled, .stopped, .failed],
        .scheduled: [.pending, .starting, .running, .stopping, .stopped, .failed],
        // → pending: its host was lost and it restarts elsewhere, where no host can take it yet.
        .starting: [.pending, .running, .stopping, .stopped, .failed],
        .running: [.pending, .scheduled, .starting, .stopping, .stopped, .failed],
        .stopping: [.pending, .scheduled, .starting, .running, .stopped, .failed],
        .stopped: [.pending, .starting, .running, .stopping, .failed],
        .failed: [.pending, .starting, .running, .stopped],
        .deleting: [],
    ]

    private var order: Int { VMState.allCases.firstIndex(of: self)! }
    public static func < (a: VMState, b: VMState) -> Bool { a.order < b.order }
}

/// What the user wants a VM to be. The agent converges the real VM towards it.
public enum PowerIntent: String, Sendable, Codable {
    case running, stopped, deleted
}
