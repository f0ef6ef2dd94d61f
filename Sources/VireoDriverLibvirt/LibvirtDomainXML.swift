import Foundation
import VireoDriver
import VireoModel

/// Everything Vireo knows about one of its domains, kept in the domain itself (in `<metadata>`),
/// so that a restarted agent finds its VMs in libvirt alone: no file of ours can disagree with it.
struct LibvirtRecord: Codable, Equatable, Sendable {
    var spec: InstanceSpec
    var image: GuestImage
    /// The driver's state directory: two agents on one libvirt tell their domains apart by it.
    var owner: String
    var disk: String
    var serialLog: String
    /// The loopback port the guest's port 80 is forwarded to (QEMU user networking); nil: no network.
    var hostPort: Int? = nil

    /// The XML namespace of Vireo's metadata element.
    static let namespace = "https://vireo.dev/xmlns/libvirt/1"
    static let prefix = "vireo"

    /// The metadata element: the record as JSON in an attribute-free element, so libvirt keeps it
    /// verbatim (it re-serializes the XML but not the text).
    var metadataElement: String {
        let json = String(decoding: (try? JSONEncoder().encode(self)) ?? Data(), as: UTF8.self)
        return "<\(Self.prefix):vm xmlns:\(Self.prefix)=\"\(Self.namespace)\">\(json.xmlEscaped)</\(Self.prefix):vm>"
    }

    /// The record in a metadata element as libvirt returns it, or nil when it is not one of ours.
    static func parse(metadata: String) -> LibvirtRecord? {
        guard let open = metadata.firstIndex(of: ">"), let close = metadata.range(of: "</", options: .backwards),
            open < close.lowerBound
        else { return nil }
        let json = String(metadata[metadata.index(after: open)..<close.lowerBound]).xmlUnescaped
        return try? JSONDecoder().decode(LibvirtRecord.self, from: Data(json.utf8))
    }

    /// The libvirt domain name: `vireo-<name>`, so that `virsh list` tells Vireo's VMs apart.
    var domainName: String { "vireo-\(spec.name)" }

    /// The domain definition: direct kernel boot of the image, the VM's overlay as a virtio disk,
    /// the first serial port appended to a file, the user network when there is a `hostPort`, no
    /// display.
    ///
    /// `type` is the libvirt domain type: `qemu` (TCG), `kvm` (with the host's CPU model), or
    /// `test` for libvirt's test driver.
    func domainXML(type: String) -> String {
        var commandLine = "\(image.kernelCommandLine) vireo.name=\(spec.name)"
        if hostPort != nil { commandLine += " vireo.ip=10.0.2.15/24 vireo.gw=10.0.2.2" }
        return """
            <domain type='\(type.xmlEscaped)' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
              <name>\(domainName.xmlEscaped)</name>
              <metadata>\(metadataElement)</metadata>
              <memory unit='MiB'>\(spec.memoryMiB)</memory>
              <vcpu>\(spec.cpus)</vcpu>
              <os>
                <type arch='x86_64' machine='pc'>hvm</type>
                <kernel>\(image.kernel.xmlEscaped)</kernel>
                <initrd>\(image.initrd.xmlEscaped)</initrd>
                <cmdline>\(commandLine.xmlEscaped)</cmdline>
              </os>
              <features><acpi/></features>\(type == "kvm" ? "\n  <cpu mode='host-passthrough'/>" : "")
              <on_poweroff>destroy</on_poweroff>
              <on_reboot>destroy</on_reboot>
              <on_crash>destroy</on_crash>
              <devices>
                <disk type='file' device='disk'>
                  <driver name='qemu' type='qcow2' cache='writeback' discard='unmap'/>
                  <source file='\(disk.xmlEscaped)'/>
                  <target dev='vda' bus='virtio'/>
                </disk>
                <serial type='file'>
                  <source path='\(serialLog.xmlEscaped)' append='on'/>
                  <target port='0'/>
                </serial>
                <memballoon model='none'/>
              </devices>\(userNetwork)
            </domain>
            """
    }
}

extension LibvirtRecord {
    /// QEMU user networking with the guest's port 80 forwarded to `hostPort` on 127.0.0.1, as the
    /// qemu driver gives its guests. libvirt 9.0's own `<interface type='user'>` forwards ports only
    /// through passt, so this is passed to QEMU as arguments (libvirt marks the domain
    /// `custom-argv` for it). The MAC is derived from the VM id, so it stays the same across runs.
    var userNetwork: String {
        guard let hostPort else { return "" }
        let arguments = [
            "-netdev", "user,id=vireonet0,restrict=on,hostfwd=tcp:127.0.0.1:\(hostPort)-:80",
            // libvirt puts these arguments before its own devices, which it gives the low PCI slots
            // explicitly: the card takes one at the far end of the bus.
            "-device", "virtio-net-pci,netdev=vireonet0,mac=\(Self.mac(for: spec.id)),bus=pci.0,addr=0x1e",
        ]
        let lines = arguments.map { "    <qemu:arg value='\($0.xmlEscaped)'/>" }.joined(separator: "\n")
        return "\n  <qemu:commandline>\n\(lines)\n  </qemu:commandline>"
    }

    /// A stable, locally administered MAC address derived from the VM id.
    static func mac(for id: VMID) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in id.rawValue.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return "52:54:"
            + (0..<4).map { String(format: "%02x", UInt8(truncatingIfNeeded: hash >> (8 * $0))) }.joined(separator: ":")
    }
}

extension String {
    var xmlEscaped: String {
        var result = ""
        for character in self {
            switch character {
            case "&": result += "&amp;"
            case "<": result += "&lt;"
            case ">": result += "&gt;"
            case "\"": result += "&quot;"
            case "'": result += "&apos;"
            default: result.append(character)
            }
        }
        return result
    }

    var xmlUnescaped: String {
        replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&apos;", with: "'")
            .replacingOccurrences(of: "&#34;", with: "\"").replacingOccurrences(of: "&#39;", with: "'")
            .replacingOccurrences(of: "&amp;", with: "&")
    }
}
