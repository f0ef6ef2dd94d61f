import Foundation

/// The subset of PromQL that objectives may use as their indicator, parsed into an expression
/// tree that `PromQLEvaluator` evaluates over the series Vireo scrapes:
///
/// - instant vector selectors with `=`, `!=`, `=~` and `!~` matchers, and range vector selectors
///   (`x[5m]`);
/// - `rate`, `irate` and `increase` of a range vector; `histogram_quantile(φ, v)`;
/// - `sum`, `avg`, `min`, `max` and `count`, with `by (…)` or `without (…)` before or after
///   their argument;
/// - `+ - * / % ^` between scalars and vectors (vectors matched on all their labels), unary
///   minus, parentheses and numbers.
///
/// What is outside the subset is refused by name (`offset`, `on (…)`, other functions...), and
/// every error gives the column where it was found.
public indirect enum PromQLExpression: Sendable, Equatable, CustomStringConvertible {
    case number(Double)
    case selector(PromQLSelector)
    /// A range vector: the selector's samples over the last `rangeMs`.
    case range(PromQLSelector, rangeMs: Int64)
    case call(PromQLFunction, [PromQLExpression])
    case aggregate(PromQLAggregation, PromQLGrouping?, PromQLExpression)
    case binary(PromQLOperator, PromQLExpression, PromQLExpression)
    case negate(PromQLExpression)

    /// Parses `text`; the error names the column and what was expected there.
    public init(parsing text: String) throws(PromQLError) {
        var parser = PromQLParser(text)
        self = try parser.parseAll()
    }

    public var description: String {
        switch self {
        case .number(let value): Self.format(value)
        case .selector(let selector): selector.description
        case .range(let selector, let rangeMs): "\(selector)[\(PromQLDuration.format(rangeMs))]"
        case .call(let function, let arguments):
            "\(function.rawValue)(\(arguments.map(\.description).joined(separator: ", ")))"
        case .aggregate(let op, let grouping, let argument):
            "\(op.rawValue)\(grouping.map { " \($0) " } ?? "")(\(argument))"
        case .binary(let op, let lhs, let rhs): "(\(lhs) \(op.rawValue) \(rhs))"
        case .negate(let operand): "-\(operand)"
        }
    }

    /// The expression with every instant selector read as its increase over `rangeMs`: a query
    /// over raw counters made into their growth in a window. Ranges are left as they are.
    public func increases(overMs rangeMs: Int64) -> PromQLExpression {
        switch self {
        case .selector(let selector): .call(.increase, [.range(selector, rangeMs: rangeMs)])
        case .number, .range: self
        case .call(let function, let arguments): .call(function, arguments.map { $0.increases(overMs: rangeMs) })
        case .aggregate(let op, let grouping, let argument): .aggregate(op, grouping, argument.increases(overMs: rangeMs))
        case .binary(let op, let lhs, let rhs): .binary(op, lhs.increases(overMs: rangeMs), rhs.increases(overMs: rangeMs))
        case .negate(let operand): .negate(operand.increases(overMs: rangeMs))
        }
    }

    /// Every selector in the expression, ranges' included, in order.
    public var selectors: [PromQLSelector] {
        switch self {
        case .number: []
        case .selector(let selector), .range(let selector, _): [selector]
        case .call(_, let arguments): arguments.flatMap(\.selectors)
        case .aggregate(_, _, let argument), .negate(let argument): argument.selectors
        case .binary(_, let lhs, let rhs): lhs.selectors + rhs.selectors
        }
    }

    /// How far back an instant selector looks for a series' last sample (Prometheus's 5 minutes).
    public static let instantLookbackMs: Int64 = 300_000

    /// How far back the expression reads: its longest range, and an instant selector's 5
    /// minutes of lookback.
    public var lookbackMs: Int64 {
        switch self {
        case .number: 0
        case .selector: Self.instantLookbackMs
        case .range(_, let rangeMs): rangeMs
        case .call(_, let arguments): arguments.map(\.lookbackMs).max() ?? 0
        case .aggregate(_, _, let argument), .negate(let argument): argument.lookbackMs
        case .binary(_, let lhs, let rhs): max(lhs.lookbackMs, rhs.lookbackMs)
        }
    }

    static func format(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return String(value)
    }
}

/// A metric name and label matchers.
public struct PromQLSelector: Sendable, Equatable, CustomStringConvertible {
    public var name: String
    public var matchers: [PromQLMatcher]

    public init(name: String, matchers: [PromQLMatcher] = []) {
        self.name = name
        self.matchers = matchers
    }

