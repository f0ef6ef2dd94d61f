import Foundation
import VireoModel
import VireoProcess

/// Busy CPU time of the host an agent stands for, and the CPUs it may use.
///
/// An agent in its own cgroup (a testbed host, or an agent started in a slice) is measured by that
/// group: its CPU time (`cpuacct.usage` on v1, `cpu.stat` `usage_usec` on v2) over what its quota
/// and cpuset allow. An agent in the root group is the whole machine: `/proc/stat`.
struct HostCPUMeter: Sendable {
    enum Source: Sendable, Equatable {
        /// A file with cumulative nanoseconds (v1 `cpuacct.usage`).
        case nanoseconds(String)
        /// v2 `cpu.stat`, its `usage_usec` line.
        case cpuStat(String)
        /// The machine: the first line of `/proc/stat`.
        case procStat
    }

    let source: Source
    let capacity: Double

    /// Finds this process's cgroup (v1 or v2) and its limits; the machine if it is in the root group.
    static func detect(cgroupFile: String = "/proc/self/cgroup", root: String = "/sys/fs/cgroup") -> HostCPUMeter {
        let machine = Double(ProcessInfo.processInfo.activeProcessorCount)
        guard let text = try? String(contentsOfFile: cgroupFile, encoding: .utf8) else {
            return HostCPUMeter(source: .procStat, capacity: machine)
        }
        var v1: [String: String] = [:]
        var v2: String?
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 3 else { continue }
            if parts[0] == "0" && parts[1].isEmpty {
                v2 = parts[2]
            } else {
                for controller in parts[1].split(separator: ",") { v1[String(controller)] = parts[2] }
            }
        }
        func read(_ path: String) -> String? {
            (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        // v1: each controller in its own mount (`cpu,cpuacct` may be one).
        if let path = v1["cpuacct"], path != "/" {
            let mounts = ["\(root)/cpuacct", "\(root)/cpu,cpuacct"]
            if let mount = mounts.first(where: { FileManager.default.fileExists(atPath: $0 + path + "/cpuacct.usage") }) {
                var capacity = machine
                let cpuPath = v1["cpu"] ?? path
                for cpuMount in ["\(root)/cpu", "\(root)/cpu,cpuacct"] {
                    if let quota = read(cpuMount + cpuPath + "/cpu.cfs_quota_us").flatMap(Double.init),
                        let period = read(cpuMount + cpuPath + "/cpu.cfs_period_us").flatMap(Double.init),
                        quota > 0, period > 0
                    {
                        capacity = min(capacity, quota / period)
                        break
                    }
                }
                if let cpuset = v1["cpuset"], let cpus = read("\(root)/cpuset\(cpuset)/cpuset.cpus").flatMap(countCPUs) {
                    capacity = min(capacity, Double(cpus))
                }
                return HostCPUMeter(source: .nanoseconds(mount + path + "/cpuacct.usage"), capacity: capacity)
            }
        }
        // v2: one tree (on hybrid machines mounted at `unified`).
        if let path = v2, path != "/" {
            for mount in [root, "\(root)/unified"] where FileManager.default.fileExists(atPath: mount + path + "/cpu.stat") {
                var capacity = machine
                let max = read(mount + path + "/cpu.max")?.split(separator: " ")
                if let max, max.count == 2, let quota = Double(max[0]), let period = Double(max[1]), period > 0 {
                    capacity = min(capacity, quota / period)
                }
                if let cpus = read(mount + path + "/cpuset.cpus.effective").flatMap(countCPUs) {
                    capacity = min(capacity, Double(cpus))
                }
                return HostCPUMeter(source: .cpuStat(mount + path + "/cpu.stat"), capacity: capacity)
            }
        }
        return HostCPUMeter(source: .procStat, capacity: machine)
    }

    /// Busy seconds and capacity now; nil if the source cannot be read.
    func read() -> HostCPUUsage? {
        switch source {
        case .nanoseconds(let path):
            guard let text = try? String(contentsOfFile: path, encoding: .utf8),
                let ns = Double(text.trimmingCharacters(in: .whitespacesAndNewlines))
            else { return nil }
            return HostCPUUsage(busySeconds: ns / 1e9, capacity: capacity)
        case .cpuStat(let path):
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
            for line in text.split(separator: "\n") where line.hasPrefix("usage_usec ") {
                guard let us = Double(line.dropFirst("usage_usec ".count)) else { return nil }
                return HostCPUUsage(busySeconds: us / 1e6, capacity: capacity)
            }
            return nil
        case .procStat:
            guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
                let busy = Self.busyTicks(procStat: text)
            else { return nil }
            return HostCPUUsage(busySeconds: busy / ProcessStat.ticksPerSecond, capacity: capacity)
        }
    }

    /// Busy ticks from the `cpu` line of /proc/stat: everything but idle and iowait (guest time is
    /// already in user).
    static func busyTicks(procStat: String) -> Double? {
        guard let line = procStat.split(separator: "\n").first(where: { $0.hasPrefix("cpu ") }) else { return nil }
        let fields = line.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard fields.count >= 8 else { return nil }
        // user nice system idle iowait irq softirq steal
        return fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7]
    }

    /// `0-2,4` → 4.
    static func countCPUs(_ list: String) -> Int? {
        var count = 0
        for part in list.split(separator: ",") {
            let bounds = part.split(separator: "-").compactMap { Int($0) }
            switch bounds.count {
            case 1: count += 1
            case 2 where bounds[1] >= bounds[0]: count += bounds[1] - bounds[0] + 1
            default: return nil
            }
        }
        return count > 0 ? count : nil
    }
}
