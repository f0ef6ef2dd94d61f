import Foundation
import Testing

@testable import VireoDriverQEMU

/// How an agent measures its host's CPU: its cgroup (v1 or v2) with the quota and cpuset that
/// bound it, or the machine.
@Suite("Host CPU meter")
struct HostCPUMeterTests {
    func tree(_ files: [String: String]) throws -> String {
        let root = temporaryDirectory()
        for (path, text) in files {
            let full = root + "/" + path
            try FileManager.default.createDirectory(
                atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try text.write(toFile: full, atomically: true, encoding: .utf8)
        }
        return root
    }

    @Test("cgroup v1: cpuacct usage over the quota and the cpuset")
    func v1() throws {
        let root = try tree([
            "proc/cgroup": "3:cpuset:/tb/h1\n2:cpuacct:/tb/h1\n1:cpu:/tb/h1\n0::/\n",
            "fs/cpuacct/tb/h1/cpuacct.usage": "2500000000\n",
            "fs/cpu/tb/h1/cpu.cfs_quota_us": "50000\n",
            "fs/cpu/tb/h1/cpu.cfs_period_us": "100000\n",
            "fs/cpuset/tb/h1/cpuset.cpus": "0-1\n",
        ])
        let meter = HostCPUMeter.detect(cgroupFile: root + "/proc/cgroup", root: root + "/fs")
        #expect(meter.source == .nanoseconds(root + "/fs/cpuacct/tb/h1/cpuacct.usage"))
        #expect(meter.read() == .init(busySeconds: 2.5, capacity: min(0.5, Double(ProcessInfo.processInfo.activeProcessorCount))))
    }

    @Test("cgroup v2: cpu.stat usage over cpu.max and the effective cpuset")
    func v2() throws {
        let root = try tree([
            "proc/cgroup": "0::/tb/h2\n",
            "fs/tb/h2/cpu.stat": "usage_usec 1500000\nuser_usec 1000000\n",
            "fs/tb/h2/cpu.max": "max 100000\n",
            "fs/tb/h2/cpuset.cpus.effective": "1\n",
        ])
        let meter = HostCPUMeter.detect(cgroupFile: root + "/proc/cgroup", root: root + "/fs")
        #expect(meter.read() == .init(busySeconds: 1.5, capacity: 1))
    }

    @Test("the root group is the whole machine; cpu lists and /proc/stat are parsed")
    func machine() throws {
        let root = try tree(["proc/cgroup": "2:cpuacct:/\n1:cpu:/\n0::/\n"])
        let meter = HostCPUMeter.detect(cgroupFile: root + "/proc/cgroup", root: root + "/fs")
        #expect(meter.source == .procStat)
        #expect(meter.capacity == Double(ProcessInfo.processInfo.activeProcessorCount))
        #expect(meter.read().map { $0.busySeconds > 0 } == true)
        #expect(HostCPUMeter.busyTicks(procStat: "cpu  100 5 20 900 7 1 2 3 0 0\ncpu0 1 2 3 4 5 6 7 8\n") == 131)
        #expect(HostCPUMeter.countCPUs("0-2,4") == 4)
        #expect(HostCPUMeter.countCPUs("3") == 1)
        #expect(HostCPUMeter.countCPUs("2-1") == nil)
    }
}
