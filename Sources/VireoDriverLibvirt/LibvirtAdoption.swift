import CLibvirt
import Foundation
import VireoDriver
import VireoModel

/// The libvirt side of `vireo import libvirt`, run by the CLI against the URI it is given: reads
/// and converts the domains, then writes Vireo's metadata into them (or removes it again).
///
/// The metadata is the same record the driver writes into the domains it defines, naming as its
/// owner the state directory of the agent's driver that is to manage the VM (a host reports it as
/// the `state-directory` attribute); that driver takes the domain in on its next look
/// (`LibvirtDriver.takeInImported`).
public final class LibvirtImportSource: @unchecked Sendable {
    let connection: LibvirtConnection
    public var uri: String { connection.uri }

    /// Connects to `uri`; `.unavailable` with libvirt's reason when it cannot.
    public init(uri: String) throws {
        connection = try LibvirtConnection(uri: uri)
    }

    /// The domains called `names`, or with no names every domain that carries no Vireo metadata,
    /// sorted by name; each converted. `.notFound` naming the first name libvirt does not know.
    public func conversions(of names: [String]) throws -> [LibvirtDomainConversion] {
        if !names.isEmpty {
            return try names.map { name in
                guard let domain = virDomainLookupByName(connection.pointer, name) else {
                    throw LibvirtConnection.lastError("libvirt at \(uri) has no domain named '\(name)'", fallback: .notFound)
                }
                defer { virDomainFree(domain) }
                return try conversion(of: domain)
            }
        }
        var list: UnsafeMutablePointer<virDomainPtr?>?
        let count = virConnectListAllDomains(connection.pointer, &list, 0)
        guard count >= 0, let list else { throw LibvirtConnection.lastError("listing the domains of \(uri)") }
        defer { free(list) }
        var result: [LibvirtDomainConversion] = []
        for index in 0..<Int(count) {
            guard let domain = list[index] else { continue }
            defer { virDomainFree(domain) }
            let converted = try conversion(of: domain)
            if !converted.refusals.contains(LibvirtDomainConversion.alreadyManaged) { result.append(converted) }
        }
        return result.sorted { $0.domain < $1.domain }
    }

    func conversion(of domain: OpaquePointer) throws -> LibvirtDomainConversion {
        guard let xml = virDomainGetXMLDesc(domain, 0) else {
            throw LibvirtConnection.lastError("reading a domain's XML from \(uri)")
        }
        defer { free(xml) }
        let snapshots = virDomainSnapshotNum(domain, 0)
        let managedSave = virDomainHasManagedSaveImage(domain, 0)
        if snapshots < 0 || managedSave < 0 { virResetLastError() }
        let facts = LibvirtDomainConversion.Facts(
            active: virDomainIsActive(domain) == 1, persistent: virDomainIsPersistent(domain) == 1,
            snapshots: max(0, Int(snapshots)), managedSave: managedSave == 1,
            vireoMetadata: LibvirtConnection.metadata(of: domain, namespace: LibvirtRecord.namespace))
        return LibvirtDomainConversion.convert(xml: String(cString: xml), facts: facts)
    }

    /// Writes Vireo's metadata into the domain for the driver whose state directory is `owner`: into
    /// the running domain and its definition when it runs, else into its definition. `.conflict`
    /// when the domain gained Vireo metadata since it was converted.
    public func adopt(_ conversion: LibvirtDomainConversion, owner: String) throws {
        let json = try JSONEncoder().encode(conversion.record(owner: owner))
        let element = "<vm>\(String(decoding: json, as: UTF8.self).xmlEscaped)</vm>"
        try connection.withDomain(conversion.uuid) { domain throws in
            if LibvirtConnection.metadata(of: domain, namespace: LibvirtRecord.namespace) != nil {
                throw VireoError(.conflict, "domain '\(conversion.domain)' is already managed by Vireo")
            }
            guard
                virDomainSetMetadata(
                    domain, Int32(VIR_DOMAIN_METADATA_ELEMENT.rawValue), element, LibvirtRecord.prefix,
                    LibvirtRecord.namespace, Self.flags(domain)) == 0
            else { throw LibvirtConnection.lastError("writing Vireo's metadata into domain '\(conversion.domain)'") }
        }
    }

