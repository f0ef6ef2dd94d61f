import Foundation
import VireoModel

/// Per-host CPU limits for the testbed: a cgroup per host with a cpuset and a CFS quota, on
/// cgroup v1 (separate `cpu` and `cpuset` hierarchies) or v2 (one unified tree).
struct CgroupTree {
    enum Version { case v1, v2, unavailable }

    let name: String
    let version: Version
    let root: String

    init(name: String, root: String = "/sys/fs/cgroup") {
        self.name = name
        self.root = root
        let fm = FileManager.default
        if fm.fileExists(atPath: "\(root)/cpu/cpu.cfs_quota_us") && fm.fileExists(atPath: "\(root)/cpuset/cpuset.cpus") {
            version = .v1
        } else if let controllers = try? String(contentsOfFile: "\(root)/cgroup.controllers", encoding: .utf8),
            controllers.contains("cpu"), controllers.contains("cpuset")
        {
            version = .v2
        } else {
            version = .unavailable
        }
    }

    /// CPU weight of all the hosts together against the processes outside them (100 is the
    /// default): on a machine whose CPUs the controller and load generators share with the hosts,
    /// the hosts' guests come first, as they would on machines of their own.
    static let hostsWeight = 1000

    /// v1 with `cpuacct` mounted on its own (not with `cpu`): hosts need a group there too.
    var separateCPUAccounting: Bool {
        guard version == .v1, FileManager.default.fileExists(atPath: "\(root)/cpuacct/cpuacct.usage") else { return false }
        let resolve = { (path: String) in URL(fileURLWithPath: path).resolvingSymlinksInPath().path }
        return resolve("\(root)/cpuacct") != resolve("\(root)/cpu")
    }

    /// v1 with a `memory` hierarchy: hosts get a group there (without a limit) for their VMs' groups.
    var memoryHierarchy: Bool {
        version == .v1 && FileManager.default.fileExists(atPath: "\(root)/memory/memory.limit_in_bytes")
    }

    /// The directories above the hosts' groups, removed last.
    var parents: [String] {
        switch version {
        case .v1:
            ["\(root)/cpu/\(name)", "\(root)/cpuset/\(name)"] + (memoryHierarchy ? ["\(root)/memory/\(name)"] : [])
                + (separateCPUAccounting ? ["\(root)/cpuacct/\(name)"] : [])
        case .v2: ["\(root)/\(name)"]
        case .unavailable: []
        }
    }

    /// Creates the groups of one host; returns the directories whose `cgroup.procs` the host's
    /// processes join. `cpu` restricts the host to that CPU; `quota` (in CPUs) caps its time.
    func create(_ host: String, cpu: Int?, quota: Double?) throws -> [String] {
        let period = 100_000
        let quotaMicroseconds = quota.map { String(Int($0 * Double(period))) }
        switch version {
        case .unavailable:
            return []
        case .v1:
            let cpuGroup = "\(root)/cpu/\(name)/\(host)"
            try make(cpuGroup)
            try write(String(Self.hostsWeight * 1024 / 100), to: "\(root)/cpu/\(name)/cpu.shares")
            if let quotaMicroseconds {
                try write("\(period)", to: cpuGroup + "/cpu.cfs_period_us")
                try write(quotaMicroseconds, to: cpuGroup + "/cpu.cfs_quota_us")
            }
            // A v1 cpuset is unusable until it has CPUs and memory nodes, at every level.
            let parent = "\(root)/cpuset/\(name)"
            try make(parent)
            try copy("cpuset.cpus", from: "\(root)/cpuset", to: parent)
            try copy("cpuset.mems", from: "\(root)/cpuset", to: parent)
            let cpusetGroup = parent + "/" + host
            try make(cpusetGroup)
            try copy("cpuset.mems", from: parent, to: cpusetGroup)
            if let cpu {
                try write(String(cpu), to: cpusetGroup + "/cpuset.cpus")
            } else {
                try copy("cpuset.cpus", from: parent, to: cpusetGroup)
            }
            // No limit, but the host's VMs' memory groups go below it, so the testbed removes them
            // with it (a killed QEMU leaves its group).
            var groups = [cpuGroup, cpusetGroup]
            if memoryHierarchy {
                groups.append("\(root)/memory/\(name)/\(host)")
                try make(groups[groups.count - 1])
            }
            // The host's agent measures its CPU time in its own accounting group.
            if separateCPUAccounting {
                groups.append("\(root)/cpuacct/\(name)/\(host)")
                try make(groups[groups.count - 1])
            }
            return groups
        case .v2:
            let parent = "\(root)/\(name)"
            try write("+cpu +cpuset", to: "\(root)/cgroup.subtree_control")
            try make(parent)
            try write("+cpu +cpuset", to: parent + "/cgroup.subtree_control")
            try write(String(Self.hostsWeight), to: parent + "/cpu.weight")
            let group = parent + "/" + host
            try make(group)
            if let quotaMicroseconds { try write("\(quotaMicroseconds) \(period)", to: group + "/cpu.max") }
            if let cpu { try write(String(cpu), to: group + "/cpuset.cpus") }
            return [group]
        }
    }

    /// Removes a group and the groups below it (its VMs' groups, which outlive a killed QEMU); the
    /// kernel refuses while processes are in one, so wait for them briefly.
    static func remove(_ path: String) {
        var isDirectory: ObjCBool = false
        for child in (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        where FileManager.default.fileExists(atPath: path + "/" + child, isDirectory: &isDirectory) && isDirectory.boolValue {
            remove(path + "/" + child)
        }
        for _ in 0..<50 {
            if rmdir(path) == 0 || errno == ENOENT { return }
            usleep(100_000)
        }
    }

    private func make(_ path: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw VireoError(.failedPrecondition, "cannot create cgroup \(path): \(error.localizedDescription)")
        }
    }

    private func write(_ value: String, to path: String) throws {
        // cgroup files take one write(2) each; Data.write's atomic option would rename, which fails.
        guard let handle = FileHandle(forWritingAtPath: path) else {
            throw VireoError(.failedPrecondition, "cannot open \(path) for writing")
        }
        defer { try? handle.close() }
        do {
            try handle.write(contentsOf: Data(value.utf8))
        } catch {
            throw VireoError(.failedPrecondition, "cannot write '\(value)' to \(path): \(error.localizedDescription)")
        }
    }

    private func copy(_ file: String, from source: String, to destination: String) throws {
        let value = try String(contentsOfFile: "\(source)/\(file)", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        try write(value, to: "\(destination)/\(file)")
    }
}
