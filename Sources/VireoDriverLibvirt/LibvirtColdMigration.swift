import Foundation
import VireoDriver
import VireoModel
import VireoProcess

/// Cold moves: a stopped domain's disk is offered read-only over NBD (`qemu-nbd`), to be copied by
/// a destination of any driver; a VM arriving cold here gets a copy of its disk at create
/// (`InstanceSpec.diskSource`, in `define`).
extension LibvirtDriver {
    public func exportDisk(_ id: VMID, listenAddress: String) async throws -> String {
        guard let instance = instances[id] else { throw VireoError(.notFound, "VM \(id) is not on this host") }
        let name = instance.record.spec.name
        if try Self.isActive(instance.uuid, on: try open()) {
            throw VireoError(.failedPrecondition, "VM \(name) runs; only a stopped VM's disk moves")
        }
        let files = exportFiles(id)
        // Asked again (the order repeats until the destination has it): the same export.
        if let uri = try? String(contentsOfFile: files.uri, encoding: .utf8), FileManager.default.fileExists(atPath: files.pid) {
            return uri
        }
        let uri = try await DiskTransfer.export(
            disk: instance.record.disk, on: listenAddress, port: try LoopbackPort.free(on: listenAddress),
            pidFile: files.pid)
        try uri.write(toFile: files.uri, atomically: true, encoding: .utf8)
        return uri
    }

    public func closeDiskExport(_ id: VMID) async {
        let files = exportFiles(id)
        DiskTransfer.stopExport(pidFile: files.pid)
        try? FileManager.default.removeItem(atPath: files.uri)
    }

    private func exportFiles(_ id: VMID) -> (pid: String, uri: String) {
        (directory(of: id) + "/nbd.pid", directory(of: id) + "/nbd.uri")
    }
}
