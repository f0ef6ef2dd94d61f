import Foundation
import VireoModel
import VireoTelemetry

/// An OpenSLO v1 `kind: SLO` document mapped onto Vireo's objectives.
///
/// The SLO's `spec.service` names the Vireo application it belongs to; its objectives replace
/// the application's objectives of the same names. Mapping:
/// - `ratioMetric` whose good and total are plain selectors of counters → a `ratio` objective;
///   other queries (and `bad`) → a PromQL ratio over each window;
/// - `thresholdMetric` that is a plain selector with `lte`/`lt` → capacity; any other query → a
///   PromQL objective whose maximum (`lte`/`lt`) or minimum (`gte`/`gt`) is `value`;
/// - `budgetingMethod: Timeslices` maps exactly (`timeSliceWindow` is the window, `target` the
///   goal); `Occurrences` and `RatioTimeslices` are judged on windows (one minute, or
///   `timeSliceWindow`) with `target` as both the per-window threshold of a ratio and the goal —
///   an approximation of counting every event, or averaging the slices, over the period;
/// - `timeWindow[0].duration` is the period (a calendar window as a rolling one of its length).
/// - The indicator is inline or an `SLI` of the same manifest (`indicatorRef`); a metric source is
///   inline or a `DataSource` of the same manifest (`metricSourceRef`), and must be Prometheus.
public struct OpenSLODocument: Sendable, Equatable {
    public var name: String
    public var service: String
    public var objectives: [Objective]

    static let specFields: Set<String> = [
        "description", "service", "indicator", "indicatorRef", "timeWindow", "budgetingMethod", "objectives", "alertPolicies",
    ]

    static func parse(name: String, spec: FieldReader, library: inout OpenSLOLibrary) throws(VireoError) -> OpenSLODocument {
        try ResourceName.validate(name, field: "metadata.name")
        try spec.rejectUnknown(allowed: specFields)
        let service = try spec.requiredString("service")
        try ResourceName.validate(service, field: spec.field("service"))
        if let policies = try spec.array("alertPolicies"), !policies.isEmpty {
            throw VireoError(.invalidArgument, "\(spec.field("alertPolicies")): \(OpenSLOLibrary.noAlerts)")
        }
        let method = try spec.string("budgetingMethod") ?? "Occurrences"
        guard ["Occurrences", "Timeslices", "RatioTimeslices"].contains(method) else {
            throw VireoError.invalid(
                field: spec.field("budgetingMethod"), value: "'\(method)'", "expected Occurrences, Timeslices or RatioTimeslices")
        }
        var period = 28 * 86_400.0
        if let windows = try spec.array("timeWindow"), let (path, value) = windows.first {
            let window = try FieldReader(value, path: path)
            try window.rejectUnknown(allowed: ["duration", "isRolling", "calendar"])
            if let text = try window.string("duration") {
                guard let seconds = calendarSeconds(text) ?? DurationText.seconds(text), seconds > 0 else {
                    throw VireoError.invalid(
                        field: window.field("duration"), value: "'\(text)'", "is not a duration (e.g. 28d, 1w, 1M, 1Q, 1Y)")
                }
                period = seconds
            }
        }
        guard let objectives = try spec.array("objectives"), !objectives.isEmpty else {
            throw VireoError(.invalidArgument, "\(spec.field("objectives")): needs at least one objective")
        }
        var result: [Objective] = []
        for (path, value) in objectives {
            let fields = try FieldReader(value, path: path)
            try fields.rejectUnknown(allowed: [
                "displayName", "op", "value", "target", "targetPercent", "timeSliceTarget", "timeSliceWindow", "indicator",
                "indicatorRef",
            ])
            var goal = try fields.double("target")
            if goal == nil, let percent = try fields.double("targetPercent") { goal = percent / 100 }
            guard let goal else { throw VireoError(.invalidArgument, "\(fields.field("target")): is required") }
            guard goal > 0, goal < 1 else {
                throw VireoError.invalid(field: fields.field("target"), value: "\(goal)", "must be between 0 and 1 (exclusive)")
            }
            let window = method == "Occurrences" ? 60 : try fields.duration("timeSliceWindow") ?? 60
            guard window >= 1, period >= window else {
                throw VireoError.invalid(
                    field: fields.field("timeSliceWindow"), value: DurationText.format(window),
                    "must be at least 1s and at most the time window")
            }
            // An objective's own indicator, else the SLO's.
            let indicator =
                try library.indicator(fields.object["indicator"] != nil || fields.object["indicatorRef"] != nil ? fields : spec)
            let objectiveName = objectives.count == 1 ? name : "\(name)-\(result.count + 1)"
            var objective = try indicatorObjective(
                indicator, objective: fields, name: objectiveName, method: method, goal: goal, windowSeconds: window,
                library: &library)
            objective.goal = goal
            objective.periodSeconds = period
            objective.windowSeconds = window
            result.append(objective)
        }
        return OpenSLODocument(name: name, service: service, objectives: result)
    }

