import VireoModel

/// How a policy's hosts draw power (what the simulator accounts).
public enum PowerAccounting: Sendable, Equatable {
    /// Power follows CPU utilisation; an empty host is switched off (0 W).
    case followsUtilisation
    /// Every host draws its full-load power all the time (the non-power-aware baseline).
    case alwaysFullPower
}

/// A placement policy: where VMs start, and which live migrations to start now. Every policy —
/// Vireo's `slo`, the black-box `threshold`, CloudSim's heuristics and baselines — works on the
/// one `PlacementCluster`, runs the one `FeasibilityChain`, and returns a `RebalancePlan` with
/// typed reasons, so the controller and the simulator run exactly the same code.
///
/// Pure and synchronous: the same cluster always gives the same plan, so a plan can be shown
/// (`--explain`), checked and replayed before anything moves.
public protocol PlacementPolicy: Sendable {
    /// The name it was created from ("thr-mmt-0.8").
    var name: String { get }
    var powerAccounting: PowerAccounting { get }
    /// A host for each VM, every VM asking for what the cluster says it asks for now (its whole
    /// size under CloudSim's start rule) — the start of a simulation, when all VMs are created at
    /// once; nil where none fits. VMs already running keep their host.
    func initialPlacement(_ cluster: PlacementCluster) -> [Int?]
    /// The migrations to start now, in order, with what was weighed.
    func plan(_ cluster: PlacementCluster) -> RebalancePlan
}

extension PlacementPolicy {
    public var powerAccounting: PowerAccounting { .followsUtilisation }

    /// First fit in VM order through the feasibility chain.
    public func initialPlacement(_ cluster: PlacementCluster) -> [Int?] {
        FirstFit.place(cluster)
    }
}

/// First fit, VM after VM, each placed VM counted before the next.
enum FirstFit {
    static func place(_ cluster: PlacementCluster) -> [Int?] {
        var loads = HostLoads(cluster)
        let chain = FeasibilityChain(purpose: .start)
        var placement = [Int?](repeating: nil, count: cluster.vmCount)
        for vm in 0..<cluster.vmCount {
            if cluster.vmHost[vm] >= 0 {
                placement[vm] = cluster.vmHost[vm]
                continue
            }
            let candidate = loads.candidate(vm)
            for host in 0..<cluster.hostCount {
                guard chain.passes(candidate, on: host, loads) else { continue }
                loads.add(vm, to: host)
                placement[vm] = host
                break
            }
        }
        return placement
    }
}

/// Builds any policy from its name, for the controller (`vireo plan --policy`, `vireo rebalance
/// set`) and the simulator (`vireo sim --policy`) alike.
public enum Policies {
    /// Names with their default parameters, for help texts and docs.
    public static let names = [
        "slo", "threshold", "npa", "dvfs", "thr-mmt-0.8", "iqr-mmt-1.5", "mad-mmt-2.5", "lr-mmt-1.2", "lrr-mmt-1.2",
    ]

    /// `slo` or `slo-<target utilisation>`, `threshold` or `threshold-<fraction>`, `npa`, `dvfs`,
    /// and `<detector>-mmt-<parameter>` with detector thr, iqr, mad, lr or lrr. Throws
    /// `PolicyNameError` naming the bad part.
    public static func make(_ name: String) throws(PolicyNameError) -> any PlacementPolicy {
        let lower = name.lowercased()
        switch lower {
        case "npa": return NoMigrationPolicy(name: lower, powerAccounting: .alwaysFullPower)
        case "dvfs": return NoMigrationPolicy(name: lower, powerAccounting: .followsUtilisation)
        case "slo": return SLOPolicy(name: lower)
        case "threshold": return ThresholdPolicy(name: lower)
        default: break
        }
        let parts = lower.split(separator: "-", omittingEmptySubsequences: false).map(String.init)
        if parts.count == 2, parts[0] == "slo" {
            guard let target = Double(parts[1]), target > 0.1, target < 1 else {
                throw PolicyNameError(name: name, reason: "target utilisation '\(parts[1])' must be a number in (0.1, 1)")
            }
            return SLOPolicy(name: lower, settings: .init(packing: .init(targetUtilisation: target)))
        }
        if parts.count == 2, parts[0] == "threshold" {
            guard let threshold = Double(parts[1]), threshold > 0, threshold <= 1 else {
                throw PolicyNameError(name: name, reason: "threshold '\(parts[1])' must be a number in (0, 1]")
            }
            return ThresholdPolicy(name: lower, settings: .init(threshold: threshold))
        }
        guard parts.count == 3, parts[1] == "mmt" else {
            throw PolicyNameError(
                name: name,
                reason:
                    "expected one of \(names.joined(separator: ", ")) (parameters may change, e.g. thr-mmt-0.7, threshold-0.7)"
            )
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
        return CloudSimPolicy(name: lower, detector: detector)
    }
}

/// A policy name that does not parse.
public struct PolicyNameError: Error, Sendable, CustomStringConvertible {
    public var name: String
    public var reason: String
    public var description: String { "unknown policy '\(name)': \(reason)" }
}

/// The baselines: first fit at whole size, then never migrate.
public struct NoMigrationPolicy: PlacementPolicy {
    public let name: String
    public let powerAccounting: PowerAccounting

    public init(name: String, powerAccounting: PowerAccounting) {
        self.name = name
        self.powerAccounting = powerAccounting
    }

    public func plan(_ cluster: PlacementCluster) -> RebalancePlan {
        RebalancePlan(policy: name, notes: ["\(name) never migrates"])
    }
}
