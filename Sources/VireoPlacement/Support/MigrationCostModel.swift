import VireoModel

/// What a live migration is predicted to cost.
public struct MigrationCost: Sendable, Equatable, CustomStringConvertible {
    /// From the start of the transfer to the guest running on the destination, seconds.
    public var totalSeconds: Double
    /// How long the guest is paused for the final copy, seconds.
    public var downtimeSeconds: Double
    /// Memory sent, pages sent again included, MiB.
    public var transferredMiB: Double
    /// Pre-copy passes before the final stop-and-copy.
    public var iterations: Int

    public init(totalSeconds: Double, downtimeSeconds: Double, transferredMiB: Double, iterations: Int) {
        self.totalSeconds = totalSeconds
        self.downtimeSeconds = downtimeSeconds
        self.transferredMiB = transferredMiB
        self.iterations = iterations
    }

    public var description: String {
        "cost ≈ \(decimal(totalSeconds, 1)) s, downtime ≈ \(Int((downtimeSeconds * 1000).rounded())) ms"
    }
}

/// Pre-copy live migration, as QEMU does it: the first pass sends all memory; each next pass
/// sends what the guest dirtied during the previous one; once the rest can be sent within the
/// allowed downtime the guest is paused and the rest is sent.
///
/// A migration that would not converge is refused (an error with the reason), not planned with
/// auto-converge: throttling the guest to force convergence costs the very performance the
/// rebalancer is trying to protect.
public struct MigrationCostModel: Sendable, Equatable {
    /// The pause the hypervisor allows for the final copy, seconds (QEMU's default is 0.3).
    public var maxDowntimeSeconds: Double
    /// Pre-copy passes after the first before giving up.
    public var maxIterations: Int
    /// Fixed time to set up the destination and switch over, seconds.
    public var setupSeconds: Double

    public init(maxDowntimeSeconds: Double = 0.3, maxIterations: Int = 30, setupSeconds: Double = 0) {
        self.maxDowntimeSeconds = maxDowntimeSeconds
        self.maxIterations = maxIterations
        self.setupSeconds = setupSeconds
    }

    /// The predicted cost of moving `memoryMiB` of guest memory dirtied at `dirtyMiBPerSecond`
    /// over a link of `bandwidthMiBPerSecond`.
    public func cost(
        memoryMiB: Double, dirtyMiBPerSecond: Double, bandwidthMiBPerSecond: Double
    ) -> Result<MigrationCost, MigrationCostError> {
        guard bandwidthMiBPerSecond > 0 else { return .failure(.noBandwidth) }
        let dirty = max(0, dirtyMiBPerSecond)
        guard dirty < bandwidthMiBPerSecond else {
            return .failure(
                .dirtyRateExceedsBandwidth(dirtyMiBPerSecond: dirty, bandwidthMiBPerSecond: bandwidthMiBPerSecond))
        }
        var toSend = max(0, memoryMiB)
        var total = setupSeconds
        var sent = 0.0
        var passes = 0
        // Pre-copy while the rest would take longer than the allowed pause.
        while toSend / bandwidthMiBPerSecond > maxDowntimeSeconds {
            guard passes <= maxIterations else {
                return .failure(.tooManyIterations(maxIterations: maxIterations, remainingMiB: toSend))
            }
            let seconds = toSend / bandwidthMiBPerSecond
            total += seconds
            sent += toSend
            toSend = dirty * seconds
            passes += 1
        }
        let downtime = toSend / bandwidthMiBPerSecond
        return .success(
            MigrationCost(
                totalSeconds: total + downtime, downtimeSeconds: downtime, transferredMiB: sent + toSend,
                iterations: passes))
    }
}

/// A number with `digits` decimals.
func decimal(_ value: Double, _ digits: Int) -> String { NumberText.decimal(value, digits) }
