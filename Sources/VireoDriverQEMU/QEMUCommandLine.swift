import Foundation
import VireoModel

/// The accelerator a VM runs on.
public enum Accelerator: String, Sendable, Codable, CaseIterable {
    case kvm
    case tcg

    /// KVM only where the CPU has hardware virtualization (`vmx`/`svm`) and `/dev/kvm` opens.
    ///
    /// The existence of `/dev/kvm` alone proves nothing: nested "PVM" KVM exposes one on CPUs without
    /// `vmx`/`svm`, and stock kernels crawl or abort on it (PLATFORM.md).
    public static func probe(cpuinfo: String, kvmUsable: Bool) -> Accelerator {
        let hardware = cpuinfo.split(separator: "\n").contains { line in
            line.hasPrefix("flags") && line.split(separator: " ").contains { $0 == "vmx" || $0 == "svm" }
        }
        return hardware && kvmUsable ? .kvm : .tcg
    }

    /// Reads `choice` (`auto`, `kvm`, `tcg`), probing this machine for `auto`.
    public static func resolve(_ choice: String) throws(VireoError) -> Accelerator {
        try resolve(
            choice, cpuinfo: { (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? "" },
            kvmUsable: { access("/dev/kvm", R_OK | W_OK) == 0 })
    }

    /// Reads `choice` (`auto`, `kvm`, `tcg`), probing the machine for `auto`.
    public static func resolve(_ choice: String, cpuinfo: () -> String, kvmUsable: () -> Bool) throws(VireoError)
        -> Accelerator
    {
        switch choice {
        case "auto": return probe(cpuinfo: cpuinfo(), kvmUsable: kvmUsable())
        case "kvm", "tcg": return Accelerator(rawValue: choice)!
        default: throw VireoError.invalid(field: "accel", value: "'\(choice)'", "expected auto, kvm or tcg")
        }
    }
}

/// How a guest's network card is attached.
public enum GuestNetwork: Sendable, Codable, Equatable {
    /// No network card.
    case none
    /// QEMU user-mode networking; the guest's port 80 is forwarded to `hostPort` on 127.0.0.1.
    case user(hostPort: Int)
    /// A tap device on a bridge; the guest has `address` (CIDR) and `gateway`.
    case tap(device: String, address: String, gateway: String?)
}

/// Everything that determines one QEMU invocation. `arguments` is a pure function of it, so the
/// command line can be tested without QEMU and rebuilt identically for an incoming migration.
public struct QEMUInvocation: Sendable, Equatable {
    public var name: String
    public var id: VMID
    public var accelerator: Accelerator
    public var cpus: Int
    public var memoryMiB: Int
    /// KiB left out of the guest's RAM (`memoryTrimKiB(on:)`); 0 gives it `memoryMiB` exactly.
    public var memoryTrimKiB = 0
    public var kernel: String
    public var initrd: String
    public var kernelCommandLine: String
    public var disk: String
    public var mac: String
    public var network: GuestNetwork
    public var qmpSocket: String
    public var serialLog: String
    /// `tcp:ADDR:PORT` to wait for an incoming migration instead of booting.
    public var incoming: String?
    /// A snapshot in the disk to run from instead of booting (`-loadvm`).
    public var loadSnapshot: String?
    /// The loopback TCP port (5900 or above) of a VNC server showing the VM's screen; nil: no
    /// display at all.
    public var vncPort: Int?
    /// False for the plain foreground command a person would type (no QMP, no sandbox):
    /// what `vireo bench boot` compares the driver against.
    public var managed = true

    public init(
        name: String, id: VMID, accelerator: Accelerator, cpus: Int, memoryMiB: Int, kernel: String, initrd: String,
        kernelCommandLine: String, disk: String, mac: String, network: GuestNetwork, qmpSocket: String,
        serialLog: String, incoming: String? = nil, loadSnapshot: String? = nil, vncPort: Int? = nil,
        memoryTrimKiB: Int = 0, managed: Bool = true
    ) {
        self.name = name
        self.id = id
        self.accelerator = accelerator
        self.cpus = cpus
        self.memoryMiB = memoryMiB
        self.kernel = kernel
        self.initrd = initrd
        self.kernelCommandLine = kernelCommandLine
        self.disk = disk
        self.mac = mac
        self.network = network
        self.qmpSocket = qmpSocket
        self.serialLog = serialLog
        self.incoming = incoming
        self.loadSnapshot = loadSnapshot
        self.vncPort = vncPort
        self.memoryTrimKiB = memoryTrimKiB
        self.managed = managed
    }

