import CLibvirt
import Foundation
import VireoDriver
import VireoModel

#if canImport(FoundationXML)
    import FoundationXML
#endif

/// What Vireo makes of one existing libvirt domain it is asked to adopt (`vireo import libvirt`):
/// the VM it would record, or every reason it cannot.
///
/// Vireo adopts a domain as it is — same UUID (the VM id), same name, same disk — and never
/// restarts it. So it refuses what its libvirt driver could not run, stop and delete afterwards, or
/// what a Vireo VM cannot describe:
/// - a domain type other than `qemu`, `kvm` or `test` (the driver runs QEMU domains);
/// - a transient domain (stopping it would remove it; Vireo starts a stopped VM from its definition);
/// - more than one disk, or a disk that is not a file (`block`, `network`, `volume`, `dir`, a `lun`):
///   a Vireo VM has one disk, a file;
/// - `<hostdev>` and `<redirdev>` (a host device passed through: Vireo cannot account for it);
/// - `<os><nvram>` (UEFI variables), snapshots and a managed save image: libvirt refuses to undefine
///   such a domain without deleting them, and Vireo does not delete what it did not create;
/// - a name that is not a Vireo VM name (lowercase letters, digits and '-', at most 63 characters).
///
/// A domain without a disk (direct kernel boot) is accepted; CD-ROM and floppy drives, network
/// interfaces and other devices stay as they are.
public struct LibvirtDomainConversion: Sendable, Equatable, Codable {
    /// The libvirt domain name; also the VM name.
    public var domain: String
    /// The domain's UUID, lowercase: the VM id.
    public var uuid: String
    /// Whether the domain runs now (running, paused or blocked): the VM's intent.
    public var running: Bool
    public var cpus: Int
    /// The domain's maximum memory (`<memory>`), rounded up to whole MiB.
    public var memoryMiB: Int
    /// The disk file, or nil for a domain without a disk.
    public var disk: String?
    /// The file the first serial port is appended to (Vireo's console), or nil when it has none.
    public var serialLog: String?
    /// Why the domain cannot be imported, one sentence per element; empty when it can.
    public var refusals: [String]

    public var importable: Bool { refusals.isEmpty }

    /// The image name every imported VM carries: it was not built from Vireo's catalogue, and
    /// nothing builds it (`VMImportRequest.image` on the controller's side).
    public static let importedImage = "imported"

    /// The refusal of a domain that already carries Vireo's metadata.
    public static let alreadyManaged = "already managed by Vireo (it carries Vireo's <metadata>)"

    /// What libvirt says about a domain besides its XML.
    public struct Facts: Sendable, Equatable {
        public var active: Bool
        public var persistent: Bool
        public var snapshots: Int
        public var managedSave: Bool
        /// Vireo's metadata element when the domain already has one (it is then already managed).
        public var vireoMetadata: String?

        public init(
            active: Bool, persistent: Bool = true, snapshots: Int = 0, managedSave: Bool = false,
            vireoMetadata: String? = nil
        ) {
            self.active = active
            self.persistent = persistent
            self.snapshots = snapshots
            self.managedSave = managedSave
            self.vireoMetadata = vireoMetadata
        }
    }

    /// Converts a domain's XML (`virDomainGetXMLDesc`) and facts; never throws: a domain that
    /// cannot be imported comes back with its reasons.
    public static func convert(xml: String, facts: Facts) -> LibvirtDomainConversion {
        var result = LibvirtDomainConversion(
            domain: "", uuid: "", running: facts.active, cpus: 0, memoryMiB: 0, disk: nil, serialLog: nil, refusals: [])
        // XMLDocument recovers from malformed input; XMLParser says whether it is XML (on Linux its
        // `parse()` may return true and still leave an error).
        let parser = XMLParser(data: Data(xml.utf8))
        guard parser.parse(), parser.parserError == nil else {
            result.refusals.append(
                "the domain XML does not parse (line \(parser.lineNumber), column \(parser.columnNumber))")
            return result
        }
        let root: XMLElement
        do {
            guard let element = try XMLDocument(xmlString: xml, options: []).rootElement(), element.name == "domain"
            else {
                result.refusals.append("not a libvirt domain definition (no <domain> element)")
                return result
            }
            root = element
        } catch {
            result.refusals.append("the domain XML does not parse: \(error.localizedDescription)")
            return result
        }
        result.domain = root.child("name")?.text ?? ""
        result.uuid = (root.child("uuid")?.text ?? "").lowercased()
        if UUID(uuidString: result.uuid) == nil { result.refusals.append("<uuid> '\(result.uuid)' is not a UUID") }
        if let problem = ResourceName.problem(with: result.domain) {
            result.refusals.append("<name> '\(result.domain)': a Vireo VM name \(problem)")
        }
        if facts.vireoMetadata != nil { result.refusals.append(alreadyManaged) }
        let type = root.attribute(forName: "type")?.stringValue ?? ""
        if !["qemu", "kvm", "test"].contains(type) {
            result.refusals.append("<domain type='\(type)'>: Vireo's libvirt driver runs only qemu, kvm and test domains")
        }
        if !facts.persistent {
            result.refusals.append("transient domain (no persistent definition): stopping it would remove it; define it first")
        }
        result.cpus = cpus(root, into: &result.refusals)
        result.memoryMiB = memoryMiB(root, into: &result.refusals)
        if root.child("os")?.child("nvram") != nil {
            result.refusals.append(
                "<os><nvram>: libvirt undefines it only by deleting the NVRAM file, which Vireo did not create")
        }
        if facts.snapshots > 0 {
            result.refusals.append(
                "\(facts.snapshots) snapshot\(facts.snapshots == 1 ? "" : "s"): libvirt undefines it only by dropping them")
        }
        if facts.managedSave {
            result.refusals.append("a managed save image: libvirt undefines it only by deleting the image")
        }
        let devices = root.child("devices")
        examineDisks(devices?.children("disk") ?? [], into: &result)
        for element in ["hostdev", "redirdev"] where !(devices?.children(element).isEmpty ?? true) {
            result.refusals.append("<\(element)>: host devices passed through to the guest are not supported")
        }
        result.serialLog =
            devices?.children("serial").first { $0.attribute(forName: "type")?.stringValue == "file" }?
            .child("source")?.attribute(forName: "path")?.stringValue
        return result
    }

