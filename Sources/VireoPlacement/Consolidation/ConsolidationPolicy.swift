/// How a policy's hosts draw power.
public enum PowerAccounting: Sendable, Equatable {
    /// Power follows CPU utilisation; an empty host is switched off (0 W).
    case followsUtilisation
    /// Every host draws its full-load power all the time (the non-power-aware baseline).
    case alwaysFullPower
}

/// A VM consolidation policy: where VMs start, and which migrations to start at each decision
/// point. Pure and synchronous — the same cluster always gives the same plan — so the simulator
/// and the live rebalancer can share it.
public protocol ConsolidationPolicy: AnyObject {
    /// The name it was created from ("thr-mmt-0.8").
    var name: String { get }
    var powerAccounting: PowerAccounting { get }
    /// A host for each VM when every VM asks for its full MIPS; nil where none fits.
    func initialPlacement(_ cluster: ConsolidationCluster) -> [Int?]
    /// Migrations to start now. A VM normally appears once; if a policy plans it twice (CloudSim's
    /// can), the last target wins and every entry counts as a migration.
    func plan(_ cluster: ConsolidationCluster) -> [PlannedMigration]
}

/// Builds a policy from its command-line name.
public enum ConsolidationPolicies {
    /// Names with their default parameters, for help texts and docs.
    public static let names = [
        "npa", "dvfs", "thr-mmt-0.8", "iqr-mmt-1.5", "mad-mmt-2.5", "lr-mmt-1.2", "lrr-mmt-1.2", "slo",
    ]

    /// `npa`, `dvfs`, `<detector>-mmt-<parameter>` with detector thr, iqr, mad, lr or lrr, and
    /// `slo` or `slo-<target utilisation>`. Throws `PolicyNameError` naming the bad part.
    public static func make(_ name: String) throws(PolicyNameError) -> any ConsolidationPolicy {
        let lower = name.lowercased()
        switch lower {
        case "npa": return NoMigrationPolicy(name: lower, powerAccounting: .alwaysFullPower)
        case "dvfs": return NoMigrationPolicy(name: lower, powerAccounting: .followsUtilisation)
        case "slo": return SLOConsolidation(name: lower)
        default: break
        }
        let parts = lower.split(separator: "-", omittingEmptySubsequences: false).map(String.init)
        if parts.count == 2, parts[0] == "slo" {
            guard let target = Double(parts[1]), target > 0.1, target < 1 else {
                throw PolicyNameError(name: name, reason: "target utilisation '\(parts[1])' must be a number in (0.1, 1)")
            }
            return SLOConsolidation(name: lower, settings: .init(targetUtilisation: target))
        }
        guard parts.count == 3, parts[1] == "mmt" else {
            throw PolicyNameError(
                name: name, reason: "expected one of \(names.joined(separator: ", ")) (parameters may change, e.g. thr-mmt-0.7)")
        }
        guard let parameter = Double(parts[2]), parameter.isFinite, parameter > 0 else {
            throw PolicyNameError(name: name, reason: "parameter '\(parts[2])' is not a positive number")
        }
        let detector: OverloadDetector
        switch parts[0] {
        case "thr":
            guard parameter <= 1 else {
                throw PolicyNameError(name: name, reason: "threshold \(parts[2]) must be at most 1")
            }
            detector = .staticThreshold(parameter)
        case "iqr": detector = .interQuartileRange(safety: parameter)
        case "mad": detector = .medianAbsoluteDeviation(safety: parameter)
        case "lr": detector = .localRegression(safety: parameter)
        case "lrr": detector = .robustLocalRegression(safety: parameter)
        default:
            throw PolicyNameError(name: name, reason: "unknown overload detector '\(parts[0])' (thr, iqr, mad, lr, lrr)")
        }
        return CloudSimConsolidation(name: lower, detector: detector)
    }
}

/// A policy name that does not parse.
public struct PolicyNameError: Error, Sendable, CustomStringConvertible {
    public var name: String
    public var reason: String
    public var description: String { "unknown policy '\(name)': \(reason)" }
}

/// The baselines: first-fit at full MIPS, then never migrate.
public final class NoMigrationPolicy: ConsolidationPolicy {
    public let name: String
    public let powerAccounting: PowerAccounting

    public init(name: String, powerAccounting: PowerAccounting) {
        self.name = name
        self.powerAccounting = powerAccounting
    }

    public func initialPlacement(_ cluster: ConsolidationCluster) -> [Int?] {
        var load = HostLoadTable(cluster, withHistory: false)
        var placement = [Int?](repeating: nil, count: cluster.vmCount)
        for vm in 0..<cluster.vmCount {
            for host in 0..<cluster.hostCount where load.fitsAtStart(vm, on: host, cluster) {
                load.add(vm, to: host, cluster)
                placement[vm] = host
                break
            }
        }
        return placement
    }

    public func plan(_ cluster: ConsolidationCluster) -> [PlannedMigration] { [] }
}
