import VireoDriver
import VireoProcess

/// CPU time and resident memory of a QEMU process.
enum ProcessUsage {
    static func read(pid: Int32) -> ResourceUsage? {
        guard let stat = try? ProcessStat.read(pid: pid), let resident = ProcessStat.residentBytes(pid: pid) else {
            return nil
        }
        return ResourceUsage(cpuSeconds: stat.cpuSeconds, memoryBytes: resident)
    }
}
