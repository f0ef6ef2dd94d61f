import VireoModel

/// Prometheus text exposition format (version 0.0.4), as exporters and the `web` guest serve it.
///
/// `PrometheusText.parse` turns a scrape into metric families. It is strict where a mistake would
/// silently change a number (a malformed value, a label without quotes, a bad escape) and says
/// where, by line; it accepts what real exporters emit (comments, blank lines, `NaN`, `±Inf`,
/// timestamps, samples without a `# TYPE`).
public enum PrometheusText {
    public static func parse(_ text: String) throws(ExpositionError) -> [MetricFamily] {
        var parser = Parser()
        let bytes = Array(text.utf8)
        var lineNumber = 0
        // Lines by bytes: with Characters, "\r\n" would be one grapheme and never split.
        for line in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            try parser.take(line.last == UInt8(ascii: "\r") ? line.dropLast() : line, at: lineNumber)
        }
        return parser.families()
    }
}

/// What is wrong with an exposition, and on which line (1-based).
public struct ExpositionError: Error, Equatable, CustomStringConvertible {
    public var line: Int
    public var message: String
    public var description: String { "line \(line): \(message)" }
}

/// One sample line: the full sample name (`x_bucket`, `x_sum`, ...), its labels, its value.
public struct Sample: Sendable, Equatable {
    public var name: String
    /// In the order they appear.
    public var labels: [(name: String, value: String)]
    public var value: Double
    /// Milliseconds since the epoch, when the exporter gave one.
    public var timestampMs: Int64?

    public func label(_ name: String) -> String? { labels.first { $0.name == name }?.value }

    public static func == (a: Sample, b: Sample) -> Bool {
        a.name == b.name && a.labels.elementsEqual(b.labels, by: { $0 == $1 })
            && (a.value == b.value || (a.value.isNaN && b.value.isNaN)) && a.timestampMs == b.timestampMs
    }
}

public struct MetricFamily: Sendable, Equatable {
    public var name: String
    public var type: MetricType
    public var help: String?
    public var samples: [Sample]
}

extension MetricFamily {
    /// The histogram of this family for one label set (without `le`): cumulative buckets, sum and
    /// count. Nil for other types or when the label set has no buckets.
    public func histogram(matching labels: [String: String] = [:]) -> Histogram? {
        guard type == .histogram else { return nil }
        func matches(_ sample: Sample) -> Bool { labels.allSatisfy { sample.label($0.key) == $0.value } }
        var buckets: [(upperBound: Double, count: Double)] = []
        var sum: Double?
        var count: Double?
        for sample in samples where matches(sample) {
            if sample.name == name + "_bucket", let le = sample.label("le").flatMap(parseValue) {
                buckets.append((le, sample.value))
            } else if sample.name == name + "_sum" {
                sum = sample.value
            } else if sample.name == name + "_count" {
                count = sample.value
            }
        }
        guard !buckets.isEmpty else { return nil }
        buckets.sort { $0.upperBound < $1.upperBound }
        return Histogram(buckets: buckets, sum: sum ?? .nan, count: count ?? buckets.last!.count)
    }
}

/// A Prometheus histogram: cumulative counts per upper bound (the last is `+Inf`).
public struct Histogram: Sendable, Equatable {
    public var buckets: [(upperBound: Double, count: Double)]
    public var sum: Double
    public var count: Double

    public static func == (a: Histogram, b: Histogram) -> Bool {
        a.buckets.elementsEqual(b.buckets, by: { $0 == $1 }) && a.count == b.count
            && (a.sum == b.sum || (a.sum.isNaN && b.sum.isNaN))
    }

    /// The q-quantile, interpolated linearly inside its bucket as Prometheus's
    /// `histogram_quantile` does; nil without observations. Falls in the `+Inf` bucket: the
    /// highest finite bound.
    public func quantile(_ q: Double) -> Double? {
        guard let total = buckets.last?.count, total > 0, (0...1).contains(q) else { return nil }
        let rank = q * total
        var lowerBound = 0.0
        var lowerCount = 0.0
        for bucket in buckets {
            if bucket.count >= rank {
                if bucket.upperBound == .infinity { return lowerBound }
                let inBucket = bucket.count - lowerCount
                guard inBucket > 0 else { return bucket.upperBound }
                return lowerBound + (bucket.upperBound - lowerBound) * (rank - lowerCount) / inBucket
            }
            lowerBound = bucket.upperBound
            lowerCount = bucket.count
        }
        return lowerBound
    }

