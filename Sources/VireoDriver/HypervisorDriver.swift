import VireoModel

/// What the agent asks a driver to run.
public struct InstanceSpec: Sendable, Equatable, Codable {
    public var id: VMID
    public var name: String
    public var image: String
    public var cpus: Int
    public var memoryMiB: Int
    /// A private network on this host to put the VM on instead of the driver's own network: VMs
    /// on one private network reach each other and nothing else — not the host, not its other
    /// VMs, not other private networks. Nil: the driver's network (server VMs).
    public var privateNetwork: String?
    /// A display the VM shows its screen on, or nil for none (the serial console only).
    public var display: DisplayKind?
    /// The disk's size as the guest sees it, in MiB; nil: the image's.
    public var diskMiB: Int?
    /// Where the VM's disk comes from when it moves here cold: another host's `exportDisk` URI,
    /// copied at create instead of a fresh disk made from the image; or `sharedDisk`: the disk is
    /// already in the storage this host shares with the source, and is taken as it is.
    public var diskSource: String?

    /// `diskSource` for a cold move between hosts that share storage: nothing is copied.
    public static let sharedDisk = "shared"

    public init(
        id: VMID, name: String, image: String, cpus: Int, memoryMiB: Int, privateNetwork: String? = nil,
        display: DisplayKind? = nil, diskMiB: Int? = nil
    ) {
        self.diskMiB = diskMiB
        self.id = id
        self.name = name
        self.image = image
        self.cpus = cpus
        self.memoryMiB = memoryMiB
        self.privateNetwork = privateNetwork
        self.display = display
    }
}

/// The state of a VM as its hypervisor sees it.
public enum InstanceState: String, Sendable, Codable, Equatable {
    /// Defined (disk and configuration exist) but not running.
    case stopped
    /// Process started, guest not ready yet.
    case starting
    case running
    case stopping
    /// Crashed or could not start; `InstanceStatus.message` says why.
    case failed
}

public struct InstanceStatus: Sendable, Equatable, Codable {
    public var id: VMID
    public var name: String
    public var state: InstanceState
    public var message: String?
    /// Where the guest's services are reachable from its host (`127.0.0.1:PORT` with a forwarded
    /// port, or the guest's IP), when the driver gives it a network.
    public var address: String?
    /// How long the last start took, from launching the hypervisor process to the guest being
    /// ready, in milliseconds; for drivers that measure it.
    public var bootMs: Int?
    /// Where the VM's display is served (`127.0.0.1:PORT` for VNC), when it has one and runs.
    public var display: String?

    /// A running guest whose vCPUs are stopped (`pause`, or a paused migration's source);
    /// nil when it is not, or the driver does not say.
    public var paused: Bool?

    public init(
        id: VMID, name: String, state: InstanceState, message: String? = nil, address: String? = nil,
        bootMs: Int? = nil, display: String? = nil, paused: Bool? = nil
    ) {
        self.id = id
        self.name = name
        self.state = state
        self.message = message
        self.address = address
        self.bootMs = bootMs
        self.display = display
        self.paused = paused
    }
}

/// A hypervisor as the agent drives it.
///
/// The basic lifecycle is required. Optional operations have default implementations that throw
/// `.unsupported`, so a driver states what it cannot do instead of crashing; `capabilities` says
/// what it can, and placement uses that.
public protocol HypervisorDriver: Sendable {
    /// The name used on the command line and in host fingerprints (`simulated`, `qemu`, ...).
    var name: String { get }
    var capabilities: Set<Capability> { get }

    /// Capacity and facts about this host.
    func fingerprint() async throws -> HostFingerprint

    /// Finds VMs left running by a previous agent process and takes them over, so that an agent
    /// restart neither loses nor duplicates a VM. Returns what it found.
    func recover() async throws -> [InstanceStatus]

