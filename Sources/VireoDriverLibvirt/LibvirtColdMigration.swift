import Foundation
import VireoDriver
import VireoModel
import VireoProcess

/// Cold moves: a stopped domain's disk is offered read-only over NBD (`qemu-nbd`), to be copied by
/// a destination of any driver; a VM arriving cold here gets a copy of its disk at create
/// (`InstanceSpec.diskSource`, in `define`).
extension LibvirtDriver {
    public func exportDisk(_ id: VMID, listenAddress: String, credentials: MigrationCredentials?) async throws -> String {
        guard let instance = instances[id] else { throw VireoError(.notFound, "VM \(id) is not on this host") }
        let name = instance.record.spec.name
        if try Self.isActive(instance.uuid, on: try open()) {
            throw VireoError(.failedPrecondition, "VM \(name) runs; only a stopped VM's disk moves")
        }
        return try await DiskTransfer.export(
            disk: instance.record.disk, on: listenAddress, port: { try LoopbackPort.free(on: listenAddress) },
            in: directory(of: id), credentials: credentials)
    }

    public func closeDiskExport(_ id: VMID) async {
        DiskTransfer.stopExport(in: directory(of: id))
    }
}
