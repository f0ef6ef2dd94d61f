import Foundation

extension LibvirtDriver {
    public struct Configuration: Sendable {
        /// The libvirt URI: `qemu:///system`, `test:///default`, ...
        public var uri: String
        public var stateDirectory: String
        /// How long `stop` waits for the guest to power off after the ACPI request before it
        /// destroys the domain.
        public var stopTimeout: Duration = .seconds(10)
        /// How long the driver watches the console for the ready marker after a start.
        public var readyTimeout: Duration = .seconds(300)
        /// The libvirt domain type of QEMU guests: `qemu` (TCG) or `kvm`.
        public var domainType: DomainType = .qemu
        /// Whether guests get QEMU user networking with their port 80 forwarded to a loopback port
        /// (`status` then gives it as their address). Not on the test hypervisor, which runs nothing.
        public var userNetwork = true

        public init(uri: String, stateDirectory: String) {
            self.uri = uri
            self.stateDirectory = stateDirectory
        }

        /// `kvm` only where the CPU has hardware virtualization (`vmx`/`svm`) and `/dev/kvm` opens, on
        /// a local URI: `/dev/kvm` alone proves nothing (a nested "PVM" KVM has one and crawls), and
        /// this machine's CPU says nothing about a remote host's.
        public static func probeDomainType(uri: String, cpuinfo: String, kvmUsable: Bool) -> DomainType {
            let local =
                uri.range(of: ":///") != nil && !uri.contains("+ssh") && !uri.contains("+tcp")
                && !uri.contains("+tls")
            let hardware = cpuinfo.split(separator: "\n").contains { line in
                line.hasPrefix("flags") && line.split(separator: " ").contains { $0 == "vmx" || $0 == "svm" }
            }
            return local && hardware && kvmUsable ? .kvm : .qemu
        }

        /// libvirt's test driver runs no guest: its domains are ready as soon as libvirt says they run.
        var guestsBoot: Bool { !uri.hasPrefix("test:") }
    }

    public enum DomainType: String, Sendable, CaseIterable {
        case qemu
        case kvm
    }
}
