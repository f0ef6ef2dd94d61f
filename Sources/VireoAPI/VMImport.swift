import Foundation
import VireoModel

/// The body of `POST /v1/vms/import`: VMs that already exist on a host's hypervisor (adopted by
/// `vireo import libvirt`), to be recorded as they are — same id, running or stopped — pinned to
/// that host. All are recorded or none.
public struct VMImportRequest: Sendable, Codable, Equatable {
    /// The host (by name) whose agent manages the VMs.
    public var host: String
    public var vms: [Item]

    public struct Item: Sendable, Codable, Equatable {
        /// The hypervisor's id for the VM (a libvirt domain's UUID), lowercase: the VM id.
        public var id: VMID
        public var name: String
        public var cpus: Int
        /// A size such as `512MiB`.
        public var memory: String
        /// `running` or `stopped`: what the VM is now, and so what Vireo keeps it.
        public var state: String

        public init(id: VMID, name: String, cpus: Int, memoryMiB: Int, running: Bool) {
            self.id = id
            self.name = name
            self.cpus = cpus
            self.memory = "\(memoryMiB)MiB"
            self.state = running ? "running" : "stopped"
        }
    }

    public init(host: String, vms: [Item]) {
        self.host = host
        self.vms = vms
    }

    /// The image every imported VM carries: it was not built from Vireo's catalogue, so no driver
    /// builds it, and `POST /v1/vms` refuses it.
    public static let image = "imported"
}

/// A validated `VMImportRequest`.
public struct VMImport: Sendable, Equatable {
    public struct VM: Sendable, Equatable {
        public var id: VMID
        /// Pinned to the import's host.
        public var spec: VMSpec
        public var running: Bool
    }
    public var host: String
    public var vms: [VM]

    /// Validates the body, naming the field and the value of the first problem: unknown fields,
    /// an id that is not a lowercase UUID, a bad name, size or state, or an id or name twice.
    public static func fromAPIBody(_ body: JSONValue) throws(VireoError) -> VMImport {
        let fields = try FieldReader(body, path: "")
        try fields.rejectUnknown(allowed: ["host", "vms"])
        let host = try fields.requiredString("host")
        try ResourceName.validate(host, field: "host")
        guard let items = try fields.array("vms"), !items.isEmpty else {
            throw VireoError(.invalidArgument, "vms: is required and must list at least one VM")
        }
        var vms: [VM] = []
        for (path, value) in items {
            let item = try FieldReader(value, path: path)
            try item.rejectUnknown(allowed: ["id", "name", "cpus", "memory", "state"])
            let id = try item.requiredString("id")
            guard let uuid = UUID(uuidString: id), uuid.uuidString.lowercased() == id else {
                throw VireoError.invalid(field: item.field("id"), value: "'\(id)'", "must be a lowercase UUID")
            }
            let name = try item.requiredString("name")
            try ResourceName.validate(name, field: item.field("name"))
            let cpus = try item.requiredInt("cpus")
            guard (1...VMSpecValidation.maxCPUs).contains(cpus) else {
                throw VireoError.invalid(
                    field: item.field("cpus"), value: "\(cpus)", "must be from 1 to \(VMSpecValidation.maxCPUs)")
            }
            guard let memoryMiB = try item.sizeMiB("memory") else {
                throw VireoError(.invalidArgument, "\(item.field("memory")): is required")
            }
            guard (1...VMSpecValidation.maxMemoryMiB).contains(memoryMiB) else {
                throw VireoError.invalid(
                    field: item.field("memory"), value: ByteSize.format(mib: memoryMiB), "must be from 1MiB to 16TiB")
            }
            let state = try item.requiredString("state")
            guard state == "running" || state == "stopped" else {
                throw VireoError.invalid(field: item.field("state"), value: "'\(state)'", "must be running or stopped")
            }
            if vms.contains(where: { $0.id.rawValue == id }) {
                throw VireoError.invalid(field: item.field("id"), value: "'\(id)'", "is listed twice")
            }
            if vms.contains(where: { $0.spec.name == name }) {
                throw VireoError.invalid(field: item.field("name"), value: "'\(name)'", "is listed twice")
            }
            let spec = VMSpec(name: name, image: VMImportRequest.image, cpus: cpus, memoryMiB: memoryMiB, host: host)
            vms.append(VM(id: VMID(id), spec: spec, running: state == "running"))
        }
        return VMImport(host: host, vms: vms)
    }
}

/// The response of `POST /v1/vms/import`: the recorded VMs, in the order of the request.
public struct VMImportResult: Sendable, Codable, Equatable {
    public var items: [VMView]
    public init(items: [VMView]) { self.items = items }
}
