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
    /// A move that copies the disk (`MigrationStorage.copy`): bytes of it copied so far, of
    /// `storageTotalBytes`. The disk goes first; memory follows once both copies are in step.
    public var storageCopiedBytes: UInt64?
    public var storageTotalBytes: UInt64?

    public init(
        transferredBytes: UInt64, remainingBytes: UInt64, totalBytes: UInt64, dirtyPagesPerSecond: UInt64 = 0,
        storageCopiedBytes: UInt64? = nil, storageTotalBytes: UInt64? = nil
    ) {
        self.transferredBytes = transferredBytes
        self.remainingBytes = remainingBytes
        self.totalBytes = totalBytes
        self.dirtyPagesPerSecond = dirtyPagesPerSecond
        self.storageCopiedBytes = storageCopiedBytes
        self.storageTotalBytes = storageTotalBytes
    }
}

/// The outcome of a completed live migration.
public struct MigrationStats: Sendable, Codable, Equatable {
    /// From the start of the transfer to the guest running on the destination.
    public var totalTimeMs: Int
    /// How long the guest was paused: for the final switch-over (`live`), or from the pause to the
    /// last byte sent (`paused`).
    public var downtimeMs: Int
    public var transferredBytes: UInt64
    public var setupTimeMs: Int?
    /// How the memory was copied; nil where the driver does not say (the simulator, older records).
    public var mode: MigrationCopyMode?
    /// A move that copied the disk: the bytes of it sent (until the copy was in step; writes the
    /// guest made meanwhile were sent as well), and how long that took, within `totalTimeMs`.
    public var storageBytes: UInt64?
    public var storageTimeMs: Int?

    public init(
        totalTimeMs: Int, downtimeMs: Int, transferredBytes: UInt64, setupTimeMs: Int? = nil,
        mode: MigrationCopyMode? = nil, storageBytes: UInt64? = nil, storageTimeMs: Int? = nil
    ) {
        self.storageBytes = storageBytes
        self.storageTimeMs = storageTimeMs
        self.totalTimeMs = totalTimeMs
        self.downtimeMs = downtimeMs
        self.transferredBytes = transferredBytes
        self.setupTimeMs = setupTimeMs
        self.mode = mode
    }
}

/// How a VM moves.
public enum MigrationKind: String, Sendable, Codable, Equatable, CaseIterable {
    /// While the guest runs (memory, devices and, if needed, the disk): between hosts of one
    /// hypervisor family.
    case live
    /// The VM stops, its disk is copied, and it starts on the destination (if it ran): between
    /// any two hosts whose drivers have `cold-migration`, whatever their hypervisors.
    case cold
}

/// Where a live migration's disk comes from on the destination.
public enum MigrationStorage: String, Sendable, Codable, Equatable, CaseIterable {
    /// Both hosts see the disk (shared storage): only memory and devices move.
    case shared
    /// The destination gets its own copy of the disk, mirrored from the source while the guest
    /// runs; the source's copy is removed once the guest has moved.
    case copy
}

/// How a migration copied the guest's memory.
public enum MigrationCopyMode: String, Sendable, Codable, Equatable {
    /// While the guest ran (pre-copy); downtime is the final switch-over.
    case live
    /// With the guest paused throughout; downtime is the whole copy.
    case paused
}

public struct MigrationID: Hashable, Sendable, Codable, Comparable, CustomStringConvertible {
    public let rawValue: String
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public static func generate() -> MigrationID { MigrationID(UUID().uuidString.lowercased()) }
    public init(from decoder: any Decoder) throws { rawValue = try decoder.singleValueContainer().decode(String.self) }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
    public var description: String { rawValue }
    public static func < (a: MigrationID, b: MigrationID) -> Bool { a.rawValue < b.rawValue }
}

/// Where a live migration is: the destination prepares (`pending`), listens (`ready`), the source
/// sends (`running`), and it ends `completed` (the VM runs on the destination) or `failed` (it
/// runs on the source, as before).
public enum MigrationState: String, Sendable, Codable, CaseIterable {
    case pending
    case ready
    case running
    case completed
    case failed