    /// The same histogram's observations since `earlier` (counts and sum are counters).
    public func since(_ earlier: Histogram) -> Histogram? {
        guard buckets.count == earlier.buckets.count,
            zip(buckets, earlier.buckets).allSatisfy({ $0.upperBound == $1.upperBound && $0.count >= $1.count })
        else { return nil }  // reset or re-bucketed: no difference to take
        return Histogram(
            buckets: zip(buckets, earlier.buckets).map { ($0.upperBound, $0.count - $1.count) },
            sum: sum - earlier.sum, count: count - earlier.count)
    }
}

/// A sample value: a decimal or hex-free float, `NaN`, `+Inf`, `-Inf`.
func parseValue(_ text: String) -> Double? {
    if let value = plainDecimal(text.utf8) { return value }
    switch text {
    case "+Inf", "Inf", "+inf", "inf": return .infinity
    case "-Inf", "-inf": return -.infinity
    case "NaN", "nan": return .nan
    default:
        // Double(_:) also takes "0x1p3" and "infinity"; exporters never write those.
        guard let first = text.utf8.first,
            first == UInt8(ascii: "-") || first == UInt8(ascii: "+")
                || first == UInt8(ascii: ".") || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first),
            // Bytes, not `contains(_:)` on a String: that goes through Foundation's string search,
            // which was most of the time `histogram_quantile` spent.
            !text.utf8.contains(where: { $0 == UInt8(ascii: "x") || $0 == UInt8(ascii: "X") })
        else { return nil }
        return Double(text)
    }
}

/// A plain decimal ("0.25", "-3", "1024") of at most 15 significant digits and 22 decimals: the
/// usual sample value and bucket bound, read without `strtod`. Its digits make an integer below
/// 2^53 and 10^22 is the largest exact power of ten, so the one division rounds exactly as
/// `strtod` does (Clinger's fast path). Nil for anything else (exponents, more digits).
func plainDecimal(_ utf8: String.UTF8View) -> Double? {
    utf8.withContiguousStorageIfAvailable { bytes -> Double? in
        var mantissa: UInt64 = 0
        var significant = 0
        var decimals = 0
        var digits = 0
        var point = false
        var i = 0
        let negative = bytes.first == UInt8(ascii: "-")
        if negative || bytes.first == UInt8(ascii: "+") { i = 1 }
        while i < bytes.count {
            let byte = bytes[i]
            i += 1
            if byte == UInt8(ascii: ".") {
                guard !point else { return nil }
                point = true
                continue
            }
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            mantissa = mantissa * 10 + UInt64(byte - UInt8(ascii: "0"))
            if mantissa != 0 { significant += 1 }
            if point { decimals += 1 }
            digits += 1
            guard significant <= 15, decimals <= 22 else { return nil }
        }
        guard digits > 0 else { return nil }
        let value = Double(mantissa) / exactPowersOfTen[decimals]
        return negative ? -value : value
    } ?? nil
}

private let exactPowersOfTen: [Double] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20,
    1e21, 1e22,
]

private struct Parser {
    private var declared: [String: (type: MetricType, help: String?)] = [:]
    private var order: [String] = []
    private var samples: [String: [Sample]] = [:]

    mutating func take(_ line: ArraySlice<UInt8>, at number: Int) throws(ExpositionError) {
        var cursor = Cursor(line, line: number)
        cursor.skipSpaces()
        if cursor.atEnd { return }
        if cursor.peek == UInt8(ascii: "#") {
            try comment(&cursor)
        } else {
            try sample(&cursor)
        }
    }

