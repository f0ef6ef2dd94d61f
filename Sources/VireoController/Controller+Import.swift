import Foundation
import VireoAPI
import VireoModel

/// VMs that already exist on a host's hypervisor, recorded as they are (`vireo import libvirt`).
extension Controller {
    /// Records every VM of `request` on its host in one store transaction, or none: `.notFound`
    /// for an unknown host, `.failedPrecondition` for a host whose driver is not libvirt,
    /// `.conflict` for a name or id a VM already has.
    public func importVMs(_ request: VMImport) async throws -> VMImportResult {
        try await write { try $0.importVMs(request) }
    }
}

extension ClusterModel {
    mutating func importVMs(_ request: VMImport) throws -> VMImportResult {
        guard let host = state.host(named: request.host) else { throw VireoError.notFound("host", request.host) }
        guard host.fingerprint.driver == "libvirt" else {
            throw VireoError(
                .failedPrecondition,
                "host '\(host.name)' runs the \(host.fingerprint.driver) driver; only a libvirt host can take VMs imported from libvirt"
            )
        }
        for vm in request.vms {
            if let existing = state.vms[vm.id] {
                throw VireoError(.conflict, "VM id \(vm.id) already exists (VM '\(existing.name)'); nothing was imported")
            }
            if let existing = state.vm(named: vm.spec.name) {
                throw VireoError(
                    .conflict, "a VM named '\(vm.spec.name)' already exists (id \(existing.id)); nothing was imported")
            }
        }
        let time = now()
        var recorded: [VirtualMachine] = []
        for imported in request.vms {
            // A running VM is `scheduled` until its agent reports it, as any VM placed on a host.
            let vm = VirtualMachine(
                id: imported.id, spec: imported.spec, state: imported.running ? .scheduled : .stopped,
                intent: imported.running ? .running : .stopped, hostID: host.id,
                message: "imported from libvirt on host '\(host.name)'", createdAt: time, updatedAt: time,
                stateChangedAt: time)
            insert(vm)
            recorded.append(vm)
            events.publish(.vmCreated, name: vm.name, to: vm.state.rawValue, message: vm.message, at: time)
        }
        return VMImportResult(items: recorded.map { view($0) })
    }
}
