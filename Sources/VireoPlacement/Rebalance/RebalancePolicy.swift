/// A live-rebalancing policy: a pure function from a cluster snapshot to a plan. The same
/// snapshot always gives the same plan, so a plan can be shown (`--explain`), checked and
/// replayed before anything moves.
public protocol RebalancePolicy: Sendable {
    /// The name it was created from ("threshold-0.7").
    var name: String { get }
    func plan(_ snapshot: RebalanceSnapshot) -> RebalancePlan
}

/// Builds a rebalancing policy from its name.
public enum RebalancePolicies {
    /// Names with their default parameters, for help texts and docs.
    public static let names = ["slo", "threshold", "threshold-0.8"]

    /// `slo`, `threshold` or `threshold-<fraction of host CPU>`. Throws `PolicyNameError` naming
    /// the bad part.
    /// `placement` gives the capacity rules destinations are checked against.
    public static func make(_ name: String, placement: PlacementSettings = .init()) throws(PolicyNameError)
        -> any RebalancePolicy
    {
        let lower = name.lowercased()
        switch lower {
        case "slo": return SLOPolicy(name: lower, settings: .init(placement: placement))
        case "threshold": return ThresholdPolicy(name: lower, settings: .init(placement: placement))
        default: break
        }
        let parts = lower.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 2, parts[0] == "threshold" else {
            throw PolicyNameError(
                name: name, reason: "expected slo, threshold or threshold-<fraction>, e.g. threshold-0.7")
        }
        guard let threshold = Double(parts[1]), threshold > 0, threshold <= 1 else {
            throw PolicyNameError(name: name, reason: "threshold '\(parts[1])' must be a number in (0, 1]")
        }
        return ThresholdPolicy(name: lower, settings: .init(threshold: threshold, placement: placement))
    }
}
