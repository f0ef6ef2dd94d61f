import Foundation
import VireoModel

/// A VM's own cgroup, below the agent's: its QEMU's CPU quota and memory limit.
///
/// On cgroup v1 (these machines, PLATFORM.md) a group in the `cpu` and one in the `memory`
/// hierarchy, each under the agent's own group there, so a host's limits (the testbed's per-host
/// groups) still hold for all its VMs together. On v2 one group under the agent's, when the
/// parent can delegate `cpu` and `memory`. Where neither works (no root, no controllers) VMs run
/// without one, and the driver says so in its fingerprint (`confinement`).
struct VMCgroup: Sendable, Equatable {
    /// The groups' directories.
    var directories: [String]

    /// QEMU's own memory on top of the guest's: TCG's translation cache, device and block-layer
    /// buffers, and the page cache of the disk it writes. Measured on TCG: see docs/security.md.
    static let memoryOverheadMiB = 256
    static let period = 100_000

    /// The memory limit for a guest of `memoryMiB`, in bytes.
    static func memoryLimitBytes(guestMiB memoryMiB: Int) -> Int { (memoryMiB + memoryOverheadMiB) << 20 }

    /// Where the agent's groups are, read once.
    struct Parent: Sendable, Equatable {
        enum Layout: Sendable, Equatable {
            case v1(cpu: String, memory: String)
            case v2(String)
        }
        var layout: Layout

        var description: String {
            switch layout {
            case .v1: "cgroup-v1"
            case .v2: "cgroup-v2"
            }
        }

        /// The agent's own groups, from `/proc/self/cgroup`; nil where this process cannot make
        /// groups below them.
        static func detect(root: String = "/sys/fs/cgroup", selfCgroup: String? = nil) -> Parent? {
            guard
                let text = selfCgroup ?? (try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8))
            else { return nil }
            var v1: [String: String] = [:]
            var v2: String?
            for line in text.split(separator: "\n") {
                let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
                guard fields.count == 3 else { continue }
                if fields[1].isEmpty {
                    v2 = fields[2]
                } else {
                    for controller in fields[1].split(separator: ",") { v1[String(controller)] = fields[2] }
                }
            }
            let fm = FileManager.default
            if let cpu = v1["cpu"], let memory = v1["memory"] {
                let cpuDirectory = "\(root)/cpu\(cpu == "/" ? "" : cpu)"
                let memoryDirectory = "\(root)/memory\(memory == "/" ? "" : memory)"
                guard fm.isWritableFile(atPath: cpuDirectory), fm.isWritableFile(atPath: memoryDirectory),
                    fm.fileExists(atPath: cpuDirectory + "/cpu.cfs_quota_us"),
                    fm.fileExists(atPath: memoryDirectory + "/memory.limit_in_bytes")
                else { return nil }
                return Parent(layout: .v1(cpu: cpuDirectory, memory: memoryDirectory))
            }
            if let v2 {
                let directory = "\(root)\(v2 == "/" ? "" : v2)"
                // v2's "no internal processes" rule: a group holding processes (the agent) cannot
                // give controllers to children unless it is the root; then VMs run without groups.
                guard fm.isWritableFile(atPath: directory),
                    let controllers = try? String(contentsOfFile: directory + "/cgroup.controllers", encoding: .utf8),
                    controllers.contains("cpu"), controllers.contains("memory"),
                    (try? write("+cpu +memory", to: directory + "/cgroup.subtree_control")) != nil
                else { return nil }
                return Parent(layout: .v2(directory))
            }
            return nil
        }
    }

    /// Makes (or re-limits) the group `name` under `parent` with the limits of a guest of `cpus`
    /// vCPUs and `memoryMiB`: a CFS quota of `cpus` CPUs (vCPU threads and QEMU's own threads
    /// together), a CPU weight in proportion to `cpus` (under contention VMs share a host's CPUs as
    /// their vCPUs do, not one share per VM), and a memory limit of the guest's memory plus
    /// `memoryOverheadMiB`.
    static func create(_ name: String, under parent: Parent, cpus: Int, memoryMiB: Int) throws -> VMCgroup {
        let quota = String(cpus * period)
        let memory = String(memoryLimitBytes(guestMiB: memoryMiB))
        switch parent.layout {
        case .v1(let cpuParent, let memoryParent):
            let cpu = "\(cpuParent)/\(name)"
            let memoryGroup = "\(memoryParent)/\(name)"
            try make(cpu)
            try make(memoryGroup)
            try write(String(1024 * cpus), to: cpu + "/cpu.shares")
            try write(String(period), to: cpu + "/cpu.cfs_period_us")
            try write(quota, to: cpu + "/cpu.cfs_quota_us")
            try write(memory, to: memoryGroup + "/memory.limit_in_bytes")
            return VMCgroup(directories: [cpu, memoryGroup])
        case .v2(let directory):
            let group = "\(directory)/\(name)"
            try make(group)
            try write(String(min(10_000, 100 * cpus)), to: group + "/cpu.weight")
            try write("\(quota) \(period)", to: group + "/cpu.max")
            try write(memory, to: group + "/memory.max")
            return VMCgroup(directories: [group])
        }
    }

    /// The groups of `name` under `parent` that exist (a run an earlier agent started).
    static func existing(_ name: String, under parent: Parent) -> VMCgroup? {
        let directories =
            switch parent.layout {
            case .v1(let cpu, let memory): ["\(cpu)/\(name)", "\(memory)/\(name)"]
            case .v2(let directory): ["\(directory)/\(name)"]
            }
        let present = directories.filter { FileManager.default.fileExists(atPath: $0) }
        return present.isEmpty ? nil : VMCgroup(directories: present)
    }

    /// The most memory the group has held (v1 `memory.max_usage_in_bytes`, v2 `memory.peak`).
    var memoryPeakBytes: Int? {
        for directory in directories {
            for file in ["memory.max_usage_in_bytes", "memory.peak"] {
                if let text = try? String(contentsOfFile: "\(directory)/\(file)", encoding: .utf8),
                    let value = Int(text.trimmingCharacters(in: .whitespacesAndNewlines))
                {
                    return value
                }
            }
        }
        return nil
    }

    /// Removes the groups once no process is left in them (a QEMU winding down is waited for up
    /// to 30 s; one still there then keeps its group, which the next recovery removes).
    func remove() async {
        for directory in directories {
            for _ in 0..<300 {
                guard let procs = try? String(contentsOfFile: directory + "/cgroup.procs", encoding: .utf8) else { break }
                if procs.isEmpty, rmdir(directory) == 0 || errno == ENOENT { break }
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
    }

    private static func make(_ path: String) throws {
        guard mkdir(path, 0o755) == 0 || errno == EEXIST else {
            throw VireoError(.failedPrecondition, "cannot create cgroup \(path): \(String(cString: strerror(errno)))")
        }
    }

    private static func write(_ value: String, to path: String) throws {
        // One write(2) per value, as cgroup files want.
        let fd = open(path, O_WRONLY)
        guard fd >= 0 else {
            throw VireoError(.failedPrecondition, "cannot open \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        let written = value.withCString { Foundation.write(fd, $0, strlen($0)) }
        guard written >= 0 else {
            throw VireoError(
                .failedPrecondition, "cannot write '\(value)' to \(path): \(String(cString: strerror(errno)))")
        }
    }
}