    private mutating func comment(_ cursor: inout Cursor) throws(ExpositionError) {
        cursor.advance()
        cursor.skipSpaces()
        let keyword = cursor.word()
        guard keyword == "HELP" || keyword == "TYPE" else { return }  // a plain comment
        cursor.skipSpaces()
        let name = cursor.word()
        guard isMetricName(name) else { throw cursor.error("# \(keyword) needs a metric name, got '\(name)'") }
        cursor.skipSpaces()
        let rest = cursor.rest()
        if keyword == "TYPE" {
            guard let type = MetricType(rawValue: rest.trimmingTrailingSpaces()) else {
                throw cursor.error("unknown metric type '\(rest)' for \(name)")
            }
            if samples[name] != nil { throw cursor.error("# TYPE for \(name) after its samples") }
            if let existing = declared[name], existing.type != .untyped {
                throw cursor.error("second # TYPE for \(name)")
            }
            declare(name)
            declared[name]!.type = type
        } else {
            declare(name)
            declared[name]!.help = try unescapeHelp(rest, cursor: cursor)
        }
    }

    private mutating func declare(_ name: String) {
        if declared[name] == nil {
            declared[name] = (.untyped, nil)
            order.append(name)
        }
    }

    private mutating func sample(_ cursor: inout Cursor) throws(ExpositionError) {
        let name = cursor.word(until: [UInt8(ascii: "{"), UInt8(ascii: " "), UInt8(ascii: "\t")])
        guard isMetricName(name) else { throw cursor.error("'\(name)' is not a metric name") }
        var labels: [(name: String, value: String)] = []
        cursor.skipSpaces()
        if cursor.peek == UInt8(ascii: "{") {
            cursor.advance()
            labels = try labelSet(&cursor)
        }
        cursor.skipSpaces()
        let valueText = cursor.word()
        guard !valueText.isEmpty else { throw cursor.error("\(name) has no value") }
        guard let value = parseValue(valueText) else { throw cursor.error("'\(valueText)' is not a number (sample \(name))") }
        cursor.skipSpaces()
        var timestamp: Int64?
        if !cursor.atEnd {
            let text = cursor.word()
            guard let ms = Int64(text) else { throw cursor.error("'\(text)' is not a timestamp in milliseconds") }
            timestamp = ms
            cursor.skipSpaces()
            guard cursor.atEnd else { throw cursor.error("unexpected '\(cursor.rest())' after the timestamp") }
        }
        let family = familyName(of: name)
        if declared[family] == nil {
            declare(family)
        }
        samples[family, default: []].append(Sample(name: name, labels: labels, value: value, timestampMs: timestamp))
    }

    /// `name="value", ...}`; the opening brace is consumed.
    private func labelSet(_ cursor: inout Cursor) throws(ExpositionError) -> [(name: String, value: String)] {
        var labels: [(name: String, value: String)] = []
        while true {
            cursor.skipSpaces()
            if cursor.peek == UInt8(ascii: "}") {
                cursor.advance()
                return labels
            }
            let name = cursor.word(until: [UInt8(ascii: "="), UInt8(ascii: " "), UInt8(ascii: "}")])
            guard isLabelName(name) else { throw cursor.error("'\(name)' is not a label name") }
            cursor.skipSpaces()
            guard cursor.peek == UInt8(ascii: "=") else { throw cursor.error("label \(name) needs '='") }
            cursor.advance()
            cursor.skipSpaces()
            guard cursor.peek == UInt8(ascii: "\"") else { throw cursor.error("the value of label \(name) must be quoted") }
            cursor.advance()
            let value = try cursor.quoted()
            if labels.contains(where: { $0.name == name }) { throw cursor.error("label \(name) appears twice") }
            labels.append((name, value))
            cursor.skipSpaces()
            if cursor.peek == UInt8(ascii: ",") {
                cursor.advance()
            } else if cursor.peek != UInt8(ascii: "}") {
                throw cursor.error("expected ',' or '}' after label \(name)")
            }
        }
    }

    /// The family a sample belongs to: its own name, or the histogram/summary/counter it is a
    /// part of (`x_bucket` → `x` when `x` is a histogram).
    private func familyName(of sample: String) -> String {
        if declared[sample] != nil { return sample }
        for (suffix, types) in [
            ("_bucket", [MetricType.histogram]), ("_sum", [.histogram, .summary]), ("_count", [.histogram, .summary]),
            ("_total", [.counter]), ("_created", [.counter, .histogram, .summary]),
        ] where sample.hasSuffix(suffix) {
            let base = String(sample.dropLast(suffix.count))
            if let type = declared[base]?.type, types.contains(type) { return base }
        }
        return sample
    }