    public func matches(_ labels: Labels) -> Bool {
        matchers.allSatisfy { $0.matches(labels[$0.label] ?? "") }
    }

    public var description: String {
        matchers.isEmpty ? name : "\(name){\(matchers.map(\.description).joined(separator: ","))}"
    }
}

public struct PromQLMatcher: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable, Equatable {
        case equal = "="
        case notEqual = "!="
        case matches = "=~"
        case notMatches = "!~"
    }

    public var label: String
    public var kind: Kind
    public var value: String
    /// For `=~`/`!~`: the pattern, anchored at both ends as Prometheus anchors it.
    let pattern: AnchoredPattern?

    public init(label: String, kind: Kind, value: String) throws(PromQLError) {
        self.label = label
        self.kind = kind
        self.value = value
        if kind == .matches || kind == .notMatches {
            do {
                pattern = AnchoredPattern(try Regex("^(?:" + value + ")$"))
            } catch {
                throw PromQLError(column: 0, "'\(value)' (label \(label)) is not a regular expression: \(error)")
            }
        } else {
            pattern = nil
        }
    }

    /// A missing label matches as the empty string, as in Prometheus.
    public func matches(_ actual: String) -> Bool {
        switch kind {
        case .equal: actual == value
        case .notEqual: actual != value
        case .matches: pattern?.matches(actual) ?? false
        case .notMatches: !(pattern?.matches(actual) ?? false)
        }
    }

    public var description: String {
        "\(label)\(kind.rawValue)\"\(value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\""))\""
    }

    public static func == (a: PromQLMatcher, b: PromQLMatcher) -> Bool {
        a.label == b.label && a.kind == b.kind && a.value == b.value
    }
}

/// A compiled regular expression; `Regex` is not `Sendable`, and a compiled pattern is only ever
/// read.
struct AnchoredPattern: @unchecked Sendable {
    let regex: Regex<AnyRegexOutput>
    init(_ regex: Regex<AnyRegexOutput>) { self.regex = regex }
    func matches(_ text: String) -> Bool { (try? regex.wholeMatch(in: text)) != nil }
}

public enum PromQLFunction: String, Sendable, Equatable, CaseIterable {
    case rate
    case irate
    case increase
    case histogramQuantile = "histogram_quantile"
}

public enum PromQLAggregation: String, Sendable, Equatable, CaseIterable {
    case sum
    case avg
    case min
    case max
    case count
}

/// `by (a, b)` keeps only those labels; `without (a, b)` drops them.
public struct PromQLGrouping: Sendable, Equatable, CustomStringConvertible {
    public var without: Bool
    public var labels: [String]

    public init(without: Bool, labels: [String]) {
        self.without = without
        self.labels = labels
    }

    /// Whether the label `name` is part of a group's key.
    func keeps(_ name: String) -> Bool { labels.contains(name) != without }

    public var description: String { "\(without ? "without" : "by") (\(labels.joined(separator: ", ")))" }
}

public enum PromQLOperator: String, Sendable, Equatable, CaseIterable {
    case add = "+"
    case subtract = "-"
    case multiply = "*"
    case divide = "/"
    case modulo = "%"
    case power = "^"

    var precedence: Int {
        switch self {
        case .add, .subtract: 1
        case .multiply, .divide, .modulo: 2
        case .power: 3
        }
    }

    func apply(_ a: Double, _ b: Double) -> Double {
        switch self {
        case .add: a + b
        case .subtract: a - b
        case .multiply: a * b
        case .divide: a / b
        case .modulo: a.truncatingRemainder(dividingBy: b)
        case .power: Foundation.pow(a, b)
        }
    }
}

/// An error in a PromQL expression: where (1-based column; 0 when not tied to one) and what.
public struct PromQLError: Error, Sendable, Equatable, CustomStringConvertible {
    public var column: Int
    public var message: String

    public init(column: Int, _ message: String) {
        self.column = column
        self.message = message
    }

    public var description: String { column > 0 ? "at column \(column): \(message)" : message }
}

