import Foundation
import VireoModel
import VireoTelemetry
import Yams

/// An application's objectives written as OpenSLO v1 documents (`vireo slo export`): a Service,
/// a DataSource where the application reads a Prometheus server, and one SLO per objective.
///
/// Applied back (beside the application), they give the same objectives, except that selector
/// objectives of response time and throughput come back as PromQL objectives of the query shown
/// (the one a Prometheus source is asked), and the kind of a PromQL objective is inferred again
/// from its form. Burn-rate alerts are Vireo's own and are not written.
public enum OpenSLOExport {
    public static func documents(for app: ApplicationSpec) -> [Document] {
        var documents = [Document(kind: "Service", name: app.name, spec: .service(ServiceSpec()))]
        let dataSource = app.telemetry.source.map { _ in "\(app.name)-prometheus" }
        if let dataSource, let server = app.telemetry.source?.prometheus {
            documents.append(
                Document(
                    kind: "DataSource", name: dataSource,
                    spec: .dataSource(DataSourceSpec(connectionDetails: ["url": server.url]))))
        }
        for objective in app.objectives {
            documents.append(
                Document(kind: "SLO", name: objective.name, spec: .slo(slo(objective, service: app.name, dataSource: dataSource)))
            )
        }
        return documents
    }

    /// The documents as YAML, one after another (`---`).
    public static func yaml(for app: ApplicationSpec) throws -> String {
        try documents(for: app).map { try YAMLEncoder().encode($0) }.joined(separator: "---\n")
    }

    static func slo(_ objective: Objective, service: String, dataSource: String?) -> SLOSpec {
        func source(_ query: String) -> MetricSource {
            MetricSource(
                metricSource: .init(
                    metricSourceRef: dataSource, type: dataSource == nil ? "Prometheus" : nil, spec: .init(query: query)))
        }
        var target = SLOSpec.Target(
            target: Number(objective.goal), timeSliceWindow: DurationText.format(objective.windowSeconds))
        let indicator: SLOSpec.Indicator
        let windowMs = Int64((objective.windowSeconds * 1000).rounded())
        switch (objective.language, objective.kind) {
        case (nil, .ratio):
            indicator = .init(
                ratioMetric: .init(counter: true, good: source(objective.metric), total: source(objective.totalMetric ?? "")))
            target.timeSliceTarget = Number(objective.target)
        case (nil, .capacity):
            indicator = .init(thresholdMetric: source(objective.metric))
            (target.op, target.value) = ("lte", Number(objective.target))
        case (nil, .responseTime), (nil, .throughput):
            // The query a Prometheus source is asked for the same objective.
            let query = (try? SeriesSelector(parsing: objective.metric)).map {
                Indicator.promQL(objective, $0, total: nil, windowMs: windowMs)
            }
            indicator = .init(thresholdMetric: source(query ?? objective.metric))
            (target.op, target.value) = (objective.kind == .responseTime ? "lte" : "gte", Number(objective.target))
        case (.promql?, let kind):
            indicator = .init(thresholdMetric: source(objective.metric))
            (target.op, target.value) = ([.responseTime, .capacity].contains(kind) ? "lte" : "gte", Number(objective.target))
        }
        return SLOSpec(
            service: service, indicator: .init(spec: indicator),
            timeWindow: [.init(duration: DurationText.format(objective.periodSeconds), isRolling: true)],
            budgetingMethod: "Timeslices", objectives: [target])
    }

    public struct Document: Encodable, Sendable {
        public var apiVersion = ManifestParser.openSLOVersion
        public var kind: String
        public var metadata: Metadata
        public var spec: Spec

        init(kind: String, name: String, spec: Spec) {
            self.kind = kind
            self.metadata = Metadata(name: name)
            self.spec = spec
        }

        public struct Metadata: Encodable, Sendable {
            public var name: String
        }
    }

    public enum Spec: Encodable, Sendable {
        case service(ServiceSpec)
        case dataSource(DataSourceSpec)
        case slo(SLOSpec)

        public func encode(to encoder: any Encoder) throws {
            switch self {
            case .service(let spec): try spec.encode(to: encoder)
            case .dataSource(let spec): try spec.encode(to: encoder)
            case .slo(let spec): try spec.encode(to: encoder)
            }
        }
    }

    public struct ServiceSpec: Encodable, Sendable {
        public var description = "A Vireo application"
    }

    public struct DataSourceSpec: Encodable, Sendable {
        public var type = "Prometheus"
        public var connectionDetails: [String: String]
    }

    public struct MetricSource: Encodable, Sendable {
        public var metricSource: Source

        public struct Source: Encodable, Sendable {
            public var metricSourceRef: String?
            public var type: String?
            public var spec: Query
        }

        public struct Query: Encodable, Sendable {
            public var query: String
        }
    }

    public struct SLOSpec: Encodable, Sendable {
        public var service: String
        public var indicator: IndicatorDocument
        public var timeWindow: [TimeWindow]
        public var budgetingMethod: String
        public var objectives: [Target]

        public struct IndicatorDocument: Encodable, Sendable {
            public var spec: Indicator
        }

        public struct Indicator: Encodable, Sendable {
            public var ratioMetric: Ratio?
            public var thresholdMetric: MetricSource?
        }

        public struct Ratio: Encodable, Sendable {
            public var counter: Bool
            public var good: MetricSource
            public var total: MetricSource
        }

        public struct TimeWindow: Encodable, Sendable {
            public var duration: String
            public var isRolling: Bool
        }

        public struct Target: Encodable, Sendable {
            public var op: String?
            public var value: Number?
            public var target: Number
            public var timeSliceTarget: Number?
            public var timeSliceWindow: String
        }
    }

    /// A number written as people write it (`0.05`, not Yams's `5e-2`).
    public struct Number: YAMLEncodable, Sendable {
        public var value: Double
        init(_ value: Double) { self.value = value }
        public func box() -> Node { .scalar(.init("\(value)", Tag(.float))) }
        public func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            try container.encode(value)
        }
    }
}