    public var isActive: Bool { self != .completed && self != .failed }
}

/// One live migration of one VM, as the controller records it.
public struct Migration: Sendable, Codable, Equatable {
    public var id: MigrationID
    public var vmID: VMID
    public var vmName: String
    public var source: HostID
    public var destination: HostID
    public var state: MigrationState
    /// Why it was started: `requested` (a user) or the planner's explanation.
    public var reason: String
    /// The failure reason, for `failed`.
    public var message: String?
    /// Where the destination listens (`tcp:ADDR:PORT`), once it is ready.
    public var incomingURI: String?
    public var progress: MigrationProgress?
    public var stats: MigrationStats?
    public var requestedAt: Date
    public var startedAt: Date?
    public var endedAt: Date?
    /// The destination has taken over the VM (completed) or discarded its copy (failed): nothing
    /// more to tell it.
    public var destinationSettled: Bool
    /// Whether the disk is shared or copied; nil in records from before copies existed (shared).
    public var storage: MigrationStorage?
    /// Live or cold; nil in records from before cold moves existed (live).
    public var kind: MigrationKind?
    /// A cold move's source has removed its copy (completed) or started the VM again (failed).
    public var sourceSettled: Bool?

    /// Under way, or ended without the destination (or a cold move's source) having settled it yet.
    public var isOpen: Bool {
        state.isActive || !destinationSettled || (kind == .cold && sourceSettled != true)
    }

    public init(
        id: MigrationID = .generate(), vmID: VMID, vmName: String, source: HostID, destination: HostID,
        reason: String, requestedAt: Date, storage: MigrationStorage = .shared, kind: MigrationKind = .live
    ) {
        self.storage = storage
        self.kind = kind
        self.id = id
        self.vmID = vmID
        self.vmName = vmName
        self.source = source
        self.destination = destination
        self.state = .pending
        self.reason = reason
        self.requestedAt = requestedAt
        self.destinationSettled = false
    }
}

/// Which end of a migration a set of credentials is for.
public enum MigrationRole: String, Sendable, Codable, Equatable, CaseIterable {
    case source
    case destination
}

/// Both ends' credentials of one migration, issued together (`MigrationAuthority.issue`).
public struct MigrationCredentialPair: Sendable, Equatable {
    public var source: MigrationCredentials
    public var destination: MigrationCredentials

    public init(source: MigrationCredentials, destination: MigrationCredentials) {
        self.source = source
        self.destination = destination
    }
}

/// One host's TLS credentials for one live migration, issued by the controller's migration
/// authority: the two ends authenticate each other with them and encrypt the stream (QEMU's
/// `tls-creds-x509`). Issued fresh for each migration and kept in memory only.
///
/// Its `description` never shows the private key: credentials can be logged as a whole.
public struct MigrationCredentials: Sendable, Codable, Equatable, CustomStringConvertible,
    CustomDebugStringConvertible, CustomReflectable
{
    /// The certificate (PEM) of the authority made for this migration alone: the only issuer
    /// either end trusts.
    public var caCertificate: String
    /// This host's certificate for this migration (PEM).
    public var certificate: String
    /// This host's private key (PEM, PKCS #8).
    public var privateKey: String
    /// The distinguished name the other end must present, as QEMU's `authz-simple` compares it
    /// (GnuTLS's form: the certificate's name parts in order, e.g. `O=Vireo,CN=vireo-migration-…`).
    public var peer: String

    public init(caCertificate: String, certificate: String, privateKey: String, peer: String) {
        self.caCertificate = caCertificate
        self.certificate = certificate
        self.privateKey = privateKey
        self.peer = peer
    }

    public var description: String { "MigrationCredentials(peer: \(peer), privateKey: <redacted>)" }
    public var debugDescription: String { description }
    /// `dump` and test failure messages show the peer, not the key.
    public var customMirror: Mirror { Mirror(self, children: ["peer": peer, "privateKey": "<redacted>"]) }
}
