import Foundation

/// Why a host could not take a VM. Structured, so placement stays cheap and people get a sentence.
public enum FilterReason: Sendable, Codable, Equatable, CustomStringConvertible {
    case hostNotReady(state: HostState)
    case notPinnedHost(pinned: String)
    case missingCapability(Capability)
    case insufficientCPU(requested: Int, free: Int)
    case insufficientMemory(requestedMiB: Int, freeMiB: Int)

    public var description: String {
        switch self {
        case .hostNotReady(let state): "host is \(state.rawValue)"
        case .notPinnedHost(let pinned): "VM is pinned to host '\(pinned)'"
        case .missingCapability(let c): "driver lacks capability \(c.rawValue)"
        case .insufficientCPU(let requested, let free): "insufficient CPU: requested \(requested), free \(free)"
        case .insufficientMemory(let requested, let free):
            "insufficient memory: requested \(ByteSize.format(mib: requested)), free \(ByteSize.format(mib: free))"
        }
    }

    /// A short stable key for counting reasons (`capacity`, `host-state`, ...).
    public var kind: String {
        switch self {
        case .hostNotReady: "host-state"
        case .notPinnedHost: "pinned"
        case .missingCapability: "capability"
        case .insufficientCPU, .insufficientMemory: "capacity"
        }
    }
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
