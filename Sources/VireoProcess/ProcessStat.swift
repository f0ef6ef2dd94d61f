import Foundation
import VireoModel

/// What the kernel says of a process in `/proc/PID/stat`: its parent and the CPU time it used.
public struct ProcessStat: Sendable, Equatable {
    public static let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))
    public static let pageSize = UInt64(sysconf(Int32(_SC_PAGESIZE)))

    public var parent: Int32
    /// User and system time of the process itself, seconds.
    public var cpuSeconds: Double
    /// User and system time of the children it has waited for, seconds.
    public var reapedChildrenCPUSeconds: Double

    public init(parent: Int32, cpuSeconds: Double, reapedChildrenCPUSeconds: Double) {
        self.parent = parent
        self.cpuSeconds = cpuSeconds
        self.reapedChildrenCPUSeconds = reapedChildrenCPUSeconds
    }

    /// Reads `/proc/PID/stat`; throws when the process is gone.
    public static func read(pid: Int32) throws -> ProcessStat {
        let text = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        guard let stat = parse(text) else { throw VireoError(.internal, "unreadable /proc/\(pid)/stat: \(text)") }
        return stat
    }

    /// The fields after the command, which may itself hold spaces and parentheses: the state is the
    /// line's 3rd field, the parent its 4th, utime, stime, cutime and cstime its 14th to 17th.
    public static func parse(_ text: String) -> ProcessStat? {
        guard let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // fields[0] is the state (field 3), so field N is fields[N - 3].
        guard fields.count > 14, let parent = Int32(fields[1]), let user = Double(fields[11]),
            let system = Double(fields[12]), let childUser = Double(fields[13]), let childSystem = Double(fields[14])
        else { return nil }
        return ProcessStat(
            parent: parent, cpuSeconds: (user + system) / ticksPerSecond,
            reapedChildrenCPUSeconds: (childUser + childSystem) / ticksPerSecond)
    }

    /// Resident memory of the process, bytes (`/proc/PID/statm`'s second field, in pages); nil
    /// when the process is gone.
    public static func residentBytes(pid: Int32) -> UInt64? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/statm", encoding: .utf8) else { return nil }
        return residentBytes(statm: text)
    }

    public static func residentBytes(statm: String) -> UInt64? {
        let pages = statm.split(separator: " ")
        guard pages.count > 1, let resident = UInt64(pages[1]) else { return nil }
        return resident * pageSize
    }

    /// The processes whose parent is `pid`.
    public static func children(of pid: Int32) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { Int32($0) }.filter { (try? read(pid: $0).parent) == pid }
    }
}
