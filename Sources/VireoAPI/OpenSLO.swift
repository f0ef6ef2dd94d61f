import Foundation
import VireoModel
import VireoTelemetry

/// An OpenSLO v1 `kind: SLO` document mapped onto Vireo's objectives.
///
/// The SLO's `spec.service` names the Vireo application it belongs to; its objectives replace
/// the application's objectives of the same names. Mapping:
/// - `ratioMetric` (good/total counters) → a `ratio` objective;
/// - `thresholdMetric` whose query is `histogram_quantile(Q, … X_bucket …)` → response time
///   (quantile Q of histogram X), `rate(X…)` → throughput, a plain selector → capacity (`lte`/`lt`);
/// - `budgetingMethod: Timeslices` maps exactly (`timeSliceWindow` is the window, `target` the
///   goal); `Occurrences` is judged on one-minute windows with `target` as both the per-window
///   threshold (ratios) and the goal — an approximation of counting every event over the period.
/// - `timeWindow[0].duration` is the period.
public struct OpenSLODocument: Sendable, Equatable {
    public var name: String
    public var service: String
    public var objectives: [Objective]

    static let specFields: Set<String> = [
        "description", "service", "indicator", "indicatorRef", "timeWindow", "budgetingMethod", "objectives", "alertPolicies",
    ]

    static func parse(name: String, spec: FieldReader) throws(VireoError) -> OpenSLODocument {
        try ResourceName.validate(name, field: "metadata.name")
        try spec.rejectUnknown(allowed: specFields)
        let service = try spec.requiredString("service")
        try ResourceName.validate(service, field: spec.field("service"))
        if spec.object["indicatorRef"] != nil {
            throw VireoError(
                .invalidArgument, "\(spec.field("indicatorRef")): is not supported; put the indicator inline (spec.indicator)")
        }
        guard let indicator = try spec.object("indicator") else {
            throw VireoError(.invalidArgument, "\(spec.field("indicator")): is required")
        }
        try indicator.rejectUnknown(allowed: ["metadata", "spec"])
        guard let indicatorSpec = try indicator.object("spec") else {
            throw VireoError(.invalidArgument, "\(indicator.field("spec")): is required")
        }
        try indicatorSpec.rejectUnknown(allowed: ["ratioMetric", "thresholdMetric"])
        let method = try spec.string("budgetingMethod") ?? "Occurrences"
        guard ["Occurrences", "Timeslices"].contains(method) else {
            throw VireoError.invalid(
                field: spec.field("budgetingMethod"), value: "'\(method)'", "expected Occurrences or Timeslices")
        }
        var period = 28 * 86_400.0
        if let windows = try spec.array("timeWindow"), let (path, value) = windows.first {
            let window = try FieldReader(value, path: path)
            try window.rejectUnknown(allowed: ["duration", "isRolling", "calendar"])
            period = try window.duration("duration") ?? period
        }
        guard let objectives = try spec.array("objectives"), !objectives.isEmpty else {
            throw VireoError(.invalidArgument, "\(spec.field("objectives")): needs at least one objective")
        }
        var result: [Objective] = []
        for (path, value) in objectives {
            let fields = try FieldReader(value, path: path)
            try fields.rejectUnknown(allowed: [
                "displayName", "op", "value", "target", "targetPercent", "timeSliceTarget", "timeSliceWindow", "indicator",
            ])
            var goal = try fields.double("target")
            if goal == nil, let percent = try fields.double("targetPercent") { goal = percent / 100 }
            guard let goal else { throw VireoError(.invalidArgument, "\(fields.field("target")): is required") }
            guard goal > 0, goal < 1 else {
                throw VireoError.invalid(field: fields.field("target"), value: "\(goal)", "must be between 0 and 1 (exclusive)")
            }
            let objectiveName = objectives.count == 1 ? name : "\(name)-\(result.count + 1)"
            var objective = try indicatorObjective(
                indicatorSpec, objective: fields, name: objectiveName, method: method, goal: goal)
            objective.goal = goal
            objective.periodSeconds = period
            if method == "Timeslices" {
                objective.windowSeconds = try fields.duration("timeSliceWindow") ?? 60
            } else {
                objective.windowSeconds = 60
            }
            guard objective.windowSeconds >= 1, period >= objective.windowSeconds else {
                throw VireoError.invalid(
                    field: fields.field("timeSliceWindow"), value: DurationText.format(objective.windowSeconds),
                    "must be at least 1s and at most the time window")
            }
            result.append(objective)
        }
        return OpenSLODocument(name: name, service: service, objectives: result)
    }