    /// Defines the VM (disk, configuration) without starting it. Idempotent for the same spec.
    func create(_ spec: InstanceSpec) async throws
    /// `create` for a VM arriving cold: its disk is copied from `spec.diskSource` over TLS with
    /// `diskCredentials` (the move's destination's), if given. Kept out of the spec, which a
    /// driver stores.
    func create(_ spec: InstanceSpec, diskCredentials: MigrationCredentials?) async throws
    /// Starts a defined VM; returns once the process is started (readiness shows in `status`).
    func start(_ id: VMID) async throws
    /// Stops gracefully, then forcefully after the driver's grace period.
    func stop(_ id: VMID) async throws
    /// Stops the VM at once, as pulling its power would: no guest shutdown, nothing more written
    /// to its disk. It stays defined (stopped). A host fencing itself uses it.
    func powerOff(_ id: VMID) async throws
    /// Stops if needed and removes everything the driver created for the VM.
    func delete(_ id: VMID) async throws
    /// Every VM this driver knows about, with its current state.
    func status() async throws -> [InstanceStatus]

    /// The VM's serial console output from byte `offset` of its console log on, at most `limit`
    /// bytes, ending at a UTF-8 character boundary where possible (invalid bytes are replaced).
    /// `next` is where the returned text ends in the log, and where the next call starts. When
    /// the log is shorter than `offset` (it started over), returns output from offset 0.
    /// A driver without a console returns no text and `next == offset`.
    func consoleOutput(_ id: VMID, from offset: UInt64, limit: Int) async throws -> ConsoleChunk

    /// Pauses vCPUs (`pause` capability).
    func pause(_ id: VMID) async throws
    func resume(_ id: VMID) async throws

    // Live migration (`live-migration` capability). The controller orders it; the destination
    // prepares, the source sends, then the source releases and the destination takes over.

    /// Destination: defines the VM and starts it waiting for its state on `listenAddress`. The VM
    /// keeps its guest `address` (from the source). With `storage` `.shared` the destination opens
    /// the disk both hosts see; with `.copy` (`storage-migration` capability) it makes an empty disk
    /// of its own and offers it for the source to copy into. Returns the URI the source sends to
    /// (opaque outside the driver).
    ///
    /// With `credentials` (the destination's, from the controller's migration authority) the
    /// migration stream — and a copied disk's — is TLS: only a source presenting the certificate
    /// named `credentials.peer` can complete it; anything else that connects is refused and the
    /// destination keeps waiting. Without, it is plain TCP. A driver that cannot secure its
    /// channel this way says so in its own documentation.
    func prepareIncoming(
        _ spec: InstanceSpec, guestAddress: String?, listenAddress: String, storage: MigrationStorage,
        credentials: MigrationCredentials?
    ) async throws -> String
    /// Source: sends the running VM to `uri`, reporting progress; returns when QEMU (or the
    /// hypervisor) reports the migration complete, or throws with the reason it failed — in which
    /// case the VM keeps running here. A URI from a `.copy` preparation makes it copy the disk
    /// first; `release` then removes the source's disk. `credentials` (the source's): send over
    /// TLS, to a destination presenting the certificate `credentials.peer` names.
    func migrate(
        _ id: VMID, to uri: String, credentials: MigrationCredentials?,
        progress: @escaping @Sendable (MigrationProgress) -> Void
    ) async throws -> MigrationStats
    /// Source, after a completed migration: forgets the VM and stops its (paused) old process
    /// without touching what the destination now owns (the shared disk).
    func release(_ id: VMID) async throws
    /// Destination, after the source reported completion: the VM is ours now.
    func finishIncoming(_ id: VMID) async throws
    /// Destination, after a failed migration: stops and forgets the half-made VM, leaving the
    /// shared disk to the source.
    func abortIncoming(_ id: VMID) async throws

    // Cold moves (`cold-migration` capability): the VM stops on the source, its disk is copied to
    // the destination, and it starts there. Works between any two drivers that have it.

