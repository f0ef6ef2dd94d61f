import VireoDriver
import VireoModel

/// What desktop contexts need, modelled. Snapshots: a VM's tags in the order they were taken, with
/// the same rules and errors as the QEMU driver's; a save and a load report `snapshotSaveTime` and
/// `snapshotLoadTime` (and take it, with `snapshotsTakeTime`); a start from a snapshot is running at once, without the boot delay. Private
/// networks: addresses as the QEMU driver gives them (there is no network to isolate).
extension SimulatedDriver {
    public func saveSnapshot(_ id: VMID, tag: String) async throws -> Duration {
        try SnapshotTag.validate(tag)
        if configuration.snapshotsTakeTime { try await Task.sleep(for: configuration.snapshotSaveTime) }
        let now = time.now()
        try state.withLock { (s: inout State) throws(VireoError) in
            settle(&s, now: now)
            var instance = try Self.running(id, s, to: "save a snapshot")
            guard !instance.snapshots.contains(tag) else {
                throw VireoError(.conflict, "VM '\(instance.spec.name)' already has a snapshot '\(tag)'")
            }
            instance.snapshots.append(tag)
            instance.console += "[simulated] \(instance.spec.name) saved as snapshot '\(tag)'\n"
            s.set(id, instance)
        }
        return configuration.snapshotSaveTime
    }

    public func loadSnapshot(_ id: VMID, tag: String) async throws -> Duration {
        try SnapshotTag.validate(tag)
        if configuration.snapshotsTakeTime { try await Task.sleep(for: configuration.snapshotLoadTime) }
        let now = time.now()
        try state.withLock { (s: inout State) throws(VireoError) in
            settle(&s, now: now)
            var instance = try Self.running(id, s, to: "load a snapshot")
            guard instance.snapshots.contains(tag) else {
                throw VireoError(.notFound, "VM '\(instance.spec.name)' has no snapshot '\(tag)'")
            }
            instance.console += "[simulated] \(instance.spec.name) back to snapshot '\(tag)'\n"
            s.set(id, instance)
        }
        return configuration.snapshotLoadTime
    }

    public func start(_ id: VMID, fromSnapshot tag: String) async throws {
        try SnapshotTag.validate(tag)
        let now = time.now()
        try state.withLock { (s: inout State) throws(VireoError) in
            settle(&s, now: now)
            guard var instance = s.instances[id] else { throw VireoError.notFound("instance", id.rawValue) }
            guard instance.state == .stopped || instance.state == .failed else {
                throw VireoError(
                    .failedPrecondition,
                    "VM '\(instance.spec.name)' is \(instance.state), not stopped: a running VM goes back to a "
                        + "snapshot with a load")
            }
            guard instance.snapshots.contains(tag) else {
                throw VireoError(.notFound, "VM '\(instance.spec.name)' has no snapshot '\(tag)'")
            }
            if let failure = startFailure(of: instance, &s) {
                instance.state = .failed
                instance.message = failure
            } else {
                instance.state = .running
                instance.message = nil
                instance.restartAccounting(at: now)
                instance.console += "[simulated] \(instance.spec.name) running from snapshot '\(tag)'\n"
            }
            s.set(id, instance)
        }
    }

    public func deleteSnapshot(_ id: VMID, tag: String) async throws {
        try SnapshotTag.validate(tag)
        try state.withLock { (s: inout State) throws(VireoError) in
            guard var instance = s.instances[id] else { throw VireoError.notFound("instance", id.rawValue) }
            guard let index = instance.snapshots.firstIndex(of: tag) else {
                throw VireoError(.notFound, "VM '\(instance.spec.name)' has no snapshot '\(tag)'")
            }
            instance.snapshots.remove(at: index)
            s.set(id, instance)
        }
    }

    public func snapshots(_ id: VMID) async throws -> [String] {
        try state.withLock { (s: inout State) throws(VireoError) in
            guard let instance = s.instances[id] else { throw VireoError.notFound("instance", id.rawValue) }
            return instance.snapshots
        }
    }

    /// The instance, if its guest runs (an incoming one does not yet).
    private static func running(_ id: VMID, _ s: State, to action: String) throws(VireoError) -> Instance {
        guard let instance = s.instances[id] else { throw VireoError.notFound("instance", id.rawValue) }
        guard instance.state == .running, !instance.incoming else {
            throw VireoError(
                .failedPrecondition, "VM '\(instance.spec.name)' is \(instance.state): only a running VM can \(action)")
        }
        return instance
    }

    /// The next address on private network `network`: network N (numbered from 1 in the order
    /// first used) is 198.19.N.0/24, its guests from .10, as the QEMU driver gives them.
    static func privateAddress(on network: String, _ s: inout State) throws(VireoError) -> String {
        let subnet = s.privateSubnets[network] ?? s.privateSubnets.count + 1
        let guest = s.privateGuests[network, default: 0]
        guard subnet <= 255, guest < 245 else {
            throw VireoError(.unavailable, "privateNetwork '\(network)': no address left")
        }
        s.privateSubnets[network] = subnet
        s.privateGuests[network] = guest + 1
        return "198.19.\(subnet).\(10 + guest)"
    }
}
