import Foundation
import VireoModel

/// A management pack: what a piece of server software's own metrics (read through its Prometheus
/// exporter) say about its capacity, throughput and response time, with default objectives and
/// why each was chosen. Written by the people who know the software; `vireo pack lint` checks
/// one, `vireo pack apply` adds one to an application. See docs/packs.md.
public struct Pack: Sendable, Equatable {
    public var name: String
    public var description: String
    /// Where the exporter serves the metrics, in the application's VMs.
    public var exporter: Exporter
    /// An HTTP probe Vireo sends itself, where the software's metrics have no latencies.
    public var probe: TelemetryEndpoint?
    public var metrics: [MetricDeclaration]
    public var objectives: [Objective]
    /// Why each metric and objective is there: `metric NAME` or `objective NAME` → the reason.
    public var reasons: [String: String]
    /// The pack as written.
    public var text: String

    public struct Exporter: Sendable, Equatable {
        /// The Debian package that ships it.
        public var package: String
        public var endpoint: TelemetryEndpoint
    }

    static let specFields: Set<String> = ["description", "exporter", "probe", "metrics", "objectives"]

    /// Parses and checks a pack: every field as in an Application manifest, plus a `why` for each
    /// metric and objective.
    public static func parse(_ text: String) throws(VireoError) -> Pack {
        let documents = try ManifestParser.loadYAMLDocuments(text)
        guard documents.count == 1, let document = documents.first else {
            throw VireoError(.invalidArgument, "pack: must be one YAML document (found \(documents.count))")
        }
        let root = try FieldReader(document, path: "")
        try root.rejectUnknown(allowed: ["apiVersion", "kind", "metadata", "spec"])
        let version = try root.requiredString("apiVersion")
        guard version == ManifestParser.apiVersion else {
            throw VireoError.invalid(field: "apiVersion", value: "'\(version)'", "expected \(ManifestParser.apiVersion)")
        }
        let kind = try root.requiredString("kind")
        guard kind == "Pack" else { throw VireoError.invalid(field: "kind", value: "'\(kind)'", "expected Pack") }
        guard let metadata = try root.object("metadata") else { throw VireoError(.invalidArgument, "metadata: is required") }
        try metadata.rejectUnknown(allowed: ["name", "displayName", "labels", "annotations"])
        let name = try metadata.requiredString("name")
        try ResourceName.validate(name, field: "metadata.name")
        guard let spec = try root.object("spec") else { throw VireoError(.invalidArgument, "spec: is required") }
        try spec.rejectUnknown(allowed: specFields)
        let description = try spec.requiredString("description")
        guard let exporterFields = try spec.object("exporter") else {
            throw VireoError(.invalidArgument, "\(spec.field("exporter")): is required (the package, port and path)")
        }
        let package = try exporterFields.requiredString("package")
        let endpoint = try ApplicationValidation.endpoint(
            try FieldReader(.object(exporterFields.object.filter { $0.key != "package" }), path: exporterFields.path),
            defaultPath: "/metrics")
        let probe = try spec.object("probe").map { (f) throws(VireoError) in
            try ApplicationValidation.endpoint(f, defaultPath: "/")
        }

        var reasons: [String: String] = [:]
        /// The entries of `key` without their `why`, which each must have.
        func withoutReasons(_ key: String, label: String) throws(VireoError) -> JSONValue {
            var entries: [JSONValue] = []
            for (path, value) in try spec.array(key) ?? [] {
                let fields = try FieldReader(value, path: path)
                let why = try fields.string("why")
                guard let why, !why.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
                    throw VireoError(.invalidArgument, "\(fields.field("why")): is required: say why the pack reads this")
                }
                reasons["\(label) \(try fields.requiredString("name"))"] = why
                entries.append(.object(fields.object.filter { $0.key != "why" }))
            }
            return .array(entries)
        }
        let telemetryValue = JSONValue.object(["metrics": try withoutReasons("metrics", label: "metric")])
        let telemetry = try ApplicationValidation.telemetry(try FieldReader(telemetryValue, path: spec.path))
        guard !telemetry.metrics.isEmpty else {
            throw VireoError(.invalidArgument, "\(spec.field("metrics")): needs at least one metric")
        }
        var objectives: [Objective] = []
        guard case .array(let entries) = try withoutReasons("objectives", label: "objective"), !entries.isEmpty else {
            throw VireoError(.invalidArgument, "\(spec.field("objectives")): needs at least one objective")
        }
        var withProbe = telemetry
        withProbe.probe = probe
        for (i, entry) in entries.enumerated() {
            let objective = try ApplicationValidation.objective(
                try FieldReader(entry, path: spec.field("objectives") + "[\(i)]"), telemetry: withProbe)
            guard !objectives.contains(where: { $0.name == objective.name }) else {
                throw VireoError.invalid(
                    field: spec.field("objectives") + "[\(i)].name", value: "'\(objective.name)'", "appears twice")
            }
            objectives.append(objective)
        }
        return Pack(
            name: name, description: description, exporter: Exporter(package: package, endpoint: endpoint), probe: probe,
            metrics: telemetry.metrics, objectives: objectives, reasons: reasons, text: text)
    }

    /// `app` with the pack added: Vireo scrapes the exporter (unless a Prometheus source reads the
    /// application), probes where the pack does and the application does not, knows the pack's
    /// metrics, and has its objectives (replacing those of the same names).
    public func apply(to app: ApplicationSpec) throws(VireoError) -> ApplicationSpec {
        var spec = app
        if spec.telemetry.source == nil { spec.telemetry.scrape = exporter.endpoint }
        if spec.telemetry.probe == nil, spec.telemetry.source == nil { spec.telemetry.probe = probe }
        for metric in metrics {
            if let existing = spec.telemetry.metrics.first(where: { $0.name == metric.name }) {
                guard existing.type == metric.type else {
                    throw VireoError(
                        .conflict,
                        "application '\(app.name)' declares \(metric.name) as a \(existing.type.rawValue); pack \(name) reads it as a \(metric.type.rawValue)"
                    )
                }
            } else {
                spec.telemetry.metrics.append(metric)
            }
        }
        for objective in objectives {
            if let i = spec.objectives.firstIndex(where: { $0.name == objective.name }) {
                spec.objectives[i] = objective
            } else {
                spec.objectives.append(objective)
            }
        }
        return spec
    }

    /// The packs that come with Vireo.
    public static let builtIn: [Pack] = [
        Embedded.packNginxYaml, Embedded.packRedisYaml, Embedded.packPostgresqlYaml, Embedded.packHaproxyYaml,
    ].map { text in
        do {
            return try Pack.parse(text)
        } catch {
            // The test suite lints every built-in pack; one that does not parse is a build defect.
            fatalError("a built-in pack does not parse: \(error)")
        }
    }

    public static func builtIn(named name: String) -> Pack? { builtIn.first { $0.name == name } }
}

