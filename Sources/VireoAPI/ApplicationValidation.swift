import Foundation
import VireoModel
import VireoTelemetry

/// Turns an `Application` manifest's spec into an `ApplicationSpec`, or says exactly what is
/// wrong, naming the field path and the value.
public enum ApplicationValidation {
    static let specFields: Set<String> = ["vms", "telemetry", "objectives"]
    static let telemetryFields: Set<String> = ["scrape", "probe", "metrics", "source"]
    static let targetFields: Set<String> = ["port", "path", "interval", "timeout"]
    static let objectiveFields: Set<String> = [
        "name", "sli", "quantile", "target", "min", "max", "good", "total", "window", "goal", "period", "burnRates", "kind",
    ]

    public static func fromManifest(name: String, spec: FieldReader) throws(VireoError) -> ApplicationSpec {
        try ResourceName.validate(name, field: "metadata.name")
        try spec.rejectUnknown(allowed: specFields)
        var vms: [VMSpec] = []
        for (path, value) in try spec.array("vms") ?? [] {
            let fields = try FieldReader(value, path: path)
            try fields.rejectUnknown(allowed: VMSpecValidation.manifestFields.union(["name"]))
            var vm = try VMSpecValidation.spec(
                name: try fields.requiredString("name"), nameField: fields.field("name"), fields: fields)
            if let app = vm.app, app != name {
                throw VireoError.invalid(
                    field: fields.field("app"), value: "'\(app)'", "a VM of application '\(name)' belongs to it")
            }
            vm.app = name
            if vms.contains(where: { $0.name == vm.name }) {
                throw VireoError.invalid(field: fields.field("name"), value: "'\(vm.name)'", "appears twice")
            }
            vms.append(vm)
        }
        let telemetry = try self.telemetry(try spec.object("telemetry"))
        var objectives: [Objective] = []
        for (path, value) in try spec.array("objectives") ?? [] {
            let objective = try self.objective(try FieldReader(value, path: path), telemetry: telemetry)
            if objectives.contains(where: { $0.name == objective.name }) {
                throw VireoError.invalid(field: "\(path).name", value: "'\(objective.name)'", "appears twice")
            }
            objectives.append(objective)
        }
        return ApplicationSpec(name: name, vms: vms, telemetry: telemetry, objectives: objectives)
    }

