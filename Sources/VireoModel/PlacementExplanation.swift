import Foundation

/// Why a host could not take a VM, for a new VM and for a move alike: every policy runs the same
/// chain of filters and reports the first one a host fails. Structured, so placement stays cheap,
/// programs can check it, and people get a sentence.
public enum FilterReason: Sendable, Codable, Equatable, CustomStringConvertible {
    case hostNotReady(state: HostState)
    case notPinnedHost(pinned: String)
    case missingCapability(Capability)
    /// vCPUs allocated against the host's cores (with overcommit).
    case insufficientCPU(requested: Int, free: Int)
    case insufficientMemory(requestedMiB: Int, freeMiB: Int)
    /// The CPU the VM asks for now does not fit the host's free CPU (in the cluster's CPU unit).
    case insufficientCPUCapacity(requested: Double, free: Double)
    /// One virtual CPU needs more than one of the host's cores gives.
    case coreTooSmall(needed: Double, core: Double)
    /// The host already runs a VM of the same anti-affinity group.
    case antiAffinity(group: String, vm: String)
    /// The host already takes part in as many migrations as allowed.
    case hostMigrationBudget(limit: Int)
    /// After the move the host's predicted CPU would be above the limit (it would become the next
    /// host to relieve).
    case wouldOverload(predicted: Double, limit: Double)
    /// The policy's overload test says the host would be overloaded with the VM.
    case wouldBeOverloaded(utilisation: Double, test: String)
    /// The VM's memory would not get across this link.
    case doesNotConverge(MigrationCostError)
    /// The VM left this host recently: going back is how moves go back and forth.
    case recentlyLeft(secondsAgo: Double, blockSeconds: Double)
    /// A live move between hypervisor families (QEMU's and libvirt's, say) cannot be done:
    /// their migration streams differ. A cold move can.
    case otherHypervisor(source: String, destination: String)
    /// A reason stored before reasons were typed: its sentence.
    case recorded(sentence: String)

    public var description: String {
        switch self {
        case .hostNotReady(let state): "host is \(state.rawValue)"
        case .notPinnedHost(let pinned): "VM is pinned to host '\(pinned)'"
        case .missingCapability(let c): "driver lacks capability \(c.rawValue)"
        case .insufficientCPU(let requested, let free): "insufficient CPU: requested \(requested), free \(free)"
        case .insufficientMemory(let requested, let free):
            "insufficient memory: requested \(ByteSize.format(mib: requested)), free \(ByteSize.format(mib: free))"
        case .insufficientCPUCapacity(let requested, let free):
            "insufficient CPU: asks for \(NumberText.decimal(requested, 2)), \(NumberText.decimal(free, 2)) free"
        case .coreTooSmall(let needed, let core):
            "a core gives \(NumberText.decimal(core, 2)), one vCPU needs \(NumberText.decimal(needed, 2))"
        case .antiAffinity(let group, let vm): "anti-affinity group '\(group)': already runs \(vm)"
        case .hostMigrationBudget(let limit): "already in \(limit) migration(s), the per-host budget"
        case .wouldOverload(let predicted, let limit):
            "predicted CPU \(NumberText.percent(predicted)) after the move, above the \(NumberText.percent(limit)) limit"
        case .wouldBeOverloaded(let utilisation, let test):
            "would be overloaded at \(NumberText.percent(utilisation)) CPU (\(test))"
        case .doesNotConverge(let error): error.description
        case .recentlyLeft(let ago, let block):
            "the VM left this host \(DurationText.format(ago)) ago (no return within \(DurationText.format(block)))"
        case .otherHypervisor(let source, let destination):
            "another hypervisor family (\(destination), the VM is on \(source)): no live move between them; a cold one works"
        case .recorded(let sentence): sentence
        }
    }

    /// A short stable key for counting reasons (`capacity`, `host-state`, ...).
    public var kind: String {
        switch self {
        case .hostNotReady: "host-state"
        case .notPinnedHost: "pinned"
        case .missingCapability: "capability"
        case .otherHypervisor: "hypervisor"
        case .insufficientCPU, .insufficientMemory, .insufficientCPUCapacity, .coreTooSmall: "capacity"
        case .antiAffinity: "anti-affinity"
        case .hostMigrationBudget: "budget"
        case .wouldOverload, .wouldBeOverloaded: "would-overload"
        case .doesNotConverge: "convergence"
        case .recentlyLeft: "recently-left"
        case .recorded: "recorded"
        }
    }
}