    /// What a new VM's RAM is made smaller by on `accelerator`, in KiB (nil: nothing).
    ///
    /// Under TCG, QEMU before 9.0 loses writes during a live migration (upstream commit
    /// 03bfc2188f, "physmem: Fix migration dirty bitmap coherency with TCG memory access"): when a
    /// RAM block's start and size are multiples of 64 pages it syncs the dirty bitmap a word at a
    /// time and clears the migration's bits without making the vCPUs' TLB catch the next write to
    /// those pages, so a page written again through a cached TLB entry is never sent again — the
    /// guest arrives with stale memory (its kernel crashed within seconds in about one live
    /// migration in ten of a guest writing memory quickly, docs/benchmarks.md). A RAM size 8 KiB
    /// short of a multiple of 256 KiB makes QEMU sync page by page, which resets the TLB entries
    /// of every page it clears. (QEMU rounds `-m` to 8 KiB.) Under KVM the kernel tracks dirty
    /// pages: nothing is taken.
    public static func memoryTrimKiB(on accelerator: Accelerator) -> Int? {
        accelerator == .tcg ? 8 : nil
    }

    /// The block node name of the VM's disk: snapshot jobs name it as the disk to snapshot and
    /// the place the memory state is kept in.
    public static let diskNode = "vireo-disk"

    /// The first TCP port of VNC displays (display 0); `-vnc` takes a display number, not a port.
    public static let vncBasePort = 5900

    /// The guest's address as the guest's init reads it from the kernel command line.
    var guestParameters: String {
        var parameters = "vireo.name=\(name)"
        switch network {
        case .none: break
        case .user: parameters += " vireo.ip=10.0.2.15/24 vireo.gw=10.0.2.2"
        case .tap(_, let address, let gateway):
            parameters += " vireo.ip=\(address)"
            if let gateway { parameters += " vireo.gw=\(gateway)" }
        }
        return parameters
    }

    public var arguments: [String] {
        var arguments = [
            "-name", "vireo-\(name),process=vireo-\(id),debug-threads=on",
            "-machine", "pc", "-accel", accelerator.rawValue,
            "-nodefaults", "-no-user-config", "-display", "none",
            "-m", memoryTrimKiB > 0 ? "\(memoryMiB * 1024 - memoryTrimKiB)K" : "\(memoryMiB)", "-smp", "\(cpus)",
            "-kernel", kernel, "-initrd", initrd, "-append", "\(kernelCommandLine) \(guestParameters)",
            // -blockdev, not -drive: a node -drive makes is read-only to block exports, and the NBD
            // export of an incoming copy-storage migration writes to it.
            "-blockdev",
            "driver=qcow2,node-name=\(Self.diskNode),discard=unmap,file.driver=file,file.filename=\(disk)",
            "-device", "virtio-blk-pci,drive=\(Self.diskNode)",
            "-chardev", "file,id=serial0,path=\(serialLog),append=on",
            "-serial", "chardev:serial0",
            // The guest kernel reboots on panic (panic=-1); QEMU exits instead, so a crash is seen.
            "-no-reboot",
        ]
        if managed {
            // No -daemonize: the seccomp filter forbids its fork; the driver starts QEMU detached.
            arguments += [
                "-qmp", "unix:\(qmpSocket),server=on,wait=off", "-sandbox", QEMUConfinement.sandbox,
            ]
        }
        if accelerator == .kvm { arguments += ["-cpu", "host"] }
        switch network {
        case .none: break
        case .user(let hostPort):
            arguments += [
                // restrict=on: the guest reaches nothing outside (not the host's loopback services
                // at 10.0.2.2, not the world); the forwarded port still reaches it.
                "-netdev", "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:\(hostPort)-:80",
                "-device", "virtio-net-pci,netdev=net0,mac=\(mac)",
            ]
        case .tap(let device, _, _):
            arguments += [
                "-netdev", "tap,id=net0,ifname=\(device),script=no,downscript=no",
                "-device", "virtio-net-pci,netdev=net0,mac=\(mac)",
            ]
        }
        if let vncPort {
            // -nodefaults leaves out the graphics card: the screen VNC shows needs one.
            arguments += ["-vnc", "127.0.0.1:\(vncPort - Self.vncBasePort)", "-device", "VGA"]
        }
        if let incoming { arguments += ["-mem-prealloc", "-incoming", incoming] }
        // The guest runs on from the saved memory, devices and disk; QEMU fails to start when the
        // disk has no snapshot of that name.
        if let loadSnapshot { arguments += ["-loadvm", loadSnapshot] }
        return arguments
    }

    /// A stable, locally administered MAC address derived from the VM ID.
    public static func mac(for id: VMID) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in id.rawValue.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        let bytes = (0..<4).map { UInt8(truncatingIfNeeded: hash >> (8 * $0)) }
        return "52:54:" + bytes.map { String($0, radix: 16).leftPadded(to: 2) }.joined(separator: ":")
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
