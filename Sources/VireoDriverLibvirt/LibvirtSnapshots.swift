import CLibvirt
import Foundation
import VireoDriver
import VireoModel

/// Pause and snapshots, through libvirt.
///
/// A snapshot is libvirt's default for the domain: on `qemu:///system` with the VM's qcow2 overlay,
/// an internal snapshot holding memory, devices and disk, as the qemu driver takes — the data lives
/// in the overlay, libvirt keeps its metadata. Each snapshot's description carries a sequence
/// number (`vireo-order N`), because libvirt's creation time has whole seconds only and the tags
/// are listed in the order they were taken.
///
/// Loading one (`virDomainRevertToSnapshot`, running) makes libvirt 9.0 end the domain's QEMU and
/// start a new one from the snapshot: seconds under TCG, where the qemu driver's in-place load
/// takes a few hundred milliseconds. The console log is appended to by the new QEMU, so offsets
/// stay valid, and the guest is ready at once, as it was when saved.
///
/// Every call here runs to its end inside libvirt without an `await`, so no other operation of
/// this driver on the VM interleaves with it (the actor runs one job at a time); libvirtd itself
/// holds a job on the domain while it saves or loads. An agent killed meanwhile leaves libvirtd to
/// finish.
extension LibvirtDriver {
    public func pause(_ id: VMID) async throws {
        let (connection, instance) = try activeDomain(id, to: "be paused")
        let name = instance.record.spec.name
        try connection.withDomain(instance.uuid) { domain throws in
            guard virDomainSuspend(domain) == 0 else { throw LibvirtConnection.lastError("pausing VM \(name)") }
        }
    }

    public func resume(_ id: VMID) async throws {
        let (connection, instance) = try activeDomain(id, to: "be resumed")
        let name = instance.record.spec.name
        try connection.withDomain(instance.uuid) { domain throws in
            guard virDomainResume(domain) == 0 else { throw LibvirtConnection.lastError("resuming VM \(name)") }
        }
    }

    public func saveSnapshot(_ id: VMID, tag: String) async throws -> Duration {
        try SnapshotTag.validate(tag)
        let (connection, instance) = try readyGuest(id, to: "save a snapshot")
        let name = instance.record.spec.name
        let took = try connection.withDomain(instance.uuid) { domain throws in
            let existing = try LibvirtConnection.snapshots(of: domain)
            guard !existing.contains(where: { $0.name == tag }) else {
                throw VireoError(.conflict, "VM \(name) already has a snapshot '\(tag)'")
            }
            let order = (existing.compactMap(\.order).max() ?? 0) + 1
            let startedAt = ContinuousClock.now
            try LibvirtConnection.createSnapshot(
                of: domain, name: tag, order: order, doing: "saving snapshot '\(tag)' of VM \(name)")
            return ContinuousClock.now - startedAt
        }
        logger.info("snapshot saved", metadata: ["vm": "\(name)", "tag": "\(tag)", "took": "\(took)"])
        return took
    }

    public func loadSnapshot(_ id: VMID, tag: String) async throws -> Duration {
        try SnapshotTag.validate(tag)
        let (connection, instance) = try readyGuest(id, to: "load a snapshot")
        let name = instance.record.spec.name
        let took = try connection.withDomain(instance.uuid) { domain throws in
            try Self.requireSnapshot(tag, of: domain, vm: name)
            let startedAt = ContinuousClock.now
            try LibvirtConnection.revert(domain, to: tag, doing: "loading snapshot '\(tag)' of VM \(name)")
            return ContinuousClock.now - startedAt
        }
        // The same run goes on (its console output, its readiness): the guest was ready when saved.
        instances[id]?.ready = true
        logger.info("snapshot loaded", metadata: ["vm": "\(name)", "tag": "\(tag)", "took": "\(took)"])
        return took
    }

    public func start(_ id: VMID, fromSnapshot tag: String) async throws {
        try SnapshotTag.validate(tag)
        guard var instance = instances[id] else { throw VireoError(.notFound, "VM \(id) is not on this host") }
        let connection = try open()
        let name = instance.record.spec.name
        if try Self.isActive(instance.uuid, on: connection) {
            throw VireoError(
                .failedPrecondition, "VM \(name) is running, not stopped: a running VM goes back to a snapshot with a load")
        }
        try connection.withDomain(instance.uuid) { domain throws in
            try Self.requireSnapshot(tag, of: domain, vm: name)
            beginRun(&instance, restoredFrom: tag)
            instances[id] = instance
            try LibvirtConnection.revert(domain, to: tag, doing: "starting VM \(name) from snapshot '\(tag)'")
        }
        // libvirt returns once the restored guest runs: it is ready, as it was when saved.
        if let startedAt = instances[id]?.startedAt {
            instances[id]?.bootMs = Self.milliseconds(ContinuousClock.now - startedAt)
        }
        instances[id]?.ready = true
    }

    public func deleteSnapshot(_ id: VMID, tag: String) async throws {
        try SnapshotTag.validate(tag)
        guard let instance = instances[id] else { throw VireoError(.notFound, "VM \(id) is not on this host") }
        let name = instance.record.spec.name
        try open().withDomain(instance.uuid) { domain throws in
            try Self.requireSnapshot(tag, of: domain, vm: name)
            try LibvirtConnection.deleteSnapshot(domain, named: tag, doing: "deleting snapshot '\(tag)' of VM \(name)")
        }
        logger.info("snapshot deleted", metadata: ["vm": "\(name)", "tag": "\(tag)"])
    }

    public func snapshots(_ id: VMID) async throws -> [String] {
        guard let instance = instances[id] else { throw VireoError(.notFound, "VM \(id) is not on this host") }
        return try open().withDomain(instance.uuid) { domain throws in
            try LibvirtConnection.snapshots(of: domain).map(\.name)
        }
    }

    // MARK: Preconditions

    /// The connection and VM, when libvirt runs its domain (booting, ready or paused);
    /// `.failedPrecondition` otherwise.
    private func activeDomain(_ id: VMID, to action: String) throws -> (LibvirtConnection, Instance) {
        guard let instance = instances[id] else { throw VireoError(.notFound, "VM \(id) is not on this host") }
        let connection = try open()
        guard try Self.isActive(instance.uuid, on: connection) else {
            throw VireoError(.failedPrecondition, "VM \(instance.record.spec.name) is not running: it cannot \(action)")
        }
        return (connection, instance)
    }

    /// The connection and VM, when its guest is running (ready; it may be paused);
    /// `.failedPrecondition` otherwise.
    private func readyGuest(_ id: VMID, to action: String) throws -> (LibvirtConnection, Instance) {
        guard var instance = instances[id] else { throw VireoError(.notFound, "VM \(id) is not on this host") }
        let connection = try open()
        let (state, _) = observe(&instance, on: connection)
        instances[id] = instance
        guard state == .running else {
            throw VireoError(
                .failedPrecondition, "VM \(instance.record.spec.name) is \(state): only a running VM can \(action)")
        }
        return (connection, instance)
    }

    /// Checked first, to name the tag: libvirt's own message names neither it nor the VM.
    private static func requireSnapshot(_ tag: String, of domain: OpaquePointer, vm name: String) throws {
        guard try LibvirtConnection.snapshots(of: domain).contains(where: { $0.name == tag }) else {
            throw VireoError(.notFound, "VM \(name) has no snapshot '\(tag)'")
        }
    }

    static func milliseconds(_ duration: Duration) -> Int {
        Int(duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000)
    }
}