    private func unescapeHelp(_ text: String, cursor: Cursor) throws(ExpositionError) -> String {
        guard text.contains("\\") else { return text }
        var result = ""
        var escaping = false
        for character in text {
            if escaping {
                switch character {
                case "\\": result.append("\\")
                case "n": result.append("\n")
                default: result.append("\\"); result.append(character)  // HELP keeps unknown escapes
                }
                escaping = false
            } else if character == "\\" {
                escaping = true
            } else {
                result.append(character)
            }
        }
        if escaping { result.append("\\") }
        return result
    }

    func families() -> [MetricFamily] {
        order.compactMap { name in
            guard let declaration = declared[name] else { return nil }
            return MetricFamily(
                name: name, type: declaration.type, help: declaration.help, samples: samples[name] ?? [])
        }
    }
}

/// Reads one line byte by byte.
private struct Cursor {
    let bytes: ArraySlice<UInt8>
    var index: Int
    let line: Int

    init(_ bytes: ArraySlice<UInt8>, line: Int) {
        self.bytes = bytes
        self.index = bytes.startIndex
        self.line = line
    }

    var atEnd: Bool { index >= bytes.endIndex }
    var peek: UInt8? { atEnd ? nil : bytes[index] }
    mutating func advance() { index += 1 }

    mutating func skipSpaces() {
        while let byte = peek, byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") { index += 1 }
    }

    /// Up to the next space or tab (or one of `stops`).
    mutating func word(until stops: [UInt8] = [UInt8(ascii: " "), UInt8(ascii: "\t")]) -> String {
        let start = index
        while let byte = peek, !stops.contains(byte), byte != UInt8(ascii: " "), byte != UInt8(ascii: "\t") {
            index += 1
        }
        return String(decoding: bytes[start..<index], as: UTF8.self)
    }

    mutating func rest() -> String {
        defer { index = bytes.endIndex }
        return String(decoding: bytes[index...], as: UTF8.self)
    }

    /// A label value after its opening quote, with `\\`, `\"` and `\n` unescaped; consumes the
    /// closing quote.
    mutating func quoted() throws(ExpositionError) -> String {
        var value: [UInt8] = []
        while let byte = peek {
            advance()
            switch byte {
            case UInt8(ascii: "\""):
                return String(decoding: value, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard let escaped = peek else { break }
                advance()
                switch escaped {
                case UInt8(ascii: "\\"): value.append(UInt8(ascii: "\\"))
                case UInt8(ascii: "\""): value.append(UInt8(ascii: "\""))
                case UInt8(ascii: "n"): value.append(UInt8(ascii: "\n"))
                default: throw error("unknown escape '\\\(Character(Unicode.Scalar(escaped)))' in a label value")
                }
            default:
                value.append(byte)
            }
        }
        throw error("label value is not closed with '\"'")
    }

    func error(_ message: String) -> ExpositionError { ExpositionError(line: line, message: message) }
}

func isMetricName(_ name: String) -> Bool {
    guard let first = name.utf8.first, isNameStart(first) || first == UInt8(ascii: ":") else { return false }
    return name.utf8.allSatisfy { isNameStart($0) || isDigit($0) || $0 == UInt8(ascii: ":") }
}

func isLabelName(_ name: String) -> Bool {
    guard let first = name.utf8.first, isNameStart(first) else { return false }
    return name.utf8.allSatisfy { isNameStart($0) || isDigit($0) }
}

private func isNameStart(_ byte: UInt8) -> Bool {
    (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
        || byte == UInt8(ascii: "_")
}

private func isDigit(_ byte: UInt8) -> Bool { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) }

extension String {
    fileprivate func trimmingTrailingSpaces() -> String {
        var text = Substring(self)
        while text.last == " " || text.last == "\t" { text = text.dropLast() }
        return String(text)
    }
}