/// Why a live migration would not finish.
public enum MigrationCostError: Error, Sendable, Codable, Equatable, CustomStringConvertible {
    /// The guest dirties memory at least as fast as the link sends it: pre-copy never shrinks.
    case dirtyRateExceedsBandwidth(dirtyMiBPerSecond: Double, bandwidthMiBPerSecond: Double)
    /// Pre-copy shrinks too slowly to reach the allowed downtime within the allowed passes.
    case tooManyIterations(maxIterations: Int, remainingMiB: Double)
    /// No bandwidth between the hosts.
    case noBandwidth

    public var description: String {
        switch self {
        case .dirtyRateExceedsBandwidth(let dirty, let bandwidth):
            "does not converge: dirties \(NumberText.decimal(dirty, 0)) MiB/s, link sends \(NumberText.decimal(bandwidth, 0)) MiB/s"
        case .tooManyIterations(let max, let remaining):
            "does not converge: \(NumberText.decimal(remaining, 0)) MiB still dirty after \(max) passes"
        case .noBandwidth: "does not converge: no bandwidth between the hosts"
        }
    }
}

/// Numbers in sentences, without Foundation's formatters.
public enum NumberText {
    /// `value` with `digits` decimals.
    public static func decimal(_ value: Double, _ digits: Int) -> String {
        guard value.isFinite else { return value > 0 ? "∞" : "-∞" }
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let rounded = (abs(value) * scale).rounded() / scale
        let sign = value < 0 && rounded > 0 ? "-" : ""
        let whole = Int(rounded)
        guard digits > 0 else { return sign + String(whole) }
        let fraction = Int(((rounded - Double(whole)) * scale).rounded())
        let fractionText = String(fraction)
        return sign + String(whole) + "." + String(repeating: "0", count: digits - fractionText.count) + fractionText
    }

    /// `0.734` → `73%`.
    public static func percent(_ fraction: Double) -> String { "\(decimal(fraction * 100, 0))%" }
}

/// How a host that passed every filter scored. Scores are in [0, 1]; higher is better.
public struct HostScore: Sendable, Codable, Equatable {
    /// Fraction of the host's (overcommitted) vCPU capacity left after placing the VM.
    public var cpuFreeAfter: Double
    /// Fraction of the host's memory left after placing the VM.
    public var memoryFreeAfter: Double
    public var total: Double

    public init(cpuFreeAfter: Double, memoryFreeAfter: Double, total: Double) {
        self.cpuFreeAfter = cpuFreeAfter
        self.memoryFreeAfter = memoryFreeAfter
        self.total = total
    }
}

/// The verdict on one host for one placement.
public struct HostVerdict: Sendable, Codable, Equatable {
    public var hostID: HostID
    public var hostName: String
    public var filtered: FilterReason?
    public var score: HostScore?

    public init(hostID: HostID, hostName: String, filtered: FilterReason? = nil, score: HostScore? = nil) {
        self.hostID = hostID
        self.hostName = hostName
        self.filtered = filtered
        self.score = score
    }

    private enum CodingKeys: String, CodingKey { case hostID, hostName, filtered, score, summary }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        hostID = try c.decode(HostID.self, forKey: .hostID)
        hostName = try c.decode(String.self, forKey: .hostName)
        filtered = try c.decodeIfPresent(FilterReason.self, forKey: .filtered)
        score = try c.decodeIfPresent(HostScore.self, forKey: .score)
    }

    /// Also writes `summary`, the verdict as a sentence, for clients that show it as it is.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(hostID, forKey: .hostID)
        try c.encode(hostName, forKey: .hostName)
        try c.encodeIfPresent(filtered, forKey: .filtered)
        try c.encodeIfPresent(score, forKey: .score)
        try c.encode(summary, forKey: .summary)
    }

    public var summary: String {
        if let filtered { return "filtered: \(filtered)" }
        if let score {
            return String(
                format: "score %.3f (cpu free after %.0f%%, memory free after %.0f%%)", score.total,
                score.cpuFreeAfter * 100, score.memoryFreeAfter * 100)
        }
        return "not evaluated"
    }
}

/// What is stored with a VM about its placement: the chosen host and the verdicts behind it.
///
/// Large clusters keep the chosen host, the best-scored alternatives and a count of filtered
/// hosts per reason, so a record stays small while `vm show` can still say why.
public struct PlacementExplanation: Sendable, Codable, Equatable {
    public var chosenHost: String?
    public var decidedAt: Date
    public var verdicts: [HostVerdict]
    /// Hosts whose verdicts were left out of `verdicts`, counted by reason kind (`scored` for hosts
    /// that passed the filters but scored lower).
    public var omitted: [String: Int]

    public init(chosenHost: String?, decidedAt: Date, verdicts: [HostVerdict], omitted: [String: Int] = [:]) {
        self.chosenHost = chosenHost
        self.decidedAt = decidedAt
        self.verdicts = verdicts
        self.omitted = omitted
    }
}
