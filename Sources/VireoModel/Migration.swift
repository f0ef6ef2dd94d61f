import Foundation

/// How far a live migration has come, as the source's hypervisor reports it.
public struct MigrationProgress: Sendable, Codable, Equatable {
    /// Bytes of guest memory sent so far (including pages sent again after the guest dirtied them).
    public var transferredBytes: UInt64
    /// Bytes of guest memory still to send in this pass.
    public var remainingBytes: UInt64
    /// Guest memory size.
    public var totalBytes: UInt64
    /// Pages the guest dirties per second (0 until measured): what decides whether it converges.
    public var dirtyPagesPerSecond: UInt64

    public init(transferredBytes: UInt64, remainingBytes: UInt64, totalBytes: UInt64, dirtyPagesPerSecond: UInt64 = 0) {
        self.transferredBytes = transferredBytes
        self.remainingBytes = remainingBytes
        self.totalBytes = totalBytes
        self.dirtyPagesPerSecond = dirtyPagesPerSecond
    }
}

/// The outcome of a completed live migration.
public struct MigrationStats: Sendable, Codable, Equatable {
    /// From the start of the transfer to the guest running on the destination.
    public var totalTimeMs: Int
    /// How long the guest was paused for the final switch-over.
    public var downtimeMs: Int
    public var transferredBytes: UInt64
    public var setupTimeMs: Int?

    public init(totalTimeMs: Int, downtimeMs: Int, transferredBytes: UInt64, setupTimeMs: Int? = nil) {
        self.totalTimeMs = totalTimeMs
        self.downtimeMs = downtimeMs
        self.transferredBytes = transferredBytes
        self.setupTimeMs = setupTimeMs
    }
}
