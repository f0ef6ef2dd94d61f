/// A piece of a VM's serial console output, located by byte offsets in the console log its host
/// keeps. Offsets let the controller tell new output from output it already has.
public struct ConsoleChunk: Sendable, Codable, Equatable {
    /// Byte offset in the host's console log where `text` starts.
    public var offset: UInt64
    /// Byte offset just past `text`: where to read from next time.
    public var next: UInt64
    /// The output, as UTF-8 (invalid bytes replaced).
    public var text: String

    public init(offset: UInt64, next: UInt64, text: String) {
        self.offset = offset
        self.next = next
        self.text = text
    }
}

/// The console output the controller keeps for one VM: its last `retained` bytes, and where the
/// host's console log has been read up to.
public struct ConsoleTail: Sendable, Codable, Equatable {
    /// What the controller keeps per VM, in bytes (256 KiB).
    public static let defaultRetainedBytes = 256 << 10

    /// The most recent output, at most the retained size, starting at a character boundary.
    public var text: String
    /// Offset in the host's console log up to which output has been taken in (the agent reads on
    /// from here).
    public var next: UInt64
    /// Bytes taken in since the VM was created; `text` ends at this position. Readers that follow
    /// the output ask for what comes after the position they last saw.
    public var written: UInt64

    public init(text: String = "", next: UInt64 = 0, written: UInt64 = 0) {
        self.text = text
        self.next = next
        self.written = written
    }

    /// Takes in `chunk`. Output before `next` is already here and is skipped, except when the
    /// chunk starts at 0 below `next`: then the host's log started over and all of it is new.
    public mutating func append(_ chunk: ConsoleChunk, retaining limit: Int = defaultRetainedBytes) {
        var bytes = Array(chunk.text.utf8)
        if chunk.offset < next && chunk.offset > 0 {
            let overlap = next - chunk.offset
            guard overlap < UInt64(bytes.count) else { return }
            bytes.removeFirst(Int(overlap))
        }
        guard !bytes.isEmpty || chunk.next != next else { return }
        next = chunk.next
        written += UInt64(bytes.count)
        var kept = Array(text.utf8) + bytes
        if kept.count > limit {
            kept.removeFirst(kept.count - limit)
            // Start at a character: drop UTF-8 continuation bytes left at the front.
            while let first = kept.first, first & 0xC0 == 0x80 { kept.removeFirst() }
        }
        text = String(decoding: kept, as: UTF8.self)
    }

    /// The kept output after `position` (a `written` value seen earlier); all of it when that
    /// position is no longer kept.
    public func text(after position: UInt64) -> String {
        guard position < written else { return "" }
        let available = UInt64(text.utf8.count)
        let wanted = written - position
        guard wanted < available else { return text }
        var bytes = Array(text.utf8.suffix(Int(wanted)))
        while let first = bytes.first, first & 0xC0 == 0x80 { bytes.removeFirst() }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The last `count` lines of `text` (a final line without a newline counts as one).
    public static func lastLines(_ count: Int, of text: String) -> String {
        guard count > 0 else { return "" }
        var lines = 0
        var index = text.endIndex
        // A trailing newline ends the last line; it does not start another.
        if text.last == "\n" { index = text.index(before: index) }
        while index > text.startIndex {
            let previous = text.index(before: index)
            if text[previous] == "\n" {
                lines += 1
                if lines == count { return String(text[index...]) }
            }
            index = previous
        }
        return text
    }
}