/// Prometheus durations: `5m`, `1h30m`, `250ms`, `2d` (units ms, s, m, h, d, w, y).
public enum PromQLDuration {
    static let units: [(String, Int64)] = [
        ("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000), ("w", 604_800_000),
        ("y", 31_536_000_000),
    ]

    /// Milliseconds, or nil when `text` is not a duration.
    public static func parse(_ text: Substring) -> Int64? {
        var rest = text
        var total: Int64 = 0
        var previousUnit = Int64.max
        guard !rest.isEmpty else { return nil }
        while !rest.isEmpty {
            let digits = rest.prefix { $0.isASCII && $0.isNumber }
            guard !digits.isEmpty, let amount = Int64(digits) else { return nil }
            rest = rest.dropFirst(digits.count)
            // "ms" comes before "m" in `units`: the longer unit wins.
            guard let (unit, ms) = units.first(where: { rest.hasPrefix($0.0) })
            else { return nil }
            // Units in decreasing order, each once (as Prometheus requires).
            guard ms < previousUnit else { return nil }
            previousUnit = ms
            let (product, overflow) = amount.multipliedReportingOverflow(by: ms)
            guard !overflow else { return nil }
            total += product
            rest = rest.dropFirst(unit.count)
        }
        return total
    }

    static func format(_ ms: Int64) -> String {
        var rest = ms
        var text = ""
        for (unit, size) in units.reversed() where rest >= size {
            text += "\(rest / size)\(unit)"
            rest %= size
        }
        return text.isEmpty ? "0s" : text
    }
}

// MARK: Tokens

struct PromQLToken: Equatable {
    enum Kind: Equatable {
        case identifier(String)
        case number(Double)
        case duration(Int64)
        case string(String)
        case punctuation(String)
        case end
    }

    var kind: Kind
    /// 1-based column of its first character.
    var column: Int

    var text: String {
        switch kind {
        case .identifier(let name): "'\(name)'"
        case .number(let value): "number \(PromQLExpression.format(value))"
        case .duration(let ms): "duration \(PromQLDuration.format(ms))"
        case .string(let value): "string \"\(value)\""
        case .punctuation(let p): "'\(p)'"
        case .end: "the end of the expression"
        }
    }
}

struct PromQLLexer {
    let characters: [Character]
    var position = 0

    init(_ text: String) { characters = Array(text) }

    mutating func tokens() throws(PromQLError) -> [PromQLToken] {
        var result: [PromQLToken] = []
        while true {
            let token = try next()
            result.append(token)
            if token.kind == .end { return result }
        }
    }

    private mutating func next() throws(PromQLError) -> PromQLToken {
        while position < characters.count, characters[position].isWhitespace { position += 1 }
        let column = position + 1
        guard position < characters.count else { return PromQLToken(kind: .end, column: column) }
        let c = characters[position]
        if c.isLetter || c == "_" || c == ":" {
            let start = position
            while position < characters.count,
                characters[position].isASCII && (characters[position].isLetter || characters[position].isNumber)
                    || characters[position] == "_" || characters[position] == ":"
            {
                position += 1
            }
            let word = String(characters[start..<position])
            switch word.lowercased() {
            case "inf": return PromQLToken(kind: .number(.infinity), column: column)
            case "nan": return PromQLToken(kind: .number(.nan), column: column)
            default: return PromQLToken(kind: .identifier(word), column: column)
            }
        }
        if c.isNumber || (c == "." && position + 1 < characters.count && characters[position + 1].isNumber) {
            let start = position
            while position < characters.count,
                characters[position].isASCII && (characters[position].isLetter || characters[position].isNumber)
                    || characters[position] == "."
                    || ((characters[position] == "+" || characters[position] == "-")
                        && (characters[position - 1] == "e" || characters[position - 1] == "E")
                        && !String(characters[start..<position]).hasPrefix("0x"))
            {
                position += 1
            }
            let word = String(characters[start..<position])
            if let value = Double(word) { return PromQLToken(kind: .number(value), column: column) }
            if let ms = PromQLDuration.parse(Substring(word)) { return PromQLToken(kind: .duration(ms), column: column) }
            throw PromQLError(column: column, "'\(word)' is neither a number nor a duration (such as 5m or 1h30m)")
        }
        if c == "\"" || c == "'" {
            position += 1
            var value = ""
            while position < characters.count {
                let d = characters[position]
                position += 1
                if d == c { return PromQLToken(kind: .string(value), column: column) }
                if d == "\\", position < characters.count {
                    let e = characters[position]
                    position += 1
                    switch e {
                    case "n": value.append("\n")
                    case "t": value.append("\t")
                    default: value.append(e)
                    }
                } else {
                    value.append(d)
                }
            }
            throw PromQLError(column: column, "the string has no closing \(c)")
        }
        for operator2 in ["!=", "=~", "!~", "==", ">=", "<="] where matches(operator2) {
            position += 2
            return PromQLToken(kind: .punctuation(operator2), column: column)
        }
        if "(){}[],=+-*/%^<>@".contains(c) {
            position += 1
            return PromQLToken(kind: .punctuation(String(c)), column: column)
        }
        throw PromQLError(column: column, "unexpected character '\(c)'")
    }

