/// Picks series by metric name and labels: `http_requests_total{code="200",path!="/metrics"}`.
///
/// Objectives name their signal with a selector; the same syntax as PromQL's instant vector
/// selector, without regular expressions.
public struct SeriesSelector: Sendable, Equatable, CustomStringConvertible {
    public struct Matcher: Sendable, Equatable {
        public var label: String
        public var value: String
        public var equal: Bool
    }

    public var name: String
    public var matchers: [Matcher]

    public init(name: String, matchers: [Matcher] = []) {
        self.name = name
        self.matchers = matchers
    }

    /// Parses `text`; the error says what is wrong and where.
    public init(parsing text: String) throws(SelectorError) {
        var bytes = Substring(text.trimmingSpaces())
        let name = bytes.prefix { $0 != "{" }
        guard isMetricName(String(name)) else {
            throw SelectorError("'\(name)' is not a metric name (letters, digits, '_' and ':', not starting with a digit)")
        }
        self.name = String(name)
        bytes = bytes.dropFirst(name.count)
        matchers = []
        guard !bytes.isEmpty else { return }
        guard bytes.first == "{", bytes.last == "}" else { throw SelectorError("label matchers must be inside '{…}'") }
        bytes = bytes.dropFirst().dropLast()
        while !bytes.isEmpty {
            bytes = bytes.drop { $0 == " " }
            let label = bytes.prefix { $0 != "=" && $0 != "!" && $0 != " " }
            guard isLabelName(String(label)) else { throw SelectorError("'\(label)' is not a label name") }
            bytes = bytes.dropFirst(label.count).drop { $0 == " " }
            let equal: Bool
            if bytes.hasPrefix("!=") {
                equal = false
                bytes = bytes.dropFirst(2)
            } else if bytes.hasPrefix("=") {
                equal = true
                bytes = bytes.dropFirst()
            } else {
                throw SelectorError("label \(label) needs '=' or '!='")
            }
            bytes = bytes.drop { $0 == " " }
            guard bytes.first == "\"" else { throw SelectorError("the value of label \(label) must be quoted") }
            bytes = bytes.dropFirst()
            var value = ""
            var escaped = false
            var closed = false
            while let c = bytes.first {
                bytes = bytes.dropFirst()
                if escaped {
                    value.append(c == "n" ? "\n" : c)
                    escaped = false
                } else if c == "\\" {
                    escaped = true
                } else if c == "\"" {
                    closed = true
                    break
                } else {
                    value.append(c)
                }
            }
            guard closed else { throw SelectorError("the value of label \(label) has no closing quote") }
            matchers.append(Matcher(label: String(label), value: value, equal: equal))
            bytes = bytes.drop { $0 == " " }
            if bytes.first == "," {
                bytes = bytes.dropFirst()
            } else if !bytes.isEmpty {
                throw SelectorError("expected ',' after label \(label)")
            }
        }
    }

    public func matches(_ labels: Labels) -> Bool {
        matchers.allSatisfy { m in (labels[m.label] ?? "") == m.value ? m.equal : !m.equal }
    }

    /// The selector as PromQL writes it: label values quoted and escaped.
    public var promQL: String {
        guard !matchers.isEmpty else { return name }
        let matchers = matchers.map { "\($0.label)\($0.equal ? "=" : "!=")\"\(escapeLabelValue($0.value))\"" }
        return name + "{" + matchers.joined(separator: ",") + "}"
    }

    public var description: String {
        matchers.isEmpty
            ? name
            : name + "{" + matchers.map { "\($0.label)\($0.equal ? "=" : "!=")\"\($0.value)\"" }.joined(separator: ",") + "}"
    }
}

public struct SelectorError: Error, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A series' labels, sorted by name: the identity of a series within a metric.
public struct Labels: Sendable, Hashable, CustomStringConvertible {
    public private(set) var pairs: [Pair]

    public struct Pair: Sendable, Hashable {
        public var name: String
        public var value: String
    }

    public init(_ pairs: [(name: String, value: String)] = []) {
        self.pairs = pairs.map { Pair(name: $0.name, value: $0.value) }.sorted { $0.name < $1.name }
    }

    public subscript(name: String) -> String? { pairs.first { $0.name == name }?.value }

    /// Whether these labels are those of `other` that `keep` accepts.
    func equals(_ other: Labels, keeping keep: (String) -> Bool) -> Bool {
        var i = 0
        for pair in other.pairs where keep(pair.name) {
            guard i < pairs.count, pairs[i] == pair else { return false }
            i += 1
        }
        return i == pairs.count
    }

    /// The labels whose names `keep` accepts, in their order.
    public func filter(_ keep: (String) -> Bool) -> Labels {
        // Most often every label stays (`by (le)` of buckets labelled `le` alone): no copy then.
        guard pairs.contains(where: { !keep($0.name) }) else { return self }
        var copy = self
        copy.pairs.removeAll { !keep($0.name) }
        return copy
    }

    public var description: String {
        "{" + pairs.map { "\($0.name)=\"\(escapeLabelValue($0.value))\"" }.joined(separator: ",") + "}"
    }
}

/// A label value as it goes between quotes in the text format and in PromQL.
func escapeLabelValue(_ s: String) -> String {
    guard s.utf8.contains(where: { $0 == UInt8(ascii: "\\") || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\n") }) else {
        return s
    }
    return s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
        .replacingOccurrences(of: "\n", with: "\\n")
}

extension String {
    func trimmingSpaces() -> Substring {
        guard let start = firstIndex(where: { $0 != " " }), let end = lastIndex(where: { $0 != " " }) else { return "" }
        return self[start...end]
    }
}
