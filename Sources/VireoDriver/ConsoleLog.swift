import Foundation
import VireoModel

/// A VM's serial console as the file its hypervisor appends to (QEMU's chardev, libvirt's
/// serial file): every driver reads it the same way.
public struct ConsoleLog: Sendable {
    public let path: String

    public init(path: String) { self.path = path }

    /// Up to `limit` bytes from `offset` on, ending on a UTF-8 character boundary (a trailing partial
    /// character comes with the next read). A log shorter than `offset` started over: read from 0.
    public func read(from offset: UInt64, limit: Int) throws -> ConsoleChunk {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            return ConsoleChunk(offset: offset, next: offset, text: "")
        }
        defer { try? handle.close() }
        let size = (try? handle.seekToEnd()) ?? 0
        let start = offset > size ? 0 : offset
        try handle.seek(toOffset: start)
        var data = (try handle.read(upToCount: max(0, limit))) ?? Data()
        if data.count == limit, let cut = Self.utf8Boundary(data) { data = data.prefix(cut) }
        return ConsoleChunk(offset: start, next: start + UInt64(data.count), text: String(decoding: data, as: UTF8.self))
    }

    /// The length of `data` without a trailing incomplete UTF-8 sequence, if it ends in one.
    public static func utf8Boundary(_ data: Data) -> Int? {
        var index = data.count
        var continuation = 0
        while index > 0, continuation < 4 {
            let byte = data[data.startIndex + index - 1]
            if byte & 0xC0 == 0x80 {
                continuation += 1
                index -= 1
                continue
            }
            let length = byte >= 0xF0 ? 4 : byte >= 0xE0 ? 3 : byte >= 0xC0 ? 2 : 1
            return length > continuation + 1 ? index - 1 : nil
        }
        return nil
    }
}
