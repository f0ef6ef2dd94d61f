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
    /// The burn-rate alerts of its alert policies, on each of its objectives.
    public var alerts: [AlertRule] = []

    static let specFields: Set<String> = [
        "description", "service", "indicator", "indicatorRef", "timeWindow", "budgetingMethod", "objectives", "alertPolicies",
    ]

    static func parse(name: String, spec: FieldReader, library: inout OpenSLOLibrary) throws(VireoError) -> OpenSLODocument {
        try ResourceName.validate(name, field: "metadata.name")
        try spec.rejectUnknown(allowed: specFields)
        _ = try spec.string("description")
        let service = try spec.requiredString("service")
        try ResourceName.validate(service, field: spec.field("service"))
        let method = try spec.string("budgetingMethod") ?? "Occurrences"
        guard ["Occurrences", "Timeslices", "RatioTimeslices"].contains(method) else {
            throw VireoError.invalid(
                field: spec.field("budgetingMethod"), value: "'\(method)'", "expected Occurrences, Timeslices or RatioTimeslices")
        }
        var period = 28 * 86_400.0
        if let windows = try spec.array("timeWindow") {
            guard windows.count == 1, let (path, value) = windows.first else {
                throw VireoError.invalid(
                    field: spec.field("timeWindow"), value: "\(windows.count) items", "needs exactly one time window (OpenSLO v1)"
                )
            }
            let window = try FieldReader(value, path: path)
            try window.rejectUnknown(allowed: ["duration", "isRolling", "calendar"])
            _ = try window.bool("isRolling")
            if let calendar = try window.object("calendar") {
                try calendar.rejectUnknown(allowed: ["startTime", "timeZone"])
                _ = try calendar.string("startTime")
                _ = try calendar.string("timeZone")
            }
            let text = try window.requiredString("duration")
            guard let seconds = calendarSeconds(text) ?? DurationText.seconds(text), seconds > 0 else {
                throw VireoError.invalid(
                    field: window.field("duration"), value: "'\(text)'", "is not a duration above 0 (e.g. 28d, 1w, 1M, 1Q, 1Y)")
            }
            period = seconds
        }
        // The SLO's own indicator is checked even when every objective names its own.
        if spec.object["indicator"] != nil || spec.object["indicatorRef"] != nil { _ = try library.indicator(spec) }
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
            _ = try fields.string("displayName")
            let goal: Double
            switch (try fields.double("target"), try fields.double("targetPercent")) {
            case (let target?, nil):
                guard target > 0, target < 1 else {
                    throw VireoError.invalid(
                        field: fields.field("target"), value: "\(target)", "must be between 0 and 1 (exclusive)")
                }
                goal = target
            case (nil, let percent?):
                guard percent > 0, percent < 100 else {
                    throw VireoError.invalid(
                        field: fields.field("targetPercent"), value: "\(percent)", "must be between 0 and 100 (exclusive)")
                }
                goal = percent / 100
            case (nil, nil):
                throw VireoError(.invalidArgument, "\(fields.field("target")): is required (or targetPercent)")
            case (_?, _?):
                throw VireoError(.invalidArgument, "\(fields.field("targetPercent")): give target or targetPercent, not both")
            }
            // Read whatever the budgeting method, so a wrong one is refused, not ignored.
            let sliceWindow = try fields.duration("timeSliceWindow")
            if let sliceWindow, sliceWindow < 1 || sliceWindow > period {
                throw VireoError.invalid(
                    field: fields.field("timeSliceWindow"), value: DurationText.format(sliceWindow),
                    "must be at least 1s and at most the time window")
            }
            let window = method == "Occurrences" ? 60 : sliceWindow ?? 60
            guard period >= window else {
                throw VireoError.invalid(
                    field: spec.field("timeWindow"), value: DurationText.format(period),
                    "is shorter than the objectives' \(DurationText.format(window)) windows")
            }
            let sliceTarget = try fields.double("timeSliceTarget")
            if let sliceTarget, !(sliceTarget > 0 && sliceTarget <= 1) {
                throw VireoError.invalid(
                    field: fields.field("timeSliceTarget"), value: "\(sliceTarget)", "must be above 0 and at most 1")
            }
            let op = try fields.string("op")
            if let op, !["lte", "lt", "gte", "gt"].contains(op) {
                throw VireoError.invalid(field: fields.field("op"), value: "'\(op)'", "expected lte, lt, gte or gt")
            }
            if let value = try fields.double("value"), !value.isFinite {
                throw VireoError.invalid(field: fields.field("value"), value: "\(value)", "must be a finite number")
            }
            // An objective's own indicator, else the SLO's.
            let indicator =
                try library.indicator(fields.object["indicator"] != nil || fields.object["indicatorRef"] != nil ? fields : spec)
            let objectiveName = objectives.count == 1 ? name : "\(name)-\(result.count + 1)"
            // A ratio's per-window threshold: the slice target under Timeslices, else the goal.
            let ratioTarget = method == "Timeslices" ? sliceTarget ?? goal : goal
            var objective = try indicatorObjective(
                indicator, objective: fields, name: objectiveName, method: method, ratioTarget: ratioTarget,
                windowSeconds: window, library: &library)
            objective.goal = goal
            objective.periodSeconds = period
            objective.windowSeconds = window
            result.append(objective)
        }
        var alerts: [AlertRule] = []
        for (path, value) in try spec.array("alertPolicies") ?? [] {
            let policy = try library.resolve(try FieldReader(value, path: path), kind: "AlertPolicy", reference: "alertPolicyRef")
            for objective in result {
                alerts += try library.alertRules(policy.spec, name: policy.name, objective: objective.name)
            }
        }
        return OpenSLODocument(name: name, service: service, objectives: result, alerts: alerts)
    }

    /// OpenSLO's calendar units, as rolling lengths: a month of 30 days, a quarter of 91, a year
    /// of 365.
    static func calendarSeconds(_ text: String) -> Double? {
        guard let unit = text.last, let days = ["M": 30.0, "Q": 91, "Y": 365][String(unit)] else { return nil }
        guard let count = DurationText.decimal(text.dropLast()), count > 0 else { return nil }
        return count * days * 86_400
    }

    static func indicatorObjective(
        _ indicator: FieldReader, objective fields: FieldReader, name: String, method: String, ratioTarget threshold: Double,
        windowSeconds: Double, library: inout OpenSLOLibrary
    ) throws(VireoError) -> Objective {
        if let ratio = try indicator.object("ratioMetric") {
            // Its shape was checked with the indicator (OpenSLOLibrary.checkIndicatorSpec).
            let counter = try ratio.bool("counter") ?? true
            let total = try query(ratio, "total", library: &library)
            let good = ratio.object["good"] != nil ? try query(ratio, "good", library: &library) : nil
            let bad = ratio.object["bad"] != nil ? try query(ratio, "bad", library: &library) : nil
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
        // Their values were checked with the objective (OpenSLODocument.parse); here they are needed.
        let op = try fields.requiredString("op")
        guard let value = try fields.double("value") else {
            throw VireoError(.invalidArgument, "\(fields.field("value")): is required")
        }
        let upper = ["lte", "lt"].contains(op)
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
        return Objective(name: name, kind: form.kind(hasMaximum: upper), metric: source.text, target: value, language: .promql)
    }

    static func isSelector(_ text: String) -> Bool { (try? SeriesSelector(parsing: text)) != nil }

    /// `X.metricSource.spec.query` of a ratio's good/total or of a threshold metric; the source
    /// inline or a `DataSource` of the manifest, of type Prometheus.
    static func query(_ parent: FieldReader, _ key: String, library: inout OpenSLOLibrary) throws(VireoError) -> (
        text: String, field: String
    ) {
        let (source, query) = try checkMetric(parent, key)
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
        if let type, !isPrometheus(type) {
            throw VireoError.invalid(
                field: source.field("metricSourceRef"), value: "'\(type)'", "only Prometheus metric sources can be evaluated")
        }
        return query
    }

    /// The shape of metric `key` of `parent`: `{metricSource: {metricSourceRef?, type?, spec:
    /// {query}}}`, a Prometheus source's query. Returns the source and the query.
    static func checkMetric(_ parent: FieldReader, _ key: String) throws(VireoError) -> (
        source: FieldReader, query: (text: String, field: String)
    ) {
        guard let metric = try parent.object(key) else { throw VireoError(.invalidArgument, "\(parent.field(key)): is required") }
        try metric.rejectUnknown(allowed: ["metricSource"])
        guard let source = try metric.object("metricSource") else {
            throw VireoError(.invalidArgument, "\(metric.field("metricSource")): is required")
        }
        try source.rejectUnknown(allowed: ["metricSourceRef", "type", "spec"])
        _ = try source.string("metricSourceRef")
        if let type = try source.string("type"), !isPrometheus(type) {
            throw VireoError.invalid(
                field: source.field("type"), value: "'\(type)'", "only Prometheus metric sources can be evaluated")
        }
        guard let spec = try source.object("spec") else {
            throw VireoError(.invalidArgument, "\(source.field("spec")): is required")
        }
        let text = try spec.requiredString("query")
        guard !text.isEmpty else { throw VireoError(.invalidArgument, "\(spec.field("query")): is empty") }
        return (source, (text, spec.field("query")))
    }

    /// A metric source's type Vireo can evaluate: Prometheus, in any case.
    static func isPrometheus(_ type: String) -> Bool { type.lowercased() == "prometheus" }

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

    /// Alert documents, by `Kind/name`.
    var alertDocuments: [String: FieldReader] = [:]

    /// The kinds that are only ever named by others.
    static let referenced: Set<String> = ["SLI", "DataSource", "AlertPolicy", "AlertCondition", "AlertNotificationTarget"]

    /// Takes in a document others name.
    mutating func collect(kind: String, name: String, spec: FieldReader) throws(VireoError) {
        switch kind {
        case "AlertPolicy", "AlertCondition", "AlertNotificationTarget":
            try ResourceName.validate(name, field: "metadata.name")
            alertDocuments["\(kind)/\(name)"] = spec
        case "SLI":
            try ResourceName.validate(name, field: "metadata.name")
            try Self.checkIndicatorSpec(spec)
            slis[name] = spec
        case "DataSource":
            try ResourceName.validate(name, field: "metadata.name")
            try spec.rejectUnknown(allowed: ["description", "type", "connectionDetails"])
            _ = try spec.string("description")
            _ = try spec.object("connectionDetails")
            let type = try spec.requiredString("type")
            guard OpenSLODocument.isPrometheus(type) else {
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
        _ = try indicator.object("metadata")
        guard let spec = try indicator.object("spec") else {
            throw VireoError(.invalidArgument, "\(indicator.field("spec")): is required")
        }
        try Self.checkIndicatorSpec(spec)
        return spec
    }

    /// An SLI's spec (inline or an `SLI` document): a description and one metric, a ratio or a
    /// threshold.
    static func checkIndicatorSpec(_ spec: FieldReader) throws(VireoError) {
        try spec.rejectUnknown(allowed: ["description", "ratioMetric", "thresholdMetric"])
        _ = try spec.string("description")
        switch (try spec.object("ratioMetric"), spec.object["thresholdMetric"]) {
        case (let ratio?, nil):
            for key in ["raw", "rawType"] where ratio.object[key] != nil {
                throw VireoError(
                    .invalidArgument, "\(ratio.field(key)): raw ratios are not supported; give good (or bad) and total")
            }
            try ratio.rejectUnknown(allowed: ["counter", "good", "bad", "total"])
            _ = try ratio.bool("counter")
            guard (ratio.object["good"] == nil) != (ratio.object["bad"] == nil) else {
                throw VireoError(.invalidArgument, "\(ratio.field("good")): needs good or bad (one of them) beside total")
            }
            for key in ["good", "bad", "total"] where key == "total" || ratio.object[key] != nil {
                _ = try OpenSLODocument.checkMetric(ratio, key)
            }
        case (nil, _?):
            _ = try OpenSLODocument.checkMetric(spec, "thresholdMetric")
        case (nil, nil):
            throw VireoError(.invalidArgument, "\(spec.path): needs ratioMetric or thresholdMetric")
        case (_?, _?):
            throw VireoError(.invalidArgument, "\(spec.field("thresholdMetric")): give ratioMetric or thresholdMetric, not both")
        }
    }
}

extension OpenSLOLibrary {
    /// An entry naming a document of `kind` (`{reference: name}`) or holding one inline
    /// (`{kind, metadata: {name}, spec}`): its name and spec.
    mutating func resolve(_ entry: FieldReader, kind: String, reference: String) throws(VireoError) -> (
        name: String, spec: FieldReader
    ) {
        if let name = try entry.string(reference) {
            try entry.rejectUnknown(allowed: [reference])
            guard let spec = alertDocuments["\(kind)/\(name)"] else {
                throw VireoError.invalid(
                    field: entry.field(reference), value: "'\(name)'", "no \(kind) of that name in this manifest")
            }
            used.insert("\(kind)/\(name)")
            return (name, spec)
        }
        try entry.rejectUnknown(allowed: ["apiVersion", "kind", "metadata", "spec"])
        if let version = try entry.string("apiVersion"), version != ManifestParser.openSLOVersion {
            throw VireoError.invalid(
                field: entry.field("apiVersion"), value: "'\(version)'", "expected \(ManifestParser.openSLOVersion)")
        }
        let found = try entry.string("kind")
        guard found == kind else {
            throw VireoError.invalid(
                field: entry.field("kind"), value: "'\(found ?? "")'", "expected \(kind) inline, or \(reference) naming one")
        }
        guard let metadata = try entry.object("metadata"), let spec = try entry.object("spec") else {
            throw VireoError(.invalidArgument, "\(entry.path): an inline \(kind) needs metadata and spec")
        }
        try metadata.rejectUnknown(allowed: ["name", "labels", "displayName", "annotations"])
        let name = try metadata.requiredString("name")
        try ResourceName.validate(name, field: metadata.field("name"))
        return (name, spec)
    }

    /// The rules an alert policy sets on `objective`: its condition, when it notifies, and where.
    mutating func alertRules(_ policy: FieldReader, name: String, objective: String) throws(VireoError) -> [AlertRule] {
        try policy.rejectUnknown(allowed: [
            "description", "alertWhenNoData", "alertWhenResolved", "alertWhenBreaching", "conditions", "notificationTargets",
        ])
        _ = try policy.string("description")
        guard let conditions = try policy.array("conditions"), conditions.count == 1,
            let (conditionPath, conditionValue) = conditions.first
        else {
            throw VireoError(.invalidArgument, "\(policy.field("conditions")): needs exactly one condition (OpenSLO v1)")
        }
        let condition = try resolve(
            try FieldReader(conditionValue, path: conditionPath), kind: "AlertCondition", reference: "conditionRef")
        try condition.spec.rejectUnknown(allowed: ["description", "severity", "condition"])
        _ = try condition.spec.string("description")
        let severity = try condition.spec.requiredString("severity")
        guard let rule = try condition.spec.object("condition") else {
            throw VireoError(.invalidArgument, "\(condition.spec.field("condition")): is required")
        }
        try rule.rejectUnknown(allowed: ["kind", "op", "threshold", "lookbackWindow", "alertAfter"])
        let kind = try rule.requiredString("kind")
        guard kind.lowercased() == "burnrate" else {
            throw VireoError.invalid(field: rule.field("kind"), value: "'\(kind)'", "only burnrate conditions can be evaluated")
        }
        let op = try rule.requiredString("op")
        guard ["gte", "gt", "lte", "lt"].contains(op) else {
            throw VireoError.invalid(field: rule.field("op"), value: "'\(op)'", "expected gte, gt, lte or lt")
        }
        guard let threshold = try rule.double("threshold"), threshold.isFinite, threshold >= 0 else {
            throw VireoError(.invalidArgument, "\(rule.field("threshold")): is required: a burn rate, 0 or more")
        }
        guard let lookback = try rule.duration("lookbackWindow"), lookback >= 1 else {
            throw VireoError(.invalidArgument, "\(rule.field("lookbackWindow")): is required: a duration of 1s or more")
        }
        let alertAfter = try rule.duration("alertAfter") ?? 0
        var targets: [AlertTarget] = []
        for (path, value) in try policy.array("notificationTargets") ?? [] {
            let target = try resolve(try FieldReader(value, path: path), kind: "AlertNotificationTarget", reference: "targetRef")
            try target.spec.rejectUnknown(allowed: ["description", "target"])
            _ = try target.spec.string("description")
            let url = try target.spec.requiredString("target")
            guard let parsed = URL(string: url), ["http", "https"].contains(parsed.scheme?.lowercased()),
                parsed.host?.isEmpty == false
            else {
                throw VireoError.invalid(
                    field: target.spec.field("target"), value: "'\(url)'",
                    "Vireo notifies webhooks in Alertmanager's format: give the receiver's URL (http://…)")
            }
            targets.append(AlertTarget(name: target.name, url: url))
        }
        guard !targets.isEmpty else {
            throw VireoError(.invalidArgument, "\(policy.field("notificationTargets")): needs at least one target")
        }
        return [
            AlertRule(
                objective: objective, name: name, severity: severity, op: op, threshold: threshold, lookbackSeconds: lookback,
                alertAfterSeconds: alertAfter, whenBreaching: try policy.bool("alertWhenBreaching") ?? true,
                whenResolved: try policy.bool("alertWhenResolved") ?? true,
                whenNoData: try policy.bool("alertWhenNoData") ?? false,
                targets: targets)
        ]
    }
}
