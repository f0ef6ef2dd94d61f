import Foundation
import VireoAPI
import VireoModel

/// What happened to a host's contexts, for the controller: `<directory>/journal.jsonl`, one JSON
/// entry per line. An entry is one appended line (cheap on every reset); the file is rewritten
/// only when the controller acknowledges entries, which then leave it. It survives agent
/// restarts, so what was done while the controller was away is reported when it is back.
///
/// A line cut short by a crash is skipped when the file is read. The journal holds at most
/// `maxEntries`: beyond that the oldest go, and the next entry says how many were lost.
final class ContextJournal {
    static let maxEntries = 10_000

    let path: String
    private(set) var entries: [ContextJournalEntry] = []
    private(set) var nextSeq = 1
    private var dropped = 0

    init(path: String) throws {
        self.path = path
        guard FileManager.default.fileExists(atPath: path) else { return }
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let decoder = Self.decoder
        for line in text.split(separator: "\n") {
            if let entry = try? decoder.decode(ContextJournalEntry.self, from: Data(line.utf8)) { entries.append(entry) }
        }
        // The numbering carries on after the last entry, also once acknowledged ones are gone:
        // the first line of a rewritten file is a marker holding it.
        nextSeq = (entries.map(\.seq).max() ?? 0) + 1
        if let marker = text.split(separator: "\n").first, marker.hasPrefix("#next "), let next = Int(marker.dropFirst(6)) {
            nextSeq = max(nextSeq, next)
        }
    }

    func append(_ action: ContextJournalEntry.Action, _ context: String, at time: Date, _ message: String? = nil) throws {
        var message = message
        if dropped > 0 {
            message = [message, "(\(dropped) older journal entries were dropped)"].compactMap { $0 }.joined(separator: " ")
            dropped = 0
        }
        let entry = ContextJournalEntry(seq: nextSeq, time: time, context: context, action: action, message: message)
        nextSeq += 1
        entries.append(entry)
        if entries.count > Self.maxEntries {
            dropped += entries.count - Self.maxEntries
            entries.removeFirst(entries.count - Self.maxEntries)
            try rewrite()
            return
        }
        var line = try Self.encoder.encode(entry)
        line.append(UInt8(ascii: "\n"))
        if let handle = FileHandle(forWritingAtPath: path) {
            defer { try? handle.close() }
            try handle.seekToEnd()
            try handle.write(contentsOf: line)
        } else {
            try rewrite()
        }
    }

    /// Forgets the entries up to `seq`: the controller has them.
    func acknowledge(upTo seq: Int) throws {
        guard let first = entries.first, first.seq <= seq else { return }
        entries.removeAll { $0.seq <= seq }
        try rewrite()
    }

    private func rewrite() throws {
        var data = Data("#next \(nextSeq)\n".utf8)
        for entry in entries {
            data.append(try Self.encoder.encode(entry))
            data.append(UInt8(ascii: "\n"))
        }
        try data.write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    private static var encoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }

    private static var decoder: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }
}