    /// Source: offers the stopped VM's disk read-only on `listenAddress` until `closeDiskExport`
    /// (TLS-only with the move's source `credentials`, admitting only its destination, if given);
    /// returns the URI a destination's `create` copies it from (`InstanceSpec.diskSource`).
    func exportDisk(_ id: VMID, listenAddress: String, credentials: MigrationCredentials?) async throws -> String
    func closeDiskExport(_ id: VMID) async

    // Snapshots (`snapshots` capability): the complete state of a running VM — memory, devices
    // and disk — kept on the host under a tag, and brought back in place. A driver keeps a VM's
    // snapshots until they are deleted or the VM is.

    /// Saves the running VM's memory, device and disk state as `tag` (replacing nothing: saving an
    /// existing tag fails with `.conflict`). The VM keeps running. Returns how long the hypervisor
    /// took.
    func saveSnapshot(_ id: VMID, tag: String) async throws -> Duration
    /// Brings the running VM back to `tag`: disk, memory and devices as they were saved; what
    /// happened since is gone. Returns once the VM runs again from that state, with how long the
    /// hypervisor took.
    func loadSnapshot(_ id: VMID, tag: String) async throws -> Duration
    /// Starts a stopped VM from `tag` instead of booting it: it runs from the saved state.
    func start(_ id: VMID, fromSnapshot tag: String) async throws
    func deleteSnapshot(_ id: VMID, tag: String) async throws
    /// The VM's snapshot tags, in the order they were taken.
    func snapshots(_ id: VMID) async throws -> [String]

    /// Registers what to call when a VM's state changes by itself (the guest became ready, powered
    /// off, crashed), so the agent reports it at once instead of at its next poll.
    func onStateChange(_ handler: @escaping @Sendable () -> Void) async

    /// What a VM's hypervisor process uses now (CPU time, memory); nil when the driver cannot
    /// tell or the VM does not run.
    func usage(_ id: VMID) async -> ResourceUsage?

    /// The CPU of the host this driver runs VMs on (busy time and capacity); nil when it cannot
    /// tell — the controller then takes the sum of the VMs' use.
    func hostUsage() async -> HostCPUUsage?

    /// Called when the agent exits: let go of the VMs without stopping them (they keep running,
    /// and the next agent re-adopts them through `recover`).
    func detach() async
}

/// Resources a VM's hypervisor process has used.
public struct ResourceUsage: Sendable, Equatable {
    /// CPU time since the process started (user + system), in seconds.
    public var cpuSeconds: Double
    /// Resident memory, in bytes.
    public var memoryBytes: UInt64
    public init(cpuSeconds: Double, memoryBytes: UInt64) {
        self.cpuSeconds = cpuSeconds
        self.memoryBytes = memoryBytes
    }
}