    /// OpenSLO's calendar units, as rolling lengths: a month of 30 days, a quarter of 91, a year
    /// of 365.
    static func calendarSeconds(_ text: String) -> Double? {
        guard let unit = text.last, let days = ["M": 30.0, "Q": 91, "Y": 365][String(unit)], let count = Double(text.dropLast()),
            count > 0
        else { return nil }
        return count * days * 86_400
    }

    static func indicatorObjective(
        _ indicator: FieldReader, objective fields: FieldReader, name: String, method: String, goal: Double,
        windowSeconds: Double, library: inout OpenSLOLibrary
    ) throws(VireoError) -> Objective {
        if let ratio = try indicator.object("ratioMetric") {
            try ratio.rejectUnknown(allowed: ["counter", "good", "bad", "total", "rawType", "raw"])
            if ratio.object["raw"] != nil {
                throw VireoError(.invalidArgument, "\(ratio.field("raw")): is not supported; give good (or bad) and total")
            }
            let counter = try ratio.bool("counter") ?? true
            let total = try query(ratio, "total", library: &library)
            let good = ratio.object["good"] != nil ? try query(ratio, "good", library: &library) : nil
            let bad = ratio.object["bad"] != nil ? try query(ratio, "bad", library: &library) : nil
            guard (good == nil) != (bad == nil) else {
                throw VireoError(.invalidArgument, "\(ratio.path): needs good or bad (one of them) beside total")
            }
            let threshold = method == "Timeslices" ? try fields.double("timeSliceTarget") ?? goal : goal
            guard threshold > 0, threshold <= 1 else {
                throw VireoError.invalid(
                    field: fields.field("timeSliceTarget"), value: "\(threshold)", "must be above 0 and at most 1")
            }
            if let good, counter, isSelector(good.text), isSelector(total.text) {
                return Objective(
                    name: name, kind: .ratio, metric: try plainSelector(good.text, field: good.field),
                    totalMetric: try plainSelector(total.text, field: total.field), target: threshold)
            }
            // Each window's share, summed over the series: over counters, what each grew by in
            // the window (every selector read as its increase).
            func term(_ query: (text: String, field: String)) throws(VireoError) -> String {
                guard counter else { return "sum(\(query.text))" }
                do throws(PromQLError) {
                    return "sum(\(try PromQLExpression(parsing: query.text).increases(overMs: Int64(windowSeconds * 1000))))"
                } catch {
                    throw VireoError.invalid(
                        field: query.field, value: "'\(query.text)'",
                        "a counter's query must be PromQL Vireo can read as each window's growth (\(error.description)); "
                            + "or write it with rate or increase and set counter: false")
                }
            }
            let text =
                if let good { "\(try term(good)) / \(try term(total))" } else { "1 - \(try term(bad!)) / \(try term(total))" }
            return Objective(name: name, kind: .ratio, metric: text, target: threshold, language: .promql)
        }
        guard indicator.object["thresholdMetric"] != nil else {
            throw VireoError(.invalidArgument, "\(indicator.path): needs ratioMetric or thresholdMetric")
        }
        guard method != "RatioTimeslices" else {
            throw VireoError.invalid(
                field: "spec.budgetingMethod", value: "'RatioTimeslices'", "is for ratioMetric indicators; use Timeslices")
        }
        let source = try query(indicator, "thresholdMetric", library: &library)
        let op = try fields.requiredString("op")
        guard let value = try fields.double("value") else {
            throw VireoError(.invalidArgument, "\(fields.field("value")): is required")
        }
        guard value.isFinite else {
            throw VireoError.invalid(field: fields.field("value"), value: "\(value)", "must be a finite number")
        }
        let upper = ["lte", "lt"].contains(op)
        guard upper || ["gte", "gt"].contains(op) else {
            throw VireoError.invalid(field: fields.field("op"), value: "'\(op)'", "expected lte, lt, gte or gt")
        }
        if upper, isSelector(source.text) {
            return Objective(
                name: name, kind: .capacity, metric: try plainSelector(source.text, field: source.field), target: value)
        }
        // Any other query is judged at each window's end, as written.
        let form: ApplicationValidation.SLIQuery =
            (try? PromQLExpression(parsing: source.text)).map { .native($0) } ?? .prometheus(source.text)
        guard upper || !form.isQuantile else {
            throw VireoError.invalid(field: fields.field("op"), value: "'\(op)'", "a latency quantile needs lte or lt")
        }
        let kind: Objective.Kind =
            upper ? (form.isQuantile ? .responseTime : .capacity) : (form.isQuotient ? .ratio : .throughput)
        return Objective(name: name, kind: kind, metric: source.text, target: value, language: .promql)
    }

