import Foundation

/// What an agent reports about its machine when it registers.
public struct HostFingerprint: Sendable, Codable, Equatable {
    /// Logical CPUs available to guests.
    public var cpus: Int
    /// Memory available to guests, in MiB.
    public var memoryMiB: Int
    /// Driver name (`simulated`, `qemu`, `libvirt`).
    public var driver: String
    public var capabilities: [Capability]
    /// Free-form facts (accelerator, hypervisor version, kernel), shown by `host list -o json`.
    public var attributes: [String: String]

    public init(
        cpus: Int, memoryMiB: Int, driver: String, capabilities: [Capability], attributes: [String: String] = [:]
    ) {
        self.cpus = cpus
        self.memoryMiB = memoryMiB
        self.driver = driver
        self.capabilities = capabilities.sorted()
        self.attributes = attributes
    }

    /// Which hosts a live migration can go between: the same hypervisor family. A driver that
    /// runs several (libvirt) names its family in the `migration-family` attribute; otherwise it
    /// is the driver.
    public var migrationFamily: String { attributes[Self.migrationFamilyAttribute] ?? driver }

    public static let migrationFamilyAttribute = "migration-family"

    /// Where the host keeps VM disks that other hosts see too (a shared directory): two hosts that
    /// name the same place move VMs without copying their disks. Absent: disks are the host's own.
    public var sharedStorage: String? { attributes[Self.sharedStorageAttribute] }

    public static let sharedStorageAttribute = "shared-storage"

    /// How a VM's disk gets from `self` to `destination` in a live move: shared when both see the
    /// same storage, else copied — if both hosts can (`storage-migration`); nil when neither works.
    public func migrationStorage(to destination: HostFingerprint) -> MigrationStorage? {
        if let shared = sharedStorage, shared == destination.sharedStorage { return .shared }
        let copy = capabilities.contains(.storageMigration) && destination.capabilities.contains(.storageMigration)
        return copy ? .copy : nil
    }
}

public enum HostState: String, Sendable, Codable, CaseIterable {
    /// Heartbeating; eligible for placement.
    case ready
    /// Missed its heartbeats. Its VMs are left alone (the agent keeps running them offline).
    case unreachable
    /// Missed its heartbeats for longer than the controller's `--host-lost-after`: its agent has
    /// fenced itself (stopped the VMs that restart elsewhere), and those VMs were started on other
    /// hosts. Ready again when it heartbeats.
    case lost
}

public struct HostRecord: Sendable, Codable, Equatable, Identifiable {
    public var id: HostID
    public var name: String
    public var state: HostState
    public var fingerprint: HostFingerprint
    /// Address the agent can be reached at for host-to-host work (migration), if it gave one.
    public var address: String?
    public var registeredAt: Date
    public var lastHeartbeatAt: Date
    public var stateChangedAt: Date
    /// VMs the cluster started on other hosts while this one was lost, which its agent may still
    /// have: it is told to stop and forget them when it returns, and each leaves this list once
    /// the host no longer reports it.
    public var releasePending: [VMID]?

    public init(
        id: HostID, name: String, state: HostState, fingerprint: HostFingerprint, address: String?,
        registeredAt: Date, lastHeartbeatAt: Date, stateChangedAt: Date
    ) {
        self.id = id
        self.name = name
        self.state = state
        self.fingerprint = fingerprint
        self.address = address
        self.registeredAt = registeredAt
        self.lastHeartbeatAt = lastHeartbeatAt
        self.stateChangedAt = stateChangedAt
    }
}
