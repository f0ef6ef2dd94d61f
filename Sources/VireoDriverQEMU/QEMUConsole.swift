import Foundation
import VireoDriver
import VireoModel

extension QEMUDriver {
    public func consoleOutput(_ id: VMID, from offset: UInt64, limit: Int) throws -> ConsoleChunk {
        guard instances[id] != nil else { throw VireoError(.notFound, "VM \(id) is not on this host") }
        guard let handle = FileHandle(forReadingAtPath: paths(id).serial) else {
            return ConsoleChunk(offset: offset, next: offset, text: "")
        }
        defer { try? handle.close() }
        let size = (try? handle.seekToEnd()) ?? 0
        let start = offset > size ? 0 : offset  // the log started over
        try handle.seek(toOffset: start)
        var data = (try handle.read(upToCount: max(0, limit))) ?? Data()
        // End on a character boundary: drop a trailing partial UTF-8 sequence (it comes next time).
        if data.count == limit, let cut = Self.utf8Boundary(data) { data = data.prefix(cut) }
        return ConsoleChunk(offset: start, next: start + UInt64(data.count), text: String(decoding: data, as: UTF8.self))
    }

    /// The length of `data` without a trailing incomplete UTF-8 sequence, if it ends in one.
    static func utf8Boundary(_ data: Data) -> Int? {
        var index = data.count
        var continuation = 0
        while index > 0, continuation < 4 {
            let byte = data[data.startIndex + index - 1]
            if byte & 0xC0 == 0x80 { continuation += 1; index -= 1; continue }
            let length = byte >= 0xF0 ? 4 : byte >= 0xE0 ? 3 : byte >= 0xC0 ? 2 : 1
            return length > continuation + 1 ? index - 1 : nil
        }
        return nil
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
        return text.split(whereSeparator: \.isNewline).last.map { String($0.prefix(200)) }
    }
}
