import Foundation
import VireoModel
import VireoProcess

/// How the driver confines each QEMU (docs/security.md): the same layers libvirt applies.
///
/// - **A uid of its own per VM.** An agent running as root starts every QEMU as an unprivileged
///   uid from `uids` (with a group of the same number and no other groups), derived from the VM ID
///   and kept in its record. Two guests' QEMUs cannot read each other's disks, signal or trace
///   each other; none can read the agent's state. An agent that is not root runs QEMU as itself.
/// - **A seccomp filter**: `-sandbox` with QEMU's deny sets (obsolete system calls, set*uid,
///   fork/exec, scheduler and resource changes). QEMU therefore cannot `-daemonize` (a fork):
///   the driver starts it detached itself (`HostTool.spawnDetached`).
/// - **A cgroup of its own** with the CPU and memory limits of its spec (`VMCgroup`).
/// - **Only what it needs**: the agent makes the tap (owned by the VM's uid, so QEMU opens it
///   without privileges), the disk, the VM's directory (0700) and the directory of its QMP socket
///   (0700, the socket made under umask 077) before QEMU starts, and hands them to that uid.
///   Its directory holds `qemu.log` (what QEMU prints) and the pid file the launcher writes.
struct QEMUConfinement: Sendable, Equatable {
    /// The uids QEMU processes run as: 2^24 of them from 2^30, far above the users and the
    /// subordinate ranges of a Debian system. Nil: QEMU runs as the agent (which is not root).
    var uids: Range<UInt32>?

    /// QEMU's seccomp filter with every deny set it has.
    static let sandbox = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"

    static let defaultUIDs: Range<UInt32> = (1 << 30)..<((1 << 30) + (1 << 24))

    /// Root agents confine to per-VM uids; others cannot change uid and run QEMU as themselves.
    static func forCurrentProcess() -> QEMUConfinement {
        QEMUConfinement(uids: getuid() == 0 ? defaultUIDs : nil)
    }

    /// The uid for VM `id`: its hash's slot in the range, or the next free one when another VM here
    /// holds that slot. Nil when QEMU runs as the agent.
    func uid(for id: VMID, taken: Set<UInt32>) -> UInt32? {
        guard let uids else { return nil }
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in id.rawValue.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        let count = UInt64(uids.count)
        var slot = hash % count
        while taken.contains(uids.lowerBound + UInt32(slot)) { slot = (slot + 1) % count }
        return uids.lowerBound + UInt32(slot)
    }

    /// Gives `path` to `uid` (group the same number) with `mode`; nothing to do without a uid.
    static func handOver(_ path: String, to uid: UInt32?, mode: mode_t) throws {
        guard let uid else { return }
        guard chown(path, uid, uid) == 0, chmod(path, mode) == 0 else {
            throw VireoError(
                .internal, "cannot hand \(path) to QEMU's uid \(uid): \(String(cString: strerror(errno)))")
        }
    }

    /// Makes sure uid `uid` (no groups but its own number) can reach `path`: every directory above
    /// it searchable, and `access` (r=4, w=2, x=1) on the file itself. Throws naming the first
    /// directory or file in the way, so that an unreachable image or state directory is a clear
    /// error instead of QEMU's "Permission denied".
    static func checkReachable(_ path: String, by uid: UInt32?, access: mode_t = 0o4) throws {
        guard let uid else { return }
        var directory = (path as NSString).deletingLastPathComponent
        var directories: [String] = []
        while !directory.isEmpty, directory != "/" {
            directories.append(directory)
            directory = (directory as NSString).deletingLastPathComponent
        }
        for directory in directories.reversed() + ["/"] {
            guard allows(directory, uid: uid, bits: 0o1) else {
                throw VireoError(
                    .failedPrecondition,
                    "QEMU runs as uid \(uid) (docs/security.md) and cannot reach \(path): \(directory) is not "
                        + "searchable by other users; keep Vireo's data and images outside such a directory "
                        + "(as root the default is /var/lib/vireo) or make it searchable (chmod o+x)")
            }
        }
        guard allows(path, uid: uid, bits: access) else {
            let what = access & 0o2 != 0 ? "write" : access & 0o4 != 0 ? "read" : "enter"
            throw VireoError(.failedPrecondition, "QEMU runs as uid \(uid) (docs/security.md) and cannot \(what) \(path)")
        }
    }

    /// True when `uid` (group `uid`, no others) has `bits` (r=4, w=2, x=1) on `path`.
    private static func allows(_ path: String, uid: UInt32, bits: mode_t) -> Bool {
        var info = stat()
        guard stat(path, &info) == 0 else { return false }
        let mode = info.st_mode
        let granted =
            info.st_uid == uid ? (mode >> 6) & 0o7 : info.st_gid == uid ? (mode >> 3) & 0o7 : mode & 0o7
        return granted & bits == bits
    }

    /// The command that runs `binary arguments` as `uid` (or as the agent without one).
    static func command(binary: String, arguments: [String], uid: UInt32?) -> [String] {
        guard let uid else { return [binary] + arguments }
        return [
            "setpriv", "--reuid=\(uid)", "--regid=\(uid)", "--clear-groups", "--inh-caps=-all", "--no-new-privs", "--",
            binary,
        ] + arguments
    }
}