    private func matches(_ text: String) -> Bool {
        let wanted = Array(text)
        return position + wanted.count <= characters.count
            && Array(characters[position..<position + wanted.count]) == wanted
    }
}

// MARK: Parser

struct PromQLParser {
    var tokens: [PromQLToken] = []
    var index = 0
    var lexError: PromQLError?

    init(_ text: String) {
        var lexer = PromQLLexer(text)
        do {
            tokens = try lexer.tokens()
        } catch {
            lexError = error
        }
    }

    var current: PromQLToken { tokens[index] }

    mutating func parseAll() throws(PromQLError) -> PromQLExpression {
        if let lexError { throw lexError }
        guard current.kind != .end else { throw PromQLError(column: 1, "the expression is empty") }
        let expression = try parseBinary(minimumPrecedence: 1)
        guard current.kind == .end else { throw unexpected("an operator or the end of the expression") }
        return expression
    }

    private func unexpected(_ expected: String) -> PromQLError {
        PromQLError(column: current.column, "expected \(expected), found \(current.text)")
    }

    private mutating func advance() { if index < tokens.count - 1 { index += 1 } }

    private func isPunctuation(_ p: String) -> Bool { current.kind == .punctuation(p) }

    private mutating func expect(_ p: String, _ what: String) throws(PromQLError) {
        guard isPunctuation(p) else { throw unexpected(what) }
        advance()
    }

    private mutating func parseBinary(minimumPrecedence: Int) throws(PromQLError) -> PromQLExpression {
        var lhs = try parseUnary()
        while case .punctuation(let p) = current.kind {
            if ["==", "!=", ">", "<", ">=", "<="].contains(p) {
                throw PromQLError(column: current.column, "comparison operators ('\(p)') are not supported")
            }
            guard let op = PromQLOperator(rawValue: p), op.precedence >= minimumPrecedence else { break }
            advance()
            if case .identifier(let word) = current.kind, ["on", "ignoring", "group_left", "group_right", "bool"].contains(word) {
                throw PromQLError(
                    column: current.column,
                    "'\(word)' is not supported: vectors are matched on all their labels")
            }
            // `^` is right-associative; the others left.
            let rhs = try parseBinary(minimumPrecedence: op == .power ? op.precedence : op.precedence + 1)
            lhs = .binary(op, lhs, rhs)
        }
        return lhs
    }

    private mutating func parseUnary() throws(PromQLError) -> PromQLExpression {
        if isPunctuation("-") {
            advance()
            let operand = try parseUnary()
            if case .number(let value) = operand { return .number(-value) }
            return .negate(operand)
        }
        if isPunctuation("+") {
            advance()
            return try parseUnary()
        }
        var primary = try parsePrimary()
        // `^` binds tighter than unary minus: -2^2 is -(2^2).
        if isPunctuation("^") {
            advance()
            primary = .binary(.power, primary, try parseUnary())
        }
        return primary
    }

    private mutating func parsePrimary() throws(PromQLError) -> PromQLExpression {
        let token = current
        switch token.kind {
        case .number(let value):
            advance()
            return .number(value)
        case .punctuation("("):
            advance()
            let inner = try parseBinary(minimumPrecedence: 1)
            try expect(")", "')'")
            // `(expr)[5m]` would be a subquery.
            if isPunctuation("[") { throw PromQLError(column: current.column, "subqueries are not supported") }
            return inner
        case .punctuation("{"):
            throw PromQLError(column: token.column, "a selector needs a metric name before '{'")
        case .identifier(let word):
            advance()
            if let op = PromQLAggregation(rawValue: word), isPunctuation("(") || isGroupingKeyword {
                return try parseAggregation(op)
            }
            if isPunctuation("(") {
                guard let function = PromQLFunction(rawValue: word) else {
                    throw PromQLError(
                        column: token.column,
                        "function '\(word)' is not supported (supported: "
                            + (PromQLFunction.allCases.map(\.rawValue) + PromQLAggregation.allCases.map(\.rawValue))
                            .joined(separator: ", ") + ")")
                }
                return try parseCall(function, at: token.column)
            }
            if ["by", "without", "offset", "on", "ignoring", "bool"].contains(word) {
                throw PromQLError(column: token.column, "'\(word)' is not supported here")
            }
            var selector = PromQLSelector(name: word)
            if isPunctuation("{") { selector.matchers = try parseMatchers() }
            if case .identifier("offset") = current.kind {
                throw PromQLError(column: current.column, "'offset' is not supported")
            }
            if isPunctuation("@") { throw PromQLError(column: current.column, "'@' is not supported") }
            if isPunctuation("[") {
                let open = current.column
                advance()
                guard case .duration(let ms) = current.kind, ms > 0 else {
                    throw unexpected("a duration such as 5m")
                }
                advance()
                // `[5m:1m]`: the lexer reads ":1m" as a name (metric names may start with ':').
                if case .identifier(let word) = current.kind, word.hasPrefix(":") {
                    throw PromQLError(column: open, "subqueries are not supported")
                }
                try expect("]", "']'")
                return .range(selector, rangeMs: ms)
            }
            return .selector(selector)
        case .string:
            throw PromQLError(column: token.column, "a string is not an expression here")
        case .duration:
            throw PromQLError(column: token.column, "a duration belongs inside '[…]'")
        case .end:
            throw unexpected("an expression")
        case .punctuation:
            throw unexpected("an expression")
        }
    }