extension HypervisorDriver {
    /// Without a way of its own, the driver's `stop` (graceful first).
    public func powerOff(_ id: VMID) async throws { try await stop(id) }
    public func detach() async {}
    public func usage(_ id: VMID) async -> ResourceUsage? { nil }
    public func hostUsage() async -> HostCPUUsage? { nil }
    public func onStateChange(_ handler: @escaping @Sendable () -> Void) async {}
    public func prepareIncoming(
        _ spec: InstanceSpec, guestAddress: String?, listenAddress: String, storage: MigrationStorage,
        credentials: MigrationCredentials?
    ) async throws -> String {
        throw VireoError(.unsupported, "driver '\(name)' cannot live-migrate VMs")
    }
    /// A move over plain TCP.
    public func prepareIncoming(
        _ spec: InstanceSpec, guestAddress: String?, listenAddress: String, storage: MigrationStorage
    ) async throws -> String {
        try await prepareIncoming(
            spec, guestAddress: guestAddress, listenAddress: listenAddress, storage: storage, credentials: nil)
    }
    /// A move over plain TCP whose disk both hosts see.
    public func prepareIncoming(_ spec: InstanceSpec, guestAddress: String?, listenAddress: String) async throws
        -> String
    {
        try await prepareIncoming(
            spec, guestAddress: guestAddress, listenAddress: listenAddress, storage: .shared, credentials: nil)
    }
    public func migrate(
        _ id: VMID, to uri: String, credentials: MigrationCredentials?,
        progress: @escaping @Sendable (MigrationProgress) -> Void
    ) async throws -> MigrationStats {
        throw VireoError(.unsupported, "driver '\(name)' cannot live-migrate VMs")
    }
    /// A move over plain TCP.
    public func migrate(_ id: VMID, to uri: String, progress: @escaping @Sendable (MigrationProgress) -> Void)
        async throws -> MigrationStats
    {
        try await migrate(id, to: uri, credentials: nil, progress: progress)
    }
    public func release(_ id: VMID) async throws {
        throw VireoError(.unsupported, "driver '\(name)' cannot live-migrate VMs")
    }
    public func finishIncoming(_ id: VMID) async throws {
        throw VireoError(.unsupported, "driver '\(name)' cannot live-migrate VMs")
    }
    public func abortIncoming(_ id: VMID) async throws {
        throw VireoError(.unsupported, "driver '\(name)' cannot live-migrate VMs")
    }
    public func exportDisk(_ id: VMID, listenAddress: String, credentials: MigrationCredentials?) async throws -> String {
        throw VireoError(.unsupported, "driver '\(name)' cannot move VMs cold")
    }
    /// A driver that copies no disks creates as always.
    public func create(_ spec: InstanceSpec, diskCredentials: MigrationCredentials?) async throws {
        try await create(spec)
    }
    public func closeDiskExport(_ id: VMID) async {}
    public func consoleOutput(_ id: VMID, from offset: UInt64, limit: Int) async throws -> ConsoleChunk {
        ConsoleChunk(offset: offset, next: offset, text: "")
    }
    public func pause(_ id: VMID) async throws {
        throw VireoError(.unsupported, "driver '\(name)' cannot pause VMs")
    }
    public func saveSnapshot(_ id: VMID, tag: String) async throws -> Duration {
        throw VireoError(.unsupported, "driver '\(name)' cannot snapshot VMs")
    }
    public func loadSnapshot(_ id: VMID, tag: String) async throws -> Duration {
        throw VireoError(.unsupported, "driver '\(name)' cannot snapshot VMs")
    }
    public func start(_ id: VMID, fromSnapshot tag: String) async throws {
        throw VireoError(.unsupported, "driver '\(name)' cannot snapshot VMs")
    }
    public func deleteSnapshot(_ id: VMID, tag: String) async throws {
        throw VireoError(.unsupported, "driver '\(name)' cannot snapshot VMs")
    }
    public func snapshots(_ id: VMID) async throws -> [String] {
        throw VireoError(.unsupported, "driver '\(name)' cannot snapshot VMs")
    }
    public func resume(_ id: VMID) async throws {
        throw VireoError(.unsupported, "driver '\(name)' cannot resume VMs")
    }
}

/// The names snapshots may have, in every driver.
public enum SnapshotTag {
    /// Letters, digits, `.`, `_`, `-` and `:`, at most 128 characters, and not only digits (QEMU
    /// looks a snapshot up by its numeric id as well as by its name, so a tag `2` could mean
    /// another snapshot).
    public static func validate(_ tag: String) throws(VireoError) {
        let allowed = tag.unicodeScalars.allSatisfy {
            ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || ".-_:".unicodeScalars.contains($0)
        }
        guard !tag.isEmpty, tag.count <= 128, allowed, !tag.allSatisfy(\.isNumber) else {
            throw VireoError.invalid(
                field: "tag", value: "'\(tag)'", "expected 1 to 128 letters, digits, '.', '_', '-' or ':', not only digits")
        }
    }
}