    static func indicatorObjective(
        _ indicator: FieldReader, objective fields: FieldReader, name: String, method: String, goal: Double
    ) throws(VireoError) -> Objective {
        if let ratio = try indicator.object("ratioMetric") {
            try ratio.rejectUnknown(allowed: ["counter", "good", "bad", "total", "rawType", "raw"])
            if ratio.object["bad"] != nil {
                throw VireoError(.invalidArgument, "\(ratio.field("bad")): is not supported; give good and total")
            }
            let good = try query(ratio, "good")
            let total = try query(ratio, "total")
            let threshold = method == "Timeslices" ? try fields.double("timeSliceTarget") ?? goal : goal
            guard threshold > 0, threshold <= 1 else {
                throw VireoError.invalid(
                    field: fields.field("timeSliceTarget"), value: "\(threshold)", "must be above 0 and at most 1")
            }
            return Objective(
                name: name, kind: .ratio, metric: try plainSelector(good.text, field: good.field),
                totalMetric: try plainSelector(total.text, field: total.field), target: threshold)
        }
        guard let threshold = try indicator.object("thresholdMetric") else {
            throw VireoError(.invalidArgument, "\(indicator.path): needs ratioMetric or thresholdMetric")
        }
        let source = try query(indicator, "thresholdMetric")
        let op = try fields.requiredString("op")
        guard let value = try fields.double("value") else {
            throw VireoError(.invalidArgument, "\(fields.field("value")): is required")
        }
        guard value.isFinite, value >= 0 else {
            throw VireoError.invalid(field: fields.field("value"), value: "\(value)", "must not be negative")
        }
        _ = threshold
        let upper = ["lte", "lt"].contains(op)
        guard upper || ["gte", "gt"].contains(op) else {
            throw VireoError.invalid(field: fields.field("op"), value: "'\(op)'", "expected lte, lt, gte or gt")
        }
        let text = source.text.filter { $0 != " " }
        if text.hasPrefix("histogram_quantile(") {
            // histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m])))
            let inner = text.dropFirst("histogram_quantile(".count)
            guard let comma = inner.firstIndex(of: ","), let q = Double(inner[..<comma]), q > 0, q < 1 else {
                throw VireoError.invalid(
                    field: source.field, value: "'\(source.text)'", "histogram_quantile needs a quantile between 0 and 1")
            }
            guard upper else {
                throw VireoError.invalid(field: fields.field("op"), value: "'\(op)'", "a latency quantile needs lte or lt")
            }
            guard let bucket = metricNames(in: inner[comma...]).first(where: { $0.hasSuffix("_bucket") }) else {
                throw VireoError.invalid(field: source.field, value: "'\(source.text)'", "names no X_bucket series")
            }
            return Objective(
                name: name, kind: .responseTime, metric: String(bucket.dropLast("_bucket".count)), quantile: q, target: value)
        }
        if text.hasPrefix("rate(") || text.hasPrefix("sum(rate(") || text.hasPrefix("increase(") {
            guard !upper else { throw VireoError.invalid(field: fields.field("op"), value: "'\(op)'", "a rate needs gte or gt") }
            guard let metric = metricNames(in: Substring(text)).first(where: { !["rate", "sum", "increase"].contains($0) }) else {
                throw VireoError.invalid(field: source.field, value: "'\(source.text)'", "names no counter")
            }
            return Objective(name: name, kind: .throughput, metric: metric, target: value)
        }
        guard upper else {
            throw VireoError.invalid(field: fields.field("op"), value: "'\(op)'", "a gauge objective needs lte or lt")
        }
        return Objective(name: name, kind: .capacity, metric: try plainSelector(source.text, field: source.field), target: value)
    }

    /// `X.metricSource.spec.query` of a ratio's good/total or of a threshold metric.
    static func query(_ parent: FieldReader, _ key: String) throws(VireoError) -> (text: String, field: String) {
        guard let metric = try parent.object(key) else { throw VireoError(.invalidArgument, "\(parent.field(key)): is required") }
        guard let source = try metric.object("metricSource") else {
            throw VireoError(.invalidArgument, "\(metric.field("metricSource")): is required")
        }
        try source.rejectUnknown(allowed: ["metricSourceRef", "type", "spec"])
        if let type = try source.string("type"), type.lowercased() != "prometheus" {
            throw VireoError.invalid(
                field: source.field("type"), value: "'\(type)'", "only Prometheus metric sources are supported")
        }
        guard let spec = try source.object("spec") else {
            throw VireoError(.invalidArgument, "\(source.field("spec")): is required")
        }
        return (try spec.requiredString("query"), spec.field("query"))
    }

    static func plainSelector(_ text: String, field: String) throws(VireoError) -> String {
        do throws(SelectorError) {
            return try SeriesSelector(parsing: text).description
        } catch {
            throw VireoError.invalid(
                field: field, value: "'\(text)'", "must be a metric selector such as x_total{code=\"200\"}: \(error.message)")
        }
    }

    /// Identifiers in a PromQL expression, in order.
    static func metricNames(in text: Substring) -> [String] {
        var names: [String] = []
        var current = ""
        var inBrackets = false
        for c in text {
            if c == "[" || c == "{" { inBrackets = true }
            if c == "]" || c == "}" { inBrackets = false; continue }
            if !inBrackets, c.isLetter || c == "_" || c == ":" || (c.isNumber && !current.isEmpty) {
                current.append(c)
            } else {
                if !current.isEmpty { names.append(current) }
                current = ""
            }
        }
        if !current.isEmpty { names.append(current) }
        return names.filter { !["by", "le", "sum", "without"].contains($0) }
    }
}
