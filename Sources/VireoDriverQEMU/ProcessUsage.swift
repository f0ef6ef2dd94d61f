import Foundation
import VireoDriver

/// CPU time and resident memory of a process, from `/proc/PID/stat` and `/proc/PID/statm`.
enum ProcessUsage {
    static let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))
    static let pageSize = UInt64(sysconf(Int32(_SC_PAGESIZE)))

    static func read(pid: Int32) -> ResourceUsage? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let statm = try? String(contentsOfFile: "/proc/\(pid)/statm", encoding: .utf8)
        else { return nil }
        return parse(stat: stat, statm: statm)
    }

    /// Fields after the command (which may hold spaces and parentheses): state is the 3rd field of
    /// the line, utime the 14th and stime the 15th; statm's 2nd field is resident pages.
    static func parse(stat: String, statm: String) -> ResourceUsage? {
        guard let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // fields[0] is the state (field 3), so field N is fields[N - 3].
        guard fields.count > 12, let utime = Double(fields[11]), let stime = Double(fields[12]) else { return nil }
        let pages = statm.split(separator: " ")
        guard pages.count > 1, let resident = UInt64(pages[1]) else { return nil }
        return ResourceUsage(cpuSeconds: (utime + stime) / ticksPerSecond, memoryBytes: resident * pageSize)
    }
}