    /// Adopts every domain (`adopt`), then runs `record` (the controller recording the VMs); when a
    /// write or `record` fails, removes the metadata written so far again and rethrows — saying so
    /// when that removal failed too — so that nothing is imported half-way.
    public func adoptAll<T>(
        _ conversions: [LibvirtDomainConversion], owner: String, record: () async throws -> T
    ) async throws -> T {
        var written: [LibvirtDomainConversion] = []
        do {
            for conversion in conversions {
                try adopt(conversion, owner: owner)
                written.append(conversion)
            }
            return try await record()
        } catch {
            var failures: [String] = []
            for conversion in written {
                do { try release(conversion) } catch { failures.append((error as? VireoError)?.message ?? "\(error)") }
            }
            guard !failures.isEmpty else { throw error }
            throw VireoError(
                (error as? VireoError)?.code ?? .internal,
                "\((error as? VireoError)?.message ?? "\(error)"); and Vireo's metadata could not be removed again: "
                    + failures.joined(separator: "; "))
        }
    }

    /// Removes Vireo's metadata from the domain again.
    public func release(_ conversion: LibvirtDomainConversion) throws {
        try connection.withDomain(conversion.uuid) { domain throws in
            guard
                virDomainSetMetadata(
                    domain, Int32(VIR_DOMAIN_METADATA_ELEMENT.rawValue), nil, nil, LibvirtRecord.namespace,
                    Self.flags(domain)) == 0
            else { throw LibvirtConnection.lastError("removing Vireo's metadata from domain '\(conversion.domain)'") }
        }
    }

    /// Whether the domain carries Vireo's metadata now.
    public func isManaged(_ conversion: LibvirtDomainConversion) throws -> Bool {
        try connection.withDomain(conversion.uuid) { domain in
            LibvirtConnection.metadata(of: domain, namespace: LibvirtRecord.namespace) != nil
        }
    }

    /// The running domain and its definition, or only the definition of one that does not run.
    private static func flags(_ domain: OpaquePointer) -> UInt32 {
        let config = VIR_DOMAIN_AFFECT_CONFIG.rawValue
        return virDomainIsActive(domain) == 1 ? config | VIR_DOMAIN_AFFECT_LIVE.rawValue : config
    }
}

extension LibvirtDriver {
    /// The fingerprint attribute that carries the driver's state directory: the owner the CLI
    /// writes into the metadata of a domain it imports for this host.
    public static let stateDirectoryAttribute = "state-directory"

    /// Takes in the imported domains whose metadata names this driver and that it does not know
    /// yet — running or not, as they are: nothing is started or restarted — and forgets an imported
    /// domain whose metadata is gone again (an import the controller refused, undone by the CLI).
    /// Called at every `status`, so an import shows up at the agent's next heartbeat.
    ///
    /// An adopted domain gets the per-VM directory the driver keeps (`run-offset`); its disk and
    /// console file stay where they are, and `delete` undefines the domain without deleting them.
    func takeInImported(on connection: LibvirtConnection) {
        guard let domains = try? connection.domainsWithMetadata(namespace: LibvirtRecord.namespace) else { return }
        var marked: Set<VMID> = []
        for (uuid, metadata) in domains {
            guard let metadata, let record = LibvirtRecord.parse(metadata: metadata), record.isImported,
                record.owner == configuration.stateDirectory
            else { continue }
            let id = record.spec.id
            marked.insert(id)
            guard instances[id] == nil else { continue }
            try? FileManager.default.createDirectory(atPath: directory(of: id), withIntermediateDirectories: true)
            instances[id] = Instance(record: record, uuid: uuid, runOffset: Self.size(of: record.serialLog))
            logger.info("adopted an imported domain", metadata: ["vm": "\(record.spec.name)", "uuid": "\(uuid)"])
        }
        let present = Set(domains.map { $0.uuid })
        for (id, instance) in instances where instance.record.isImported && !marked.contains(id) {
            // A domain that is gone altogether stays: `status` reports it failed, `delete` clears it.
            guard present.contains(instance.uuid) else { continue }
            instances[id] = nil
            try? FileManager.default.removeItem(atPath: directory(of: id))
            logger.info("forgot a domain whose import was undone", metadata: ["vm": "\(instance.record.spec.name)"])
        }
    }

    /// `create` of an imported VM: nothing can be made from an image, so it is the adopted domain
    /// or an error saying it is missing.
    func createImported(_ spec: InstanceSpec) throws {
        takeInImported(on: try open())
        guard instances[spec.id] != nil else {
            throw VireoError(
                .notFound,
                "VM \(spec.name) was imported from libvirt domain \(spec.id), which libvirt at \(configuration.uri) "
                    + "no longer has with Vireo's metadata for this agent; an imported VM cannot be made again")
        }
    }
}