    /// `<vcpu>`: the maximum the guest may have (a `current` below it can be raised at run time).
    private static func cpus(_ root: XMLElement, into refusals: inout [String]) -> Int {
        guard let text = root.child("vcpu")?.text else {
            refusals.append("no <vcpu> element")
            return 0
        }
        guard let cpus = Int(text.trimmingCharacters(in: .whitespaces)), cpus > 0 else {
            refusals.append("<vcpu> '\(text)' is not a positive number")
            return 0
        }
        return cpus
    }

    /// `<memory>` (the maximum; `<currentMemory>` is what a balloon leaves the guest), in whole MiB.
    private static func memoryMiB(_ root: XMLElement, into refusals: inout [String]) -> Int {
        guard let element = root.child("memory"), let text = element.text else {
            refusals.append("no <memory> element")
            return 0
        }
        let unit = element.attribute(forName: "unit")?.stringValue ?? "KiB"
        guard let bytes = Self.bytes(text.trimmingCharacters(in: .whitespaces), unit: unit), bytes > 0 else {
            refusals.append("<memory unit='\(unit)'>\(text)</memory> is not a memory size")
            return 0
        }
        return Int((bytes + (1 << 20) - 1) >> 20)
    }

    /// A libvirt scaled integer in bytes, read as libvirt reads it: `b`/`byte`/`bytes`; `k`, `M`, `G`,
    /// `T`, `P`, `E` alone or with `iB` are powers of 1024, with `B` powers of 1000 (`KB`, `MB`);
    /// letters in any case. Nil when the value or unit is not one, or it overflows.
    static func bytes(_ value: String, unit: String) -> UInt64? {
        guard let number = UInt64(value) else { return nil }
        let lower = unit.lowercased()
        var scale: UInt64 = 1
        if !["b", "byte", "bytes"].contains(lower) {
            guard let first = lower.first, let power = Array("kmgtpe").firstIndex(of: first) else { return nil }
            let base: UInt64
            switch lower.dropFirst() {
            case "", "ib": base = 1024
            case "b": base = 1000
            default: return nil
            }
            for _ in 0...power { scale *= base }
        }
        let (bytes, overflow) = number.multipliedReportingOverflow(by: scale)
        return overflow ? nil : bytes
    }

    private static func examineDisks(_ disks: [XMLElement], into result: inout LibvirtDomainConversion) {
        var files: [String] = []
        for disk in disks {
            let device = disk.attribute(forName: "device")?.stringValue ?? "disk"
            let type = disk.attribute(forName: "type")?.stringValue ?? "file"
            let target = disk.child("target")?.attribute(forName: "dev")?.stringValue ?? "?"
            switch device {
            case "cdrom", "floppy": continue
            case "disk":
                guard type == "file" else {
                    result.refusals.append(
                        "<disk type='\(type)'> (\(target)): only a disk that is a file is supported")
                    continue
                }
                guard let path = disk.child("source")?.attribute(forName: "file")?.stringValue else {
                    result.refusals.append("<disk type='file'> (\(target)) has no <source file=...>")
                    continue
                }
                files.append(path)
            default:
                result.refusals.append("<disk device='\(device)'> (\(target)): only disks, CD-ROMs and floppies are supported")
            }
        }
        if files.count > 1 {
            result.refusals.append("\(files.count) disks (\(files.joined(separator: ", "))): a Vireo VM has one disk")
        }
        result.disk = files.count == 1 ? files[0] : nil
    }

    /// The record Vireo's metadata carries for the adopted domain; `owner` is the state directory of
    /// the agent's libvirt driver that is to manage it.
    func record(owner: String) -> LibvirtRecord {
        LibvirtRecord(
            spec: InstanceSpec(
                id: VMID(uuid), name: domain, image: Self.importedImage, cpus: cpus, memoryMiB: memoryMiB),
            image: GuestImage(kernel: "", initrd: "", baseDisk: "", kernelCommandLine: "", readyMarker: ""),
            owner: owner, disk: disk ?? "", serialLog: serialLog ?? "")
    }
}

extension XMLElement {
    fileprivate func child(_ name: String) -> XMLElement? { elements(forName: name).first }
    fileprivate func children(_ name: String) -> [XMLElement] { elements(forName: name) }
    fileprivate var text: String? { stringValue }
}

extension LibvirtRecord {
    /// An adopted domain: Vireo did not define it, its guest prints no ready marker, and its disk
    /// is not Vireo's.
    var isImported: Bool { spec.image == LibvirtDomainConversion.importedImage }
}