    static func isSelector(_ text: String) -> Bool { (try? SeriesSelector(parsing: text)) != nil }

    /// `X.metricSource.spec.query` of a ratio's good/total or of a threshold metric; the source
    /// inline or a `DataSource` of the manifest, of type Prometheus.
    static func query(_ parent: FieldReader, _ key: String, library: inout OpenSLOLibrary) throws(VireoError) -> (
        text: String, field: String
    ) {
        guard let metric = try parent.object(key) else { throw VireoError(.invalidArgument, "\(parent.field(key)): is required") }
        try metric.rejectUnknown(allowed: ["metricSource"])
        guard let source = try metric.object("metricSource") else {
            throw VireoError(.invalidArgument, "\(metric.field("metricSource")): is required")
        }
        try source.rejectUnknown(allowed: ["metricSourceRef", "type", "spec"])
        var type = try source.string("type")
        if let reference = try source.string("metricSourceRef") {
            guard let dataSource = library.dataSources[reference] else {
                throw VireoError.invalid(
                    field: source.field("metricSourceRef"), value: "'\(reference)'", "no DataSource of that name in this manifest"
                )
            }
            library.used.insert("DataSource/\(reference)")
            type = type ?? dataSource.type
        }
        if let type, type.lowercased() != "prometheus" {
            throw VireoError.invalid(
                field: source.field(source.object["type"] != nil ? "type" : "metricSourceRef"), value: "'\(type)'",
                "only Prometheus metric sources can be evaluated")
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
}

/// The OpenSLO documents of one manifest that others name: SLIs (`indicatorRef`) and data sources
/// (`metricSourceRef`). Each must be used by an SLO of the manifest: Vireo keeps them only as
/// parts of the SLOs that use them.
struct OpenSLOLibrary {
    /// Each SLI's document, by name.
    var slis: [String: FieldReader] = [:]
    var dataSources: [String: (type: String, path: String)] = [:]
    /// `Kind/name` of those an SLO used.
    var used: Set<String> = []

    static let noAlerts =
        "OpenSLO alerting (AlertPolicy, AlertCondition, AlertNotificationTarget) is not supported yet; remove it"

    /// Takes in an SLI or DataSource document (`prefix` names it in errors).
    mutating func collect(kind: String, name: String, spec: FieldReader) throws(VireoError) {
        switch kind {
        case "SLI":
            try ResourceName.validate(name, field: "metadata.name")
            try spec.rejectUnknown(allowed: ["description", "ratioMetric", "thresholdMetric"])
            slis[name] = spec
        case "DataSource":
            try ResourceName.validate(name, field: "metadata.name")
            try spec.rejectUnknown(allowed: ["description", "type", "connectionDetails"])
            let type = try spec.requiredString("type")
            guard type.lowercased() == "prometheus" else {
                throw VireoError.invalid(
                    field: spec.field("type"), value: "'\(type)'", "only Prometheus data sources can be evaluated")
            }
            dataSources[name] = (type, spec.path)
        default:
            break
        }
    }

    /// The indicator spec of `fields` (an SLO's spec or one of its objectives): inline
    /// (`indicator.spec`) or an SLI of the manifest (`indicatorRef`).
    mutating func indicator(_ fields: FieldReader) throws(VireoError) -> FieldReader {
        if let reference = try fields.string("indicatorRef") {
            guard fields.object["indicator"] == nil else {
                throw VireoError(.invalidArgument, "\(fields.field("indicatorRef")): give indicator or indicatorRef, not both")
            }
            guard let sli = slis[reference] else {
                throw VireoError.invalid(
                    field: fields.field("indicatorRef"), value: "'\(reference)'", "no SLI of that name in this manifest")
            }
            used.insert("SLI/\(reference)")
            return sli
        }
        guard let indicator = try fields.object("indicator") else {
            throw VireoError(.invalidArgument, "\(fields.field("indicator")): is required (or indicatorRef, naming an SLI)")
        }
        try indicator.rejectUnknown(allowed: ["metadata", "spec"])
        guard let spec = try indicator.object("spec") else {
            throw VireoError(.invalidArgument, "\(indicator.field("spec")): is required")
        }
        try spec.rejectUnknown(allowed: ["description", "ratioMetric", "thresholdMetric"])
        return spec
    }
}