extension QEMUDriver {
    /// Prepares what VM `id`'s QEMU is handed before it starts: its uid (given at the first
    /// launch on this host and kept in the record), the VM's directory (0700) and the directory of
    /// its QMP socket (0700), its disk and console log (0600), all owned by that uid; and checks
    /// that the uid reaches the image's files. (`qemu.log` stays the agent's: QEMU writes it
    /// through the descriptors it inherits.) Returns the record as it now is.
    func confine(_ id: VMID) throws -> Record {
        guard var record = instances[id]?.record else { throw VireoError(.notFound, "VM \(id) is not on this host") }
        let paths = paths(id)
        if record.uid == nil, confinement.uids != nil {
            let taken = Set(instances.values.compactMap(\.record.uid))
            record.uid = confinement.uid(for: id, taken: taken)
            try Self.write(record, to: paths.record)
            instances[id]?.record = record
        }
        let uid = record.uid
        let fm = FileManager.default
        // The state and runtime directories: searchable by QEMU's uids, listable by no one else.
        for directory in [configuration.stateDirectory, runtimeDirectory] {
            try fm.createDirectory(atPath: directory, withIntermediateDirectories: true)
            if uid != nil { chmod(directory, 0o711) }
        }
        try fm.createDirectory(atPath: paths.runtime, withIntermediateDirectories: true)
        try QEMUConfinement.handOver(paths.runtime, to: uid, mode: 0o700)
        try QEMUConfinement.handOver(paths.directory, to: uid, mode: 0o700)
        try QEMUConfinement.handOver(record.disk, to: uid, mode: 0o600)
        if fm.fileExists(atPath: paths.serial) { try QEMUConfinement.handOver(paths.serial, to: uid, mode: 0o600) }
        try QEMUConfinement.checkReachable(record.disk, by: uid, access: 0o6)
        try QEMUConfinement.checkReachable(paths.directory, by: uid, access: 0o3)
        try QEMUConfinement.checkReachable(paths.runtime, by: uid, access: 0o3)
        for file in [record.image.kernel, record.image.initrd, record.image.baseDisk] {
            try QEMUConfinement.checkReachable(file, by: uid)
        }
        return record
    }

    /// The name of VM `id`'s cgroup: unique per driver, as agents of several hosts may share one
    /// machine's hierarchy (the testbed) and a VM being migrated between two of them is on both.
    func cgroupName(_ id: VMID) -> String {
        "vireo-\(Self.shortHash(configuration.stateDirectory).prefix(8))-\(id)"
    }

    /// Removes the cgroup of VM `id`'s last run once its QEMU has left it (in the background: a
    /// large QEMU takes a moment to wind down).
    func releaseCgroup(_ id: VMID) {
        guard let cgroup = instances[id]?.cgroup else { return }
        instances[id]?.cgroup = nil
        let logger = logger
        instances[id]?.cgroupRemoval = Task {
            if let peak = cgroup.memoryPeakBytes {
                logger.debug("cgroup released", metadata: ["vm": "\(id)", "memory-peak-mib": "\(peak >> 20)"])
            }
            await cgroup.remove()
        }
    }

    /// Removes the groups of this driver's VMs that no QEMU runs in (an agent that crashed, or
    /// a VM deleted while its QEMU wound down), at recovery.
    func removeStaleCgroups() async {
        guard let parent = cgroupParent else { return }
        let prefix = "vireo-\(Self.shortHash(configuration.stateDirectory).prefix(8))-"
        let inUse = Set(instances.keys.filter { instances[$0]?.pid != nil }.map(cgroupName))
        let parents: [String] =
            switch parent.layout {
            case .v1(let cpu, let memory): [cpu, memory]
            case .v2(let directory): [directory]
            }
        for directory in parents {
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
            for entry in entries where entry.hasPrefix(prefix) && !inUse.contains(entry) {
                await VMCgroup(directories: ["\(directory)/\(entry)"]).remove()
            }
        }
    }

    /// Connects to a starting QEMU's QMP socket; it answers once the VM is set up. Fails with
    /// what QEMU printed when it exits first.
    static func connectQMP(_ path: String, pid: Int32, log: String, logOffset: UInt64, timeout: Duration)
        async throws -> QMPClient
    {
        let deadline = ContinuousClock.now + timeout
        while true {
            if FileManager.default.fileExists(atPath: path) {
                do {
                    return try await QMPClient.connect(
                        path: path, timeout: max(.milliseconds(100), deadline - ContinuousClock.now))
                } catch  where kill(pid, 0) == 0 && ContinuousClock.now < deadline {
                    // Not listening yet: try again.
                } catch {
                    break
                }
            } else if kill(pid, 0) != 0 || ContinuousClock.now >= deadline {
                break
            }
            try await Task.sleep(for: .milliseconds(2))
        }
        let said = outputSince(logOffset, of: log)
        if kill(pid, 0) != 0 {
            throw VireoError(.internal, "QEMU exited while starting" + (said.isEmpty ? "" : ": \(said)"))
        }
        throw VireoError(.internal, "QEMU (pid \(pid)) did not answer QMP at \(path) within \(timeout)")
    }

    /// QEMU's output in its log from `offset` on, as one line.
    static func outputSince(_ offset: UInt64, of log: String) -> String {
        guard let handle = FileHandle(forReadingAtPath: log) else { return "" }
        defer { try? handle.close() }
        try? handle.seek(toOffset: offset)
        let data = (try? handle.readToEnd()) ?? Data()
        return String(decoding: data, as: UTF8.self).split(separator: "\n").suffix(3).joined(separator: "; ")
    }
}
