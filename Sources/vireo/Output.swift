import Foundation
import VireoAPI
import VireoModel

/// Prints rows as aligned columns, the way people read listings.
func printTable(_ header: [String], _ rows: [[String]]) {
    var widths = header.map(\.count)
    for row in rows {
        for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) }
    }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, cell in
            i == cells.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0)
        }.joined(separator: "  ")
    }
    print(line(header))
    for row in rows { print(line(row)) }
}

func printJSON<T: Encodable>(_ value: T) throws {
    let data = try VireoJSON.encoder(pretty: true).encode(value)
    print(String(decoding: data, as: UTF8.self))
}

/// "3s", "5m", "2h", "4d": how long ago, for listings.
func age(since date: Date, now: Date = Date()) -> String {
    let seconds = max(0, Int(now.timeIntervalSince(date)))
    if seconds < 120 { return "\(seconds)s" }
    if seconds < 7200 { return "\(seconds / 60)m" }
    if seconds < 172_800 { return "\(seconds / 3600)h" }
    return "\(seconds / 86400)d"
}

func stderr(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}
