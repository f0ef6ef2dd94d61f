import Foundation
import VireoDriver
import VireoModel

extension QEMUDriver {
    public func consoleOutput(_ id: VMID, from offset: UInt64, limit: Int) throws -> ConsoleChunk {
        guard instances[id] != nil else { throw VireoError(.notFound, "VM \(id) is not on this host") }
        return try ConsoleLog(path: paths(id).serial).read(from: offset, limit: limit)
    }

    /// The console output of the VM since it was created (the last `limit` bytes).
    public func consoleLog(_ id: VMID, limit: Int = 1 << 20) throws -> String {
        guard instances[id] != nil else { throw VireoError(.notFound, "VM \(id) is not on this host") }
        guard let handle = FileHandle(forReadingAtPath: paths(id).serial) else { return "" }
        defer { try? handle.close() }
        let size = (try? handle.seekToEnd()) ?? 0
        try? handle.seek(toOffset: size > UInt64(limit) ? size - UInt64(limit) : 0)
        return String(decoding: (try? handle.readToEnd()) ?? Data(), as: UTF8.self)
    }

    static func lastLine(of path: String) -> String? {
        guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        let size = (try? handle.seekToEnd()) ?? 0
        try? handle.seek(toOffset: size > 4096 ? size - 4096 : 0)
        let text = String(decoding: (try? handle.readToEnd()) ?? Data(), as: UTF8.self)
        let lines = text.split(whereSeparator: \.isNewline)
        // A kernel panic says why above its stack trace: that line, rather than the trace's last.
        let line = lines.last { $0.contains("Kernel panic") } ?? lines.last
        return line.map { String($0.prefix(200)) }
    }
}
