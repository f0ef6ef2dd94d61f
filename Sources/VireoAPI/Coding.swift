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

    /// A date as Vireo writes it: ISO 8601 in UTC, to the nearest millisecond. The format style
    /// cuts off what is below a millisecond, and a time read back from its text is often a hair
    /// below it (`.123` parses to `.12299…`): half a millisecond added first makes the cut a
    /// rounding, so a time read and written again keeps its text (it lost a millisecond).
    public static func text(of date: Date) -> String {
        date.addingTimeInterval(0.0005).formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
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