    static func telemetry(_ fields: FieldReader?) throws(VireoError) -> TelemetrySpec {
        guard let fields else { return TelemetrySpec() }
        try fields.rejectUnknown(allowed: telemetryFields)
        var telemetry = TelemetrySpec()
        telemetry.scrape = try fields.object("scrape").map { (f) throws(VireoError) in try endpoint(f, defaultPath: "/metrics") }
        telemetry.probe = try fields.object("probe").map { (f) throws(VireoError) in try endpoint(f, defaultPath: "/") }
        for (path, value) in try fields.array("metrics") ?? [] {
            let metric = try FieldReader(value, path: path)
            try metric.rejectUnknown(allowed: ["name", "type"])
            let name = try metric.requiredString("name")
            do throws(SelectorError) {
                let selector = try SeriesSelector(parsing: name)
                guard selector.matchers.isEmpty else { throw SelectorError("a declared metric is a name without labels") }
            } catch {
                throw VireoError.invalid(field: metric.field("name"), value: "'\(name)'", error.message)
            }
            let typeText = try metric.requiredString("type")
            guard let type = MetricType(rawValue: typeText) else {
                throw VireoError.invalid(
                    field: metric.field("type"), value: "'\(typeText)'",
                    "unknown metric type; expected one of: \(MetricType.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            telemetry.metrics.append(MetricDeclaration(name: name, type: type))
        }
        if let source = try fields.object("source") {
            telemetry.source = try self.source(source)
            // Prometheus reads the guests: Vireo reading them too would only double the load.
            for (key, value) in [("scrape", telemetry.scrape != nil), ("probe", telemetry.probe != nil)] where value {
                throw VireoError(
                    .invalidArgument,
                    "\(fields.field(key)): is not read when telemetry.source is set (the source has the metrics); remove one of them"
                )
            }
        }
        return telemetry
    }

    static func source(_ fields: FieldReader) throws(VireoError) -> TelemetrySource {
        try fields.rejectUnknown(allowed: ["prometheus"])
        guard let server = try fields.object("prometheus") else {
            throw VireoError(.invalidArgument, "\(fields.field("prometheus")): is required (the one source Vireo reads)")
        }
        try server.rejectUnknown(allowed: ["url", "timeout"])
        let url = try server.requiredString("url")
        guard let parsed = URL(string: url), let scheme = parsed.scheme?.lowercased(), scheme == "http" || scheme == "https",
            parsed.host?.isEmpty == false, parsed.query == nil, parsed.fragment == nil
        else {
            throw VireoError.invalid(
                field: server.field("url"), value: "'\(url)'",
                "must be an http:// or https:// URL with a host and no query, e.g. http://127.0.0.1:9090")
        }
        let timeout = try server.duration("timeout") ?? 5
        guard timeout >= 0.1, timeout <= 60 else {
            throw VireoError.invalid(
                field: server.field("timeout"), value: DurationText.format(timeout), "must be from 100ms to 1m")
        }
        return TelemetrySource(prometheus: PrometheusServer(url: url, timeoutSeconds: timeout))
    }

    static func endpoint(_ fields: FieldReader, defaultPath: String) throws(VireoError) -> TelemetryEndpoint {
        try fields.rejectUnknown(allowed: targetFields)
        let port = try fields.requiredInt("port")
        guard (1...65_535).contains(port) else {
            throw VireoError.invalid(field: fields.field("port"), value: "\(port)", "must be from 1 to 65535")
        }
        let path = try fields.string("path") ?? defaultPath
        guard path.hasPrefix("/"), !path.contains(" ") else {
            throw VireoError.invalid(field: fields.field("path"), value: "'\(path)'", "must start with '/' and have no spaces")
        }
        let interval = try fields.duration("interval") ?? 5
        guard interval >= 0.1, interval <= 3_600 else {
            throw VireoError.invalid(
                field: fields.field("interval"), value: DurationText.format(interval), "must be from 100ms to 1h")
        }
        let timeout = try fields.duration("timeout") ?? min(2, interval)
        guard timeout > 0, timeout <= interval else {
            throw VireoError.invalid(
                field: fields.field("timeout"), value: DurationText.format(timeout), "must be above 0 and at most the interval")
        }
        return TelemetryEndpoint(port: port, path: path, intervalSeconds: interval, timeoutSeconds: timeout)
    }

    static func objective(_ fields: FieldReader, telemetry: TelemetrySpec) throws(VireoError) -> Objective {
        try fields.rejectUnknown(allowed: objectiveFields)
        let name = try fields.requiredString("name")
        try ResourceName.validate(name, field: fields.field("name"))
        let quantile = try fields.double("quantile")
        let target = try fields.double("target")
        let min = try fields.double("min")
        let max = try fields.double("max")
        let good = try fields.string("good")
        let total = try fields.string("total")
        var objective: Objective
        if let quantile {
            guard quantile > 0, quantile < 1 else {
                throw VireoError.invalid(
                    field: fields.field("quantile"), value: "\(quantile)", "must be between 0 and 1 (exclusive)")
            }
            guard let target else {
                throw VireoError(
                    .invalidArgument, "\(fields.field("target")): is required with quantile (the latency in seconds)")
            }
            let metric = try selector(fields, "sli", expecting: [.histogram], telemetry: telemetry)
            objective = Objective(name: name, kind: .responseTime, metric: metric, quantile: quantile, target: target)
            try positive(target, fields.field("target"))
        } else if good != nil || total != nil {
            let goodMetric = try selector(fields, "good", expecting: [.counter], telemetry: telemetry)
            let totalMetric = try selector(fields, "total", expecting: [.counter], telemetry: telemetry)
            guard let min else {
                throw VireoError(.invalidArgument, "\(fields.field("min")): is required with good/total (the good fraction)")
            }
            guard min > 0, min <= 1 else {
                throw VireoError.invalid(field: fields.field("min"), value: "\(min)", "must be above 0 and at most 1")
            }
            objective = Objective(name: name, kind: .ratio, metric: goodMetric, totalMetric: totalMetric, target: min)
        } else if let min {
            let text = try fields.requiredString("sli")
            var sli = text
            // `rate(x)` says what the objective does to the counter; `x` means the same.
            if sli.hasPrefix("rate("), sli.hasSuffix(")") { sli = String(sli.dropFirst(5).dropLast()) }
            try positive(min, fields.field("min"))
            if (try? SeriesSelector(parsing: sli)) == nil,
                let query = try query(field: fields.field("sli"), text, telemetry: telemetry)
            {
                objective = Objective(
                    name: name, kind: query.kind(hasMaximum: false), metric: text, target: min, language: .promql)
            } else {
                let metric = try selector(fields, "sli", text: sli, expecting: [.counter], telemetry: telemetry)
                objective = Objective(name: name, kind: .throughput, metric: metric, target: min)
            }
        } else if let max {
            let text = try fields.requiredString("sli")
            try positive(max, fields.field("max"))
            if let query = try query(field: fields.field("sli"), text, telemetry: telemetry) {
                objective = Objective(
                    name: name, kind: query.kind(hasMaximum: true), metric: text, target: max, language: .promql)
            } else {
                let metric = try selector(fields, "sli", expecting: [.gauge, .untyped], telemetry: telemetry)
                objective = Objective(name: name, kind: .capacity, metric: metric, target: max)
            }
        } else {
            throw VireoError(
                .invalidArgument,
                "\(fields.path): needs quantile and target (response time), min (throughput), max (capacity) or good, total and min (ratio)"
            )
        }
        if let target, objective.kind != .responseTime {
            throw VireoError.invalid(
                field: fields.field("target"), value: "\(target)", "is for response-time objectives; use min or max")
        }
        if let text = try fields.string("kind") {
            // A PromQL indicator's kind may be given where its form does not tell (a mean latency
            // is a quotient); a selector objective's kind follows from its fields.
            guard let kind = Objective.Kind(rawValue: text) else {
                throw VireoError.invalid(
                    field: fields.field("kind"), value: "'\(text)'",
                    "expected one of: \(Objective.Kind.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            let upper: Set<Objective.Kind> = [.responseTime, .capacity]
            guard objective.language == .promql ? upper.contains(kind) == (max != nil) : kind == objective.kind else {
                throw VireoError.invalid(
                    field: fields.field("kind"), value: "'\(text)'",
                    objective.language == .promql
                        ? "does not fit \(max != nil ? "max" : "min"): responseTime and capacity take max, throughput and ratio min"
                        : "a selector objective is \(objective.kind.rawValue) by its fields; kind is for PromQL indicators")
            }
            objective.kind = kind
        }
        try timing(&objective, fields)
        return objective
    }

    /// `sli` as a PromQL expression, when it is not a plain selector (nil: read it as one): it
    /// must parse and be a number or an instant vector; the error names the column. With a
    /// Prometheus source, Prometheus evaluates it: any PromQL is taken, and any metric.
    static func query(field: String, _ text: String, telemetry: TelemetrySpec) throws(VireoError) -> SLIQuery? {
        if (try? SeriesSelector(parsing: text)) != nil { return nil }
        let expression: PromQLExpression
        do {
            expression = try PromQLExpression(parsing: text)
            // Whether a part is a number or a vector does not depend on the data: no samples tell.
            _ = try PromQLEvaluator(source: RecentSamples(), time: 0).evaluate(expression)
        } catch {
            if telemetry.source != nil { return .prometheus(text) }
            throw VireoError.invalid(
                field: field, value: "'\(text)'",
                "is neither a metric selector nor a PromQL expression Vireo evaluates: \(error.description)")
        }
        // Only declared metrics (and Vireo's own) are kept: a series of another would have no data.
        // An expression names a histogram's series themselves (`_bucket`, `_sum`, `_count`).
        for selector in expression.selectors where telemetry.source == nil {
            _ = try declaration(
                of: selector.name, field: field, declared: telemetry.metrics, histogramSeries: true)
        }
        return .native(expression)
    }

    /// A PromQL indicator: one Vireo evaluates, or one only the Prometheus source can.
    enum SLIQuery {
        case native(PromQLExpression)
        case prometheus(String)

        /// The objective's kind, from the form: with a maximum, a response time when it is a
        /// histogram's quantile and a capacity otherwise; with a minimum, a ratio when it is a
        /// quotient (good over total) and a throughput otherwise.
        func kind(hasMaximum: Bool) -> Objective.Kind {
            hasMaximum ? (isQuantile ? .responseTime : .capacity) : (isQuotient ? .ratio : .throughput)
        }

        /// Whether its value is a quantile of a histogram (a response time where it has a maximum).
        var isQuantile: Bool {
            switch self {
            case .native(let expression): if case .call(.histogramQuantile, _) = expression { true } else { false }
            case .prometheus(let text): text.drop(while: \.isWhitespace).hasPrefix("histogram_quantile")
            }
        }

        /// Whether it is a quotient (good over total: a ratio where it has a minimum).
        var isQuotient: Bool {
            switch self {
            case .native(let expression): if case .binary(.divide, _, _) = expression { true } else { false }
            case .prometheus(let text): Self.dividesAtTop(text)
            }
        }

        /// Whether `text` has a `/` outside every bracket and string.
        static func dividesAtTop(_ text: String) -> Bool {
            var depth = 0
            var quote: Character?
            var escaped = false
            for c in text {
                if let q = quote {
                    if escaped { escaped = false } else if c == "\\" { escaped = true } else if c == q { quote = nil }
                    continue
                }
                switch c {
                case "\"", "'", "`": quote = c
                case "(", "[", "{": depth += 1
                case ")", "]", "}": depth -= 1
                case "/" where depth == 0: return true
                default: break
                }
            }
            return false
        }
    }

    /// window, goal, period and burn-rate alerts, shared by both manifest kinds.
    static func timing(_ objective: inout Objective, _ fields: FieldReader) throws(VireoError) {
        objective.windowSeconds = try fields.duration("window") ?? objective.windowSeconds
        guard objective.windowSeconds >= 1 else {
            throw VireoError.invalid(
                field: fields.field("window"), value: DurationText.format(objective.windowSeconds), "must be at least 1s")
        }
        objective.goal = try fields.double("goal") ?? objective.goal
        guard objective.goal > 0, objective.goal < 1 else {
            throw VireoError.invalid(
                field: fields.field("goal"), value: "\(objective.goal)",
                "must be between 0 and 1 (exclusive): the fraction of windows that must be good")
        }
        objective.periodSeconds = try fields.duration("period") ?? objective.periodSeconds
        guard objective.periodSeconds >= objective.windowSeconds else {
            throw VireoError.invalid(
                field: fields.field("period"), value: DurationText.format(objective.periodSeconds), "must be at least the window")
        }
        if let alerts = try fields.array("burnRates") {
            objective.burnRateAlerts = []
            for (path, value) in alerts {
                let alert = try FieldReader(value, path: path)
                try alert.rejectUnknown(allowed: ["long", "short", "factor"])
                guard let long = try alert.duration("long") else {
                    throw VireoError(.invalidArgument, "\(alert.field("long")): is required")
                }
                guard let short = try alert.duration("short") else {
                    throw VireoError(.invalidArgument, "\(alert.field("short")): is required")
                }
                guard let factor = try alert.double("factor") else {
                    throw VireoError(.invalidArgument, "\(alert.field("factor")): is required")
                }
                guard short >= objective.windowSeconds else {
                    throw VireoError.invalid(
                        field: alert.field("short"), value: DurationText.format(short), "must be at least the window")
                }
                guard long >= short else {
                    throw VireoError.invalid(
                        field: alert.field("long"), value: DurationText.format(long), "must be at least short")
                }
                try positive(factor, alert.field("factor"))
                objective.burnRateAlerts.append(BurnRateAlert(longSeconds: long, shortSeconds: short, factor: factor))
            }
        }
    }

    static func positive(_ value: Double, _ field: String) throws(VireoError) {
        guard value.isFinite, value > 0 else { throw VireoError.invalid(field: field, value: "\(value)", "must be above 0") }
    }

    static func selector(
        _ fields: FieldReader, _ key: String, text: String? = nil, expecting types: [MetricType], telemetry: TelemetrySpec
    ) throws(VireoError) -> String {
        let given: String
        if let text { given = text } else { given = try fields.requiredString(key) }
        return try checkedSelector(given, field: fields.field(key), expecting: types, declared: telemetry.metrics)
    }

    /// Checks that an objective from elsewhere (an OpenSLO document) uses metrics the
    /// application declares, with types it can use.
    public static func checkMetrics(_ objective: Objective, telemetry: TelemetrySpec, field: String) throws(VireoError) {
        if objective.language == .promql {
            // What Vireo evaluates itself must be within its PromQL and read declared metrics.
            if let selector = try? SeriesSelector(parsing: objective.metric) {
                guard telemetry.source == nil else { return }
                _ = try declaration(of: selector.name, field: field, declared: telemetry.metrics, histogramSeries: true)
            } else {
                _ = try query(field: field, objective.metric, telemetry: telemetry)
            }
            return
        }
        let types: [MetricType]
        switch objective.kind {
        case .responseTime: types = [.histogram]
        case .throughput, .ratio: types = [.counter]
        case .capacity: types = [.gauge, .untyped]
        }
        _ = try checkedSelector(objective.metric, field: field, expecting: types, declared: telemetry.metrics)
        if let total = objective.totalMetric {
            _ = try checkedSelector(total, field: field, expecting: types, declared: telemetry.metrics)
        }
    }

    /// Parses a selector and checks that its metric is declared (or Vireo's own) with a type
    /// the objective can use.
    static func checkedSelector(_ text: String, field: String, expecting types: [MetricType], declared: [MetricDeclaration])
        throws(VireoError) -> String
    {
        let selector: SeriesSelector
        do throws(SelectorError) {
            selector = try SeriesSelector(parsing: text)
        } catch {
            throw VireoError.invalid(field: field, value: "'\(text)'", "not a metric selector: \(error.message)")
        }
        let declaration = try declaration(of: selector.name, field: field, declared: declared, histogramSeries: false)
        guard types.contains(declaration.type) else {
            throw VireoError.invalid(
                field: field, value: "'\(selector.name)'",
                "is a \(declaration.type.rawValue); this objective needs a \(types.map(\.rawValue).joined(separator: " or "))")
        }
        return selector.description
    }

    /// The declaration (or Vireo's own metric) that `name` refers to — by its name or with
    /// `_total`, and with `histogramSeries` also a histogram's `_bucket`, `_sum` or `_count` — or
    /// an error naming the field and what is declared.
    static func declaration(of name: String, field: String, declared: [MetricDeclaration], histogramSeries: Bool)
        throws(VireoError) -> MetricDeclaration
    {
        let found = (declared + MetricCatalogue.builtIn).first { metric in
            name == metric.name || name == metric.name + "_total"
                || (histogramSeries && metric.type == .histogram
                    && ["_bucket", "_sum", "_count"].contains { name == metric.name + $0 })
        }
        guard let found else {
            let names = declared.map(\.name)
            throw VireoError.invalid(
                field: field, value: "'\(name)'",
                "unknown metric: declare it under spec.telemetry.metrics"
                    + (names.isEmpty ? " (none declared)" : " (declared: \(names.joined(separator: ", ")))"))
        }
        return found
    }
}
