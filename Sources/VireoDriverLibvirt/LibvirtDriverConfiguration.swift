import Foundation
import VireoModel

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
        /// A directory every host of the cluster sees at the same path (NFS, a cluster file system),
        /// where VM disks go (`<dir>/<id>.qcow2`) instead of the state directory: a live migration
        /// then moves memory and devices only. Nil: a live migration copies the disk as well.
        public var sharedDisks: String?
        /// The URI other hosts' libvirtd use to reach this host's, to send it a VM (peer to peer: the
        /// source's libvirtd connects itself). Nil: `uri` when it names a host or a socket, else
        /// `qemu+tcp://<the agent's address>/system` (libvirtd's `listen_tcp`).
        public var peerURI: String?
        /// How long a migration may take before it is cancelled (the VM then keeps running at the
        /// source).
        public var migrationTimeout: Duration = .seconds(120)
        /// Whether the guest runs while its memory is copied (see `MigrationMode`).
        public var migrationMode: MigrationMode = .auto
        /// The directory this host's libvirtd loads migration certificates from: its
        /// `migrate_tls_x509_cert_dir` (qemu.conf), given to Vireo alone. A move that comes with
        /// credentials (the controller's `--migration-tls on`) puts them there and asks libvirt
        /// for QEMU's TLS (`VIR_MIGRATE_TLS`); without this directory such a move is refused
        /// rather than sent in the clear.
        public var migrationTLSDirectory: String?

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

    /// How this host moves VMs, as the qemu driver's setting of the same name.
    public enum MigrationMode: String, Sendable, CaseIterable {
        /// Pre-copy while the guest runs (`VIR_MIGRATE_LIVE`), then a short pause for what it
        /// dirtied meanwhile.
        case live
        /// libvirt pauses the guest, copies its memory and resumes it on the destination: downtime
        /// is the whole transfer, but nothing depends on QEMU tracking the pages the guest writes.
        case paused
        /// `paused` for `qemu` (TCG) domains, where live pre-copy of write-heavy guests was measured
        /// to lose guests (docs/benchmarks.md, with the same QEMU), `live` for `kvm` ones.
        case auto

        /// How memory is copied for domains of `type`.
        public func resolved(for type: DomainType) -> MigrationCopyMode {
            switch self {
            case .live: .live
            case .paused: .paused
            case .auto: type == .qemu ? .paused : .live
            }
        }
    }
}