    private var isGroupingKeyword: Bool {
        if case .identifier(let word) = current.kind { return word == "by" || word == "without" }
        return false
    }

    private mutating func parseGrouping() throws(PromQLError) -> PromQLGrouping {
        guard case .identifier(let word) = current.kind else { throw unexpected("'by' or 'without'") }
        advance()
        try expect("(", "'(' after '\(word)'")
        var labels: [String] = []
        while !isPunctuation(")") {
            guard case .identifier(let label) = current.kind, isLabelName(label) else { throw unexpected("a label name") }
            labels.append(label)
            advance()
            if isPunctuation(",") { advance() } else if !isPunctuation(")") { throw unexpected("',' or ')'") }
        }
        advance()
        return PromQLGrouping(without: word == "without", labels: labels)
    }

    private mutating func parseAggregation(_ op: PromQLAggregation) throws(PromQLError) -> PromQLExpression {
        var grouping: PromQLGrouping?
        if isGroupingKeyword { grouping = try parseGrouping() }
        let open = current.column
        try expect("(", "'(' after \(op.rawValue)")
        if isPunctuation(")") { throw PromQLError(column: open, "\(op.rawValue) needs one argument") }
        let argument = try parseBinary(minimumPrecedence: 1)
        if isPunctuation(",") {
            throw PromQLError(column: current.column, "\(op.rawValue) takes one argument")
        }
        try expect(")", "')'")
        if isGroupingKeyword {
            guard grouping == nil else { throw PromQLError(column: current.column, "a second grouping") }
            grouping = try parseGrouping()
        }
        return .aggregate(op, grouping, argument)
    }

    private mutating func parseCall(_ function: PromQLFunction, at column: Int) throws(PromQLError) -> PromQLExpression {
        advance()  // (
        var arguments: [PromQLExpression] = []
        var columns: [Int] = []
        while !isPunctuation(")") {
            columns.append(current.column)
            arguments.append(try parseBinary(minimumPrecedence: 1))
            if isPunctuation(",") { advance() } else if !isPunctuation(")") { throw unexpected("',' or ')'") }
        }
        advance()
        switch function {
        case .rate, .irate, .increase:
            guard arguments.count == 1 else {
                throw PromQLError(column: column, "\(function.rawValue) takes one argument, a range vector such as x[5m]")
            }
            guard case .range = arguments[0] else {
                throw PromQLError(column: columns[0], "\(function.rawValue) needs a range vector such as x[5m]")
            }
        case .histogramQuantile:
            guard arguments.count == 2 else {
                throw PromQLError(column: column, "histogram_quantile takes two arguments: a quantile and a vector of buckets")
            }
            if case .range = arguments[1] {
                throw PromQLError(column: columns[1], "histogram_quantile needs an instant vector, not a range")
            }
        }
        return .call(function, arguments)
    }

    private mutating func parseMatchers() throws(PromQLError) -> [PromQLMatcher] {
        advance()  // {
        var matchers: [PromQLMatcher] = []
        while !isPunctuation("}") {
            let column = current.column
            guard case .identifier(let label) = current.kind, isLabelName(label) else { throw unexpected("a label name") }
            advance()
            guard case .punctuation(let p) = current.kind, let kind = PromQLMatcher.Kind(rawValue: p) else {
                throw unexpected("'=', '!=', '=~' or '!~' after label \(label)")
            }
            advance()
            guard case .string(let value) = current.kind else { throw unexpected("a quoted value for label \(label)") }
            advance()
            do {
                matchers.append(try PromQLMatcher(label: label, kind: kind, value: value))
            } catch {
                throw PromQLError(column: column, error.message)
            }
            if isPunctuation(",") { advance() } else if !isPunctuation("}") { throw unexpected("',' or '}'") }
        }
        advance()
        return matchers
    }
}
