/// Memory and disk sizes as users write them: `256MiB`, `1GiB`, `512Mi`, `2G`, or plain bytes.
///
/// Binary suffixes (`Ki`, `Mi`, `Gi`, `Ti`, optionally followed by `B`) are powers of 1024;
/// decimal ones (`K`, `M`, `G`, `T`, optionally followed by `B`) are powers of 1000, as in
/// Kubernetes quantities. Nothing is rounded: a value that is not a whole number of MiB is
/// rejected where MiB are required.
public enum ByteSize {
    public static let mebibyte: UInt64 = 1024 * 1024

    /// Parses a size into bytes, or returns nil when the text is not a size.
    public static func parseBytes(_ text: String) -> UInt64? {
        let trimmed = text.trimmingSpaces()
        guard !trimmed.isEmpty else { return nil }
        let digits = trimmed.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty, let value = UInt64(digits) else { return nil }
        let unit = trimmed.dropFirst(digits.count).trimmingSpaces()
        let multiplier: UInt64
        switch unit {
        case "", "B": multiplier = 1
        case "Ki", "KiB": multiplier = 1 << 10
        case "Mi", "MiB": multiplier = 1 << 20
        case "Gi", "GiB": multiplier = 1 << 30
        case "Ti", "TiB": multiplier = 1 << 40
        case "K", "KB", "k", "kB": multiplier = 1_000
        case "M", "MB": multiplier = 1_000_000
        case "G", "GB": multiplier = 1_000_000_000
        case "T", "TB": multiplier = 1_000_000_000_000
        default: return nil
        }
        let (product, overflow) = value.multipliedReportingOverflow(by: multiplier)
        return overflow ? nil : product
    }

    /// Parses a size that must be a positive whole number of MiB; errors name `field`.
    public static func parseMiB(_ text: String, field: String) throws(VireoError) -> Int {
        guard let bytes = parseBytes(text) else {
            throw VireoError.invalid(
                field: field, value: "'\(text)'", "not a size; use e.g. 256MiB, 1GiB or a number of bytes")
        }
        return try mib(fromBytes: bytes, field: field, shown: "'\(text)'")
    }

    /// Parses a size as the API and manifests take it, exactly as `/openapi.json` states it: a
    /// whole number without leading zeros followed by `Mi`, `MiB`, `Gi`, `GiB`, `Ti` or `TiB`
    /// (no spaces; other spellings are the command line's, which sends them as MiB). Errors name
    /// `field`.
    public static func parseAPIMiB(_ text: String, field: String) throws(VireoError) -> Int {
        let digits = text.prefix { $0.isASCII && $0.isNumber }
        let unit = text.dropFirst(digits.count)
        let shift: Int? =
            switch unit {
            case "Mi", "MiB": 0
            case "Gi", "GiB": 10
            case "Ti", "TiB": 20
            default: nil
            }
        guard let shift, let first = digits.first, first != "0", digits.count <= 12, let value = Int(digits) else {
            throw VireoError.invalid(
                field: field, value: "'\(text)'",
                "not a size; write a whole number of MiB, GiB or TiB (256MiB, 1GiB), or of bytes as a number, unquoted"
            )
        }
        return value << shift
    }

    /// A size as a person wrote it (`1073741824`, `1024KiB`, `1G`), as the API takes it: `<n>MiB`
    /// when it is a whole number of MiB, else as written (for the API to refuse, naming it).
    public static func apiForm(_ text: String) -> String {
        guard let bytes = parseBytes(text), bytes > 0, bytes % mebibyte == 0 else { return text }
        return "\(bytes / mebibyte)MiB"
    }

    public static func mib(fromBytes bytes: UInt64, field: String, shown: String) throws(VireoError) -> Int {
        guard bytes > 0 else { throw VireoError.invalid(field: field, value: shown, "size must be positive") }
        guard bytes % mebibyte == 0 else {
            throw VireoError.invalid(field: field, value: shown, "size must be a whole number of MiB")
        }
        let mib = bytes / mebibyte
        guard mib <= UInt64(Int32.max) else { throw VireoError.invalid(field: field, value: shown, "size is too large") }
        return Int(mib)
    }

    /// Formats MiB for people: `256MiB`, `2GiB`, `1.5GiB`.
    public static func format(mib: Int) -> String {
        if mib >= 1024 && mib % 1024 == 0 { return "\(mib / 1024)GiB" }
        if mib >= 1024 {
            let tenths = (mib * 10 + 512) / 1024
            return "\(tenths / 10).\(tenths % 10)GiB"
        }
        return "\(mib)MiB"
    }

    /// Formats a byte count for people, one decimal: `812 B`, `61.4 MiB`, `1.2 GiB`.
    public static func describe(bytes: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(bytes) B" : String(format: "%.1f %@", value, units[unit])
    }
}

extension StringProtocol {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while s.first == " " || s.first == "\t" { s = s.dropFirst() }
        while s.last == " " || s.last == "\t" { s = s.dropLast() }
        return String(s)
    }
}
