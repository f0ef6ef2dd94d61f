import Foundation

/// What a user asks for. Validated at the edge (API, manifest, CLI) before it is stored.
public struct VMSpec: Sendable, Codable, Equatable {
    public var name: String
    public var image: String
    public var cpus: Int
    public var memoryMiB: Int
    /// Pin the VM to this host (by name); placement filters out every other host.
    public var host: String?
    /// The application this VM belongs to, if any.
    public var app: String?
    /// The size of the VM's disk as its guest sees it, in MiB; nil: the image's
    /// (`ImageCatalogue.virtualDiskMiB`). Real drivers keep it thin: it takes host space as the
    /// guest writes.
    public var diskMiB: Int?
    /// What the cluster does when the VM's host is lost (nil: `never`).
    public var restartPolicy: RestartPolicy?

    public init(
        name: String, image: String, cpus: Int, memoryMiB: Int, host: String? = nil, app: String? = nil,
        diskMiB: Int? = nil, restartPolicy: RestartPolicy? = nil
    ) {
        self.name = name
        self.image = image
        self.cpus = cpus
        self.memoryMiB = memoryMiB
        self.host = host
        self.app = app
        self.diskMiB = diskMiB
        self.restartPolicy = restartPolicy
    }

    /// Whether the cluster starts the VM on another host when its host is lost.
    public var restartsElsewhere: Bool { restartPolicy == .always }
}

/// What happens to a running VM whose host is lost (stopped heartbeating for the controller's
/// `--host-lost-after`).
public enum RestartPolicy: String, Sendable, Codable, CaseIterable {
    /// It stays on its host, and runs again when the host returns (the agent kept it running
    /// unless the host itself went down).
    case never
    /// The controller starts it on another host once the lost host is fenced: that host's agent
    /// stops it when it has been cut off from the controller for longer than it may run alone,
    /// and again, before anything else, if it returns. Its disk is taken along where the hosts
    /// share storage; elsewhere it starts from a fresh disk of its image. A start that fails is
    /// tried again every 5 s.
    case always
}

/// The controller's record of a VM: the spec, what the user wants, and what is true now.
public struct VirtualMachine: Sendable, Codable, Equatable, Identifiable {
    public var id: VMID
    public var spec: VMSpec
    public var state: VMState
    public var intent: PowerIntent
    public var hostID: HostID?
    /// Why the VM is where it is (or why it could not be placed). Stored apart from the rest of
    /// the record, and not kept in the controller's memory once written (`ClusterStore`).
    public var placement: PlacementExplanation?
    /// Last message from the agent or scheduler (boot failure, unschedulable, ...).
    public var message: String?
    /// Bumped on every user action so an agent can tell a new request from one it already tried.
    public var generation: Int
    /// Where the guest's services are reachable, as its host reports it (`127.0.0.1:PORT` for a
    /// forwarded port, or the guest's IP). Present only while the VM is `running`: a stopped,
    /// failed, pending or deleting VM has none, and a VM that moves gets its new host's address.
    public var address: String?
    /// How long its last start took on its host, from launching the hypervisor process to the
    /// guest being ready (milliseconds), when the driver measures it.
    public var lastBootMs: Int?
    /// The shared storage (`HostFingerprint.sharedStorage`) holding the VM's disk, set when its
    /// host was lost and it is started elsewhere: a host that sees the same storage takes that
    /// disk rather than making a fresh one. Cleared once the new host reports the VM.
    public var diskInSharedStorage: String?
    public var createdAt: Date
    public var updatedAt: Date
    public var stateChangedAt: Date

    public init(
        id: VMID, spec: VMSpec, state: VMState, intent: PowerIntent, hostID: HostID? = nil,
        placement: PlacementExplanation? = nil, message: String? = nil, generation: Int = 1, address: String? = nil,
        createdAt: Date, updatedAt: Date, stateChangedAt: Date
    ) {
        self.id = id
        self.spec = spec
        self.state = state
        self.intent = intent
        self.hostID = hostID
        self.placement = placement
        self.message = message
        self.generation = generation
        self.address = address
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.stateChangedAt = stateChangedAt
    }

    public var name: String { spec.name }
}

extension VirtualMachine {
    /// The record without its placement explanation.
    public var withoutPlacement: VirtualMachine {
        var vm = self
        vm.placement = nil
        return vm
    }
}
