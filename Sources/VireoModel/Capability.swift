/// Things a hypervisor driver can do beyond the basic lifecycle. Hosts advertise them in their
/// fingerprint; placement filters on them; a driver asked for one it lacks answers `.unsupported`.
public enum Capability: String, Sendable, Codable, CaseIterable, Comparable {
    case liveMigration = "live-migration"
    case snapshots = "snapshots"
    case pause = "pause"
    case serialConsole = "serial-console"
    case virtualTime = "virtual-time"
    /// Private networks on the host (`InstanceSpec.privateNetwork`): desktop contexts need them.
    case privateNetworks = "private-networks"
    /// A display on the host's loopback (`InstanceSpec.display`).
    case display = "display"
    /// Live migration that copies the VM's disk to the destination while the guest runs, for hosts
    /// that do not share storage (`MigrationStorage.copy`).
    case storageMigration = "storage-migration"
    /// Cold moves: the stopped VM's disk is exported to, and copied by, another host of any
    /// driver that has this too.
    case coldMigration = "cold-migration"

    public static func < (a: Capability, b: Capability) -> Bool { a.rawValue < b.rawValue }
}

/// A set of capabilities as bits: membership tests without hashing, for placement's inner loop.
public struct CapabilitySet: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public init(_ capabilities: some Sequence<Capability>) {
        self.init(rawValue: capabilities.reduce(0) { $0 | Self.bit($1) })
    }

    /// Live migration alone (what every move needs on both hosts), built once.
    public static let liveMigration = CapabilitySet([.liveMigration])

    private static func bit(_ capability: Capability) -> UInt32 {
        1 << UInt32(Capability.allCases.firstIndex(of: capability)!)
    }

    /// The first member in `Capability.allCases` order, without building an array.
    public var first: Capability? {
        Capability.allCases.first { rawValue & Self.bit($0) != 0 }
    }

    /// The members, in `Capability.allCases` order.
    public var members: [Capability] {
        Capability.allCases.filter { rawValue & Self.bit($0) != 0 }
    }
}