/// A pack as the API shows it (`GET /v1/packs`, `/v1/packs/{pack}`).
public struct PackView: Sendable, Codable, Equatable {
    public struct Exporter: Sendable, Codable, Equatable {
        public var package: String
        public var port: Int
        public var path: String
    }

    public struct Metric: Sendable, Codable, Equatable {
        public var name: String
        public var type: MetricType
        public var why: String
    }

    public struct Objective: Sendable, Codable, Equatable {
        public var name: String
        public var kind: VireoModel.Objective.Kind
        public var sli: String
        /// The most (response time, capacity) or least (throughput, ratio) the SLI may be.
        public var target: Double
        public var windowSeconds: Double
        public var why: String
    }

    public var name: String
    public var description: String
    public var exporter: Exporter
    public var metrics: [Metric]
    public var objectives: [Objective]
    /// The pack's YAML, as written.
    public var text: String

    public init(_ pack: Pack) {
        name = pack.name
        description = pack.description
        exporter = Exporter(package: pack.exporter.package, port: pack.exporter.endpoint.port, path: pack.exporter.endpoint.path)
        metrics = pack.metrics.map { Metric(name: $0.name, type: $0.type, why: pack.reasons["metric \($0.name)"] ?? "") }
        objectives = pack.objectives.map {
            Objective(
                name: $0.name, kind: $0.kind, sli: $0.metric, target: $0.target, windowSeconds: $0.windowSeconds,
                why: pack.reasons["objective \($0.name)"] ?? "")
        }
        text = pack.text
    }
}

public struct PackList: Sendable, Codable, Equatable {
    public var items: [PackView]
    public init(items: [PackView]) { self.items = items }
}
