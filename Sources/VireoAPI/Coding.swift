import Foundation

/// JSON as Vireo speaks it: ISO 8601 dates with milliseconds, stable key order.
public enum VireoJSON {
    public static func encoder(pretty: Bool = false) -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var c = encoder.singleValueContainer()
            try c.encode(text(of: date))
        }
        return encoder
    }

    /// A date as Vireo writes it: ISO 8601 in UTC, in milliseconds, cut (never later than the
    /// time: a time given back as `since` finds the record it came from). The format style cuts
    /// too, but a time read back from its text is often a hair below it (`.123` parses to
    /// `.12299…`) and lost a millisecond when written again; so the milliseconds are counted here,
    /// a microsecond's tolerance for that hair, and the middle of that millisecond is formatted.
    public static func text(of date: Date) -> String {
        let milliseconds = (date.timeIntervalSince1970 * 1000 + 0.001).rounded(.down)
        return Date(timeIntervalSince1970: (milliseconds + 0.5) / 1000)
            .formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }

    public static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let c = try decoder.singleValueContainer()
            let text = try c.decode(String.self)
            if let date = try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(text) { return date }
            if let date = try? Date.ISO8601FormatStyle().parse(text) { return date }
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "not an ISO 8601 date: \(text)")
        }
        return decoder
    }
}
