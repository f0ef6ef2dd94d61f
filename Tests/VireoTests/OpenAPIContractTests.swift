import Foundation
import HummingbirdTesting
import Synchronization
import Testing
import VireoAPI
import VireoModel

/// `/openapi.json` as a contract: a request body the schema allows is never refused as invalid
/// (400), and one it does not allow is refused with 400 naming the field — so a client generated
/// from the document never sends what the server refuses.
@Suite("OpenAPI constraints")
struct OpenAPIContractTests {
    /// Names at and beyond every rule of `ResourceName`.
    static let names = [
        "a", "web-1", "0", "a0-9", String(repeating: "a", count: 63), String(repeating: "a", count: 64), "", "-a", "a-", "Web",
        "a_b", "a.b", "é",
    ]

    struct Case {
        var route: String
        var schema: String
        var base: [String: JSONValue]
        /// The field that names the body's own resource, made unique per request (a second
        /// create of one name is a conflict, not what is checked here). Fields are paths:
        /// `spec.memory` is `memory` in `spec`.
        var unique: String?
        var field: String
        var candidates: [JSONValue]
    }

    static var cases: [Case] {
        let names = Self.names.map(JSONValue.string)
        let images: [JSONValue] = [.string("tiny"), .string("web"), .string("nope"), .string(""), .number(1)]
        let cpus: [JSONValue] = [.number(0), .number(1), .number(512), .number(513), .number(-1), .number(1.5), .string("2")]
        // Sizes at and beyond each unit's bounds (memory from the image's minimum, 80MiB or
        // 96MiB, disk from 64MiB, both to 16TiB), and spellings only the command line takes.
        let mib: Double = 1_048_576
        let sizes: [JSONValue] =
            [
                "63MiB", "64MiB", "64Mi", "79MiB", "80MiB", "80Mi", "95MiB", "96MiB", "128MiB", "1GiB", "1Gi", "16384GiB",
                "16385GiB", "16TiB", "16Ti",
                "17TiB", "16777216MiB", "16777217MiB", "064MiB", " 64MiB", "64MiB ", "64 MiB", "1024KiB", "67108864", "1G",
                "64mib", "MiB", "", "1.5GiB", "-64MiB", "99999999999999999999MiB",
            ].map(JSONValue.string)
            + [
                63 * mib, 64 * mib, 79 * mib, 80 * mib, 96 * mib, 16_777_216 * mib, 16_777_217 * mib, 64 * mib + 1, 0, -64 * mib,
                1.5, 1e30,
            ].map(JSONValue.number) + [.bool(true)]
        let vm: [String: JSONValue] = ["name": .string("x"), "image": .string("tiny")]
        let webVM: [String: JSONValue] = ["name": .string("x"), "image": .string("web")]
        let tinyContext: [String: JSONValue] = ["name": .string("x"), "kind": .string("disposable"), "image": .string("tiny")]
        let context: [String: JSONValue] = ["name": .string("x"), "kind": .string("disposable"), "image": .string("tiny")]
        let token: [String: JSONValue] = ["name": .string("x"), "role": .string("viewer")]
        let vmDocument: [String: JSONValue] = [
            "apiVersion": .string("vireo/v1"), "kind": .string("VirtualMachine"), "metadata": .object(["name": .string("x")]),
            "spec": .object(["image": .string("tiny")]),
        ]
        let contextDocument: [String: JSONValue] = [
            "apiVersion": .string("vireo/v1"), "kind": .string("Context"), "metadata": .object(["name": .string("x")]),
            "spec": .object(["kind": .string("disposable"), "image": .string("tiny")]),
        ]
        // Application documents: each constrained field the schema states exactly. (Durations'
        // ranges and the rules across an objective's fields are the server's alone: the schema
        // says them in words.)
        let metrics: JSONValue = [
            ["name": "latency_seconds", "type": "histogram"], ["name": "requests_total", "type": "counter"],
            ["name": "queue", "type": "gauge"],
        ]
        let appDocument: [String: JSONValue] = [
            "apiVersion": "vireo/v1", "kind": "Application", "metadata": ["name": "x"],
            "spec": ["telemetry": ["metrics": metrics]],
        ]
        let scrapedApp = JSONValue.object(appDocument).setting(["port": 80], at: "spec.telemetry.scrape").objectValue ?? [:]
        let sourcedApp =
            JSONValue.object(appDocument).setting(
                ["prometheus": ["url": "http://127.0.0.1:9090"]], at: "spec.telemetry.source"
            ).objectValue ?? [:]
        func objectives(_ objects: [String: JSONValue]...) -> JSONValue { .array(objects.map(JSONValue.object)) }
        let latency: [String: JSONValue] = ["name": "latency", "sli": "latency_seconds", "quantile": 0.99, "target": 0.05]
        let applicationCases = [
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: appDocument, unique: nil, field: "metadata.name",
                candidates: names),
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: appDocument, unique: "metadata.name",
                field: "spec.telemetry.scrape.port", candidates: [0, 1, 80, 65_535, 65_536, -1, 1.5, "80", .null]),
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: scrapedApp, unique: "metadata.name",
                field: "spec.telemetry.scrape.path", candidates: ["/", "/metrics", "/a?b=1", "metrics", "", "/a b", 1]),
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: scrapedApp, unique: "metadata.name",
                field: "spec.telemetry.scrape.interval",
                candidates: ["5s", "500ms", "1m", "1m30s", "2.5s", "10", 5, "5x", "", "s", "-5s", "5 s", -1, true]),
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: appDocument, unique: "metadata.name",
                field: "spec.telemetry.metrics",
                candidates: [
                    [["name": "a_b:c", "type": "counter"]], [["name": "up", "type": "gauge"]],
                    [["name": "x", "type": "summary"]],
                    [["name": "x", "type": "untyped"]], [["name": "x", "type": "weird"]], [["name": "1x", "type": "gauge"]],
                    [["name": "a-b", "type": "gauge"]], [["name": "x"]], [["type": "gauge"]],
                    [["name": "x", "type": "gauge", "help": "?"]], "x", [],
                ]),
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: appDocument, unique: "metadata.name",
                field: "spec.telemetry.source",
                candidates: [
                    ["prometheus": ["url": "http://127.0.0.1:9090"]], ["prometheus": ["url": "https://prom.example:9090/api/"]],
                    ["prometheus": ["url": "HTTP://127.0.0.1:9090"]], ["prometheus": ["url": "ftp://127.0.0.1"]],
                    ["prometheus": ["url": "http://"]], ["prometheus": ["url": "http://h:9090?x=1"]],
                    ["prometheus": ["url": "127.0.0.1:9090"]], ["prometheus": [:]], [:],
                    ["prometheus": ["url": "http://h", "user": "x"]],
                ]),
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: sourcedApp, unique: "metadata.name",
                field: "spec.telemetry.scrape", candidates: [["port": 80]]),
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: sourcedApp, unique: "metadata.name",
                field: "spec.telemetry.probe", candidates: [["port": 80]]),
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: appDocument, unique: "metadata.name",
                field: "spec.objectives",
                candidates: [
                    objectives(latency), objectives(latency.merging(["quantile": 0.5]) { $1 }),
                    objectives(latency.merging(["quantile": 1]) { $1 }), objectives(latency.merging(["quantile": 0]) { $1 }),
                    objectives(latency.merging(["target": 0]) { $1 }), objectives(latency.merging(["target": -1]) { $1 }),
                    objectives(latency.merging(["goal": 0.999]) { $1 }), objectives(latency.merging(["goal": 1]) { $1 }),
                    objectives(latency.merging(["goal": 0]) { $1 }),
                    objectives(latency.merging(["kind": "response-time"]) { $1 }),
                    objectives(latency.merging(["kind": "fast"]) { $1 }), objectives(latency.merging(["name": "Latency"]) { $1 }),
                    objectives(latency.merging(["colour": "red"]) { $1 }), objectives(latency.filter { $0.key != "name" }),
                    objectives(
                        latency.merging(["burnRates": [["long": "1h", "short": "5m", "factor": 14.4]]]) { $1 }),
                    objectives(latency.merging(["burnRates": [["long": "1h", "short": "5m", "factor": 0]]]) { $1 }),
                    objectives(latency.merging(["burnRates": [["long": "1h", "short": "5m"]]]) { $1 }),
                    objectives(["name": "rate", "sli": "requests_total", "min": 5]),
                    objectives(["name": "rate", "sli": "requests_total", "min": 0]),
                    objectives(["name": "rate", "sli": "requests_total", "min": "5"]),
                    objectives(["name": "depth", "sli": "queue", "max": 8]),
                    objectives(["name": "depth", "sli": "queue", "max": -8]),
                    objectives(["name": "ok", "good": "requests_total{code=\"200\"}", "total": "requests_total", "min": 0.999]),
                    objectives(["name": "ok", "good": "requests_total{code=\"200\"}", "total": "requests_total", "min": 1]),
                    objectives(["name": "ok", "good": "requests_total{code=\"200\"}", "total": "requests_total", "min": 1.5]),
                ]),
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: appDocument, unique: "metadata.name",
                field: "spec.vms",
                candidates: [
                    [["name": "app-vm-1", "image": "tiny"]], [["name": "app-vm-2", "image": "web", "memory": "96MiB"]],
                    [["name": "app-vm-3", "image": "tiny", "memory": "64MiB"]], [["image": "tiny"]], [["name": "app-vm-4"]],
                    [["name": "App", "image": "tiny"]], [["name": "app-vm-5", "image": "tiny", "colour": "red"]],
                ]),
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: appDocument, unique: "metadata.name", field: "spec.colour",
                candidates: ["red"]),
        ]
        return applicationCases + sloCases + [
            Case(route: "/v1/vms", schema: "VMCreate", base: vm, unique: nil, field: "name", candidates: names),
            Case(route: "/v1/vms", schema: "VMCreate", base: vm, unique: "name", field: "host", candidates: names),
            Case(route: "/v1/vms", schema: "VMCreate", base: vm, unique: "name", field: "app", candidates: names),
            Case(route: "/v1/vms", schema: "VMCreate", base: vm, unique: "name", field: "image", candidates: images),
            Case(route: "/v1/vms", schema: "VMCreate", base: vm, unique: "name", field: "cpus", candidates: cpus),
            Case(route: "/v1/vms", schema: "VMCreate", base: vm, unique: "name", field: "memory", candidates: sizes),
            Case(route: "/v1/vms", schema: "VMCreate", base: webVM, unique: "name", field: "memory", candidates: sizes),
            Case(route: "/v1/vms", schema: "VMCreate", base: vm, unique: "name", field: "disk", candidates: sizes),
            Case(
                route: "/v1/contexts", schema: "ContextOpen", base: context, unique: "name", field: "memory", candidates: sizes),
            Case(
                route: "/v1/contexts", schema: "ContextOpen", base: tinyContext, unique: "name", field: "memory",
                candidates: sizes),
            Case(route: "/v1/contexts", schema: "ContextOpen", base: context, unique: nil, field: "name", candidates: names),
            Case(route: "/v1/contexts", schema: "ContextOpen", base: context, unique: "name", field: "host", candidates: names),
            Case(
                route: "/v1/contexts", schema: "ContextOpen", base: context, unique: "name", field: "network", candidates: names),
            Case(route: "/v1/contexts", schema: "ContextOpen", base: context, unique: "name", field: "image", candidates: images),
            Case(route: "/v1/contexts", schema: "ContextOpen", base: context, unique: "name", field: "cpus", candidates: cpus),
            Case(
                route: "/v1/contexts", schema: "ContextOpen", base: context, unique: "name", field: "kind",
                candidates: ["disposable", "persistent", "temporary", ""].map(JSONValue.string)),
            Case(
                route: "/v1/contexts", schema: "ContextOpen", base: context, unique: "name", field: "display",
                candidates: ["vnc", "none", "spice"].map(JSONValue.string)),
            // Manifests as JSON (a document each): VirtualMachine and Context documents.
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: vmDocument, unique: nil, field: "metadata.name",
                candidates: names),
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: vmDocument, unique: "metadata.name", field: "spec.memory",
                candidates: sizes),
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: vmDocument, unique: "metadata.name", field: "spec.disk",
                candidates: sizes),
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: vmDocument, unique: "metadata.name", field: "spec.cpus",
                candidates: cpus),
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: vmDocument, unique: "metadata.name", field: "spec.image",
                candidates: images),
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: vmDocument, unique: "metadata.name", field: "spec.host",
                candidates: names),
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: vmDocument, unique: "metadata.name",
                field: "spec.restartPolicy",
                candidates: ["never", "always", "sometimes", ""].map(JSONValue.string)),
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: vmDocument, unique: "metadata.name", field: "spec.name",
                candidates: [.string("x")]),
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: vmDocument, unique: "metadata.name", field: "apiVersion",
                candidates: ["vireo/v1", "vireo/v2", ""].map(JSONValue.string)),
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: vmDocument, unique: "metadata.name", field: "kind",
                candidates: ["VirtualMachine", "Machine", "Service", ""].map(JSONValue.string)),
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: contextDocument, unique: nil, field: "metadata.name",
                candidates: names),
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: contextDocument, unique: "metadata.name",
                field: "spec.memory", candidates: sizes),
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: contextDocument, unique: "metadata.name",
                field: "spec.kind",
                candidates: ["disposable", "persistent", "temporary", ""].map(JSONValue.string)),
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: contextDocument, unique: "metadata.name",
                field: "spec.wait",
                candidates: [.bool(true)]),
            Case(
                route: "/v1/tokens", schema: "TokenRequest", base: token, unique: nil, field: "name",
                candidates: names + ["admin", "join", "loopback"].map(JSONValue.string)),
            Case(
                route: "/v1/tokens", schema: "TokenRequest", base: token, unique: "name", field: "role",
                candidates: ["admin", "operator", "viewer", "agent", "root", ""].map(JSONValue.string)),
        ]
    }

    /// What the SLO cases apply to: an application with a counter, a histogram and a gauge.
    static let sloApplication: JSONValue = [
        "apiVersion": "vireo/v1", "kind": "Application", "metadata": ["name": "shop"],
        "spec": [
            "telemetry": [
                "metrics": [
                    ["name": "requests_total", "type": "counter"], ["name": "latency_seconds", "type": "histogram"],
                    ["name": "queue", "type": "gauge"],
                ]
            ]
        ],
    ]

    /// SLO documents (vireo/v1 and OpenSLO's): each constrained field of the spec, its indicator,
    /// objectives, time window and alert policies, on the application above. (What only the
    /// manifest as a whole can say, such as a reference to an SLI or DataSource, or which fields a
    /// threshold objective needs, is the server's alone: the schema says it in words.)
    static var sloCases: [Case] {
        func source(_ query: JSONValue, type: JSONValue? = nil) -> JSONValue {
            var source: [String: JSONValue] = ["spec": ["query": query]]
            if let type { source["type"] = type }
            return ["metricSource": .object(source)]
        }
        let good = source("requests_total{code=\"200\"}", type: "Prometheus")
        let total = source("requests_total")
        let ratio: JSONValue = ["spec": ["ratioMetric": ["good": good, "total": total]]]
        let queue: JSONValue = ["spec": ["thresholdMetric": source("queue")]]
        let ratioSLO: [String: JSONValue] = [
            "apiVersion": "openslo/v1", "kind": "SLO", "metadata": ["name": "x"],
            "spec": ["service": "shop", "indicator": ratio, "objectives": [["target": 0.99]]],
        ]
        let thresholdSLO: [String: JSONValue] = [
            "apiVersion": "vireo/v1", "kind": "SLO", "metadata": ["name": "x"],
            "spec": ["service": "shop", "indicator": queue, "objectives": [["op": "lte", "value": 8, "target": 0.99]]],
        ]
        let condition: JSONValue = [
            "kind": "AlertCondition", "metadata": ["name": "fast"],
            "spec": [
                "severity": "page",
                "condition": ["kind": "burnrate", "op": "gte", "threshold": 2, "lookbackWindow": "1h", "alertAfter": "5m"],
            ],
        ]
        let target: JSONValue = [
            "kind": "AlertNotificationTarget", "metadata": ["name": "pager"], "spec": ["target": "http://127.0.0.1:9/hook"],
        ]
        func policy(
            conditions: JSONValue = [condition], targets: JSONValue = [target], _ more: [String: JSONValue] = [:],
            outer: [String: JSONValue] = [:]
        ) -> JSONValue {
            var spec: [String: JSONValue] = ["conditions": conditions, "notificationTargets": targets]
            spec.merge(more) { $1 }
            var policy: [String: JSONValue] = ["kind": "AlertPolicy", "metadata": ["name": "burn"], "spec": .object(spec)]
            policy.merge(outer) { $1 }
            return [.object(policy)]
        }
        func withCondition(_ change: [String: JSONValue]) -> JSONValue {
            let rule = (condition["spec"]?["condition"]?.objectValue ?? [:]).merging(change) { $1 }.filter { $0.value != .null }
            return [condition.setting(.object(rule), at: "spec.condition")]
        }
        func objective(_ fields: [String: JSONValue]) -> JSONValue { [.object(fields)] }
        return [
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: ratioSLO, unique: nil, field: "metadata.name",
                candidates: Self.names.map(JSONValue.string)),
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: ratioSLO, unique: nil, field: "spec.service",
                candidates: ["shop", "Shop", "", "-a", 1]),
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: ratioSLO, unique: nil, field: "spec.budgetingMethod",
                candidates: ["Occurrences", "Timeslices", "RatioTimeslices", "occurrences", "", 1]),
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: thresholdSLO, unique: nil, field: "spec.budgetingMethod",
                candidates: ["Occurrences", "Timeslices"]),
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: ratioSLO, unique: nil, field: "spec.timeWindow",
                candidates: [
                    [["duration": "28d"]], [["duration": "1M", "isRolling": false]], [["duration": "1Q"]], [["duration": "1.5Y"]],
                    [["duration": "1w2d"]], [["duration": "86400"]], [["duration": "7d", "isRolling": "yes"]], [],
                    [["duration": "7d"], ["duration": "1d"]], [["isRolling": true]], [["duration": "0d"]], [["duration": "0M"]],
                    [["duration": "0.0s"]], [["duration": "1X"]], [["duration": ".5M"]], [["duration": "+1M"]],
                    [["duration": "1e3"]], [["duration": "infM"]], [["duration": 86_400]],
                    [["duration": "7d", "calendar": ["startTime": "2026-01-01 00:00:00", "timeZone": "UTC"]]],
                    [["duration": "7d", "calendar": ["colour": "red"]]], [["duration": "7d", "calendar": "UTC"]],
                    [["duration": "7d", "colour": "red"]], "7d",
                ]),
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: ratioSLO, unique: nil, field: "spec.objectives",
                candidates: [
                    objective(["target": 0.99]), objective(["target": 1]), objective(["target": 0]),
                    objective(["targetPercent": 99.9]), objective(["targetPercent": 100]), objective(["targetPercent": 0]),
                    objective(["target": 0.9, "targetPercent": 90]), objective([:]), objective(["target": "0.99"]),
                    objective(["target": 0.99, "displayName": "Nines"]), objective(["target": 0.99, "displayName": 5]),
                    objective(["target": 0.99, "timeSliceWindow": "5m"]), objective(["target": 0.99, "timeSliceWindow": "5x"]),
                    objective(["target": 0.99, "timeSliceTarget": 1]), objective(["target": 0.99, "timeSliceTarget": 0]),
                    objective(["target": 0.99, "timeSliceTarget": 1.5]), objective(["target": 0.99, "op": "lte", "value": 5]),
                    objective(["target": 0.99, "op": "eq"]), objective(["target": 0.99, "value": "5"]),
                    objective(["target": 0.99, "colour": "red"]), [], "x",
                    objective(["target": 0.99, "indicatorRef": "x", "indicator": ratio]),
                    objective(["target": 0.99, "indicator": queue, "op": "lte", "value": 3]),
                    objective(["target": 0.99, "indicatorRef": "Not_A_Name"]),
                ]),
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: thresholdSLO, unique: nil, field: "spec.objectives",
                candidates: [
                    objective(["op": "lt", "value": 8, "target": 0.9]),
                    objective(["op": "lte", "value": 8.5, "targetPercent": 95]),
                    objective(["op": "lte", "value": "8", "target": 0.9]), objective(["op": "le", "value": 8, "target": 0.9]),
                ]),
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: ratioSLO, unique: nil, field: "spec.indicator",
                candidates: [
                    ratio, ["spec": ["ratioMetric": ["good": good, "total": total, "counter": true]]],
                    ["spec": ["ratioMetric": ["good": good, "total": total, "counter": "yes"]]],
                    ["spec": ["ratioMetric": ["good": good, "bad": good, "total": total]]],
                    ["spec": ["ratioMetric": ["total": total]]], ["spec": ["ratioMetric": ["good": good]]],
                    ["spec": ["ratioMetric": ["good": good, "total": total, "rawType": "success"]]],
                    ["spec": ["ratioMetric": ["raw": good, "total": total]]],
                    ["spec": ["ratioMetric": ["good": good, "total": total], "thresholdMetric": source("queue")]],
                    ["spec": [:]], ["spec": ["description": "served", "ratioMetric": ["good": good, "total": total]]],
                    ["spec": ["description": 1, "ratioMetric": ["good": good, "total": total]]],
                    ["metadata": ["name": "served"], "spec": ["ratioMetric": ["good": good, "total": total]]],
                    ["metadata": "served", "spec": ["ratioMetric": ["good": good, "total": total]]],
                    ["ratioMetric": ["good": good, "total": total]], "served",
                    [
                        "spec": [
                            "ratioMetric": ["good": source("requests_total{code=\"200\"}", type: "prometheus"), "total": total]
                        ]
                    ],
                    [
                        "spec": [
                            "ratioMetric": ["good": source("requests_total{code=\"200\"}", type: "PROMETHEUS"), "total": total]
                        ]
                    ],
                    ["spec": ["ratioMetric": ["good": source("requests_total{code=\"200\"}", type: "Datadog"), "total": total]]],
                    ["spec": ["ratioMetric": ["good": source("requests_total{code=\"200\"}", type: 5), "total": total]]],
                    ["spec": ["ratioMetric": ["good": source(""), "total": total]]],
                    ["spec": ["ratioMetric": ["good": source(5), "total": total]]],
                    ["spec": ["ratioMetric": ["good": ["metricSource": ["spec": [:]]], "total": total]]],
                    ["spec": ["ratioMetric": ["good": ["metricSource": ["type": "Prometheus"]], "total": total]]],
                    ["spec": ["ratioMetric": ["good": [:], "total": total]]],
                    [
                        "spec": [
                            "ratioMetric": [
                                "good": ["metricSource": ["spec": ["query": "requests_total{code=\"200\"}", "note": "kept"]]],
                                "total": total,
                            ]
                        ]
                    ],
                    [
                        "spec": [
                            "ratioMetric": [
                                "good": ["metricSource": ["spec": ["query": "requests_total"], "colour": 1]], "total": total,
                            ]
                        ]
                    ],
                    [
                        "spec": [
                            "ratioMetric": [
                                "good": ["metricSource": ["metricSourceRef": "Not_A_Name", "spec": ["query": "x"]]],
                                "total": total,
                            ]
                        ]
                    ],
                    ["spec": ["ratioMetric": ["good": good, "total": total, "colour": "red"]]],
                ]),
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: ratioSLO, unique: nil, field: "spec.indicatorRef",
                candidates: ["Not_A_Name", ""]),
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: ratioSLO, unique: nil, field: "spec.description",
                candidates: ["the shop's availability", 1]),
            Case(
                route: "/v1/apply", schema: "ManifestDocument", base: ratioSLO, unique: nil, field: "spec.alertPolicies",
                candidates: [
                    policy(), policy(outer: ["apiVersion": "openslo/v1"]), policy(outer: ["apiVersion": "openslo/v2"]),
                    policy(outer: ["kind": "AlertCondition"]), policy(outer: ["metadata": ["name": "Burn"]]),
                    policy(outer: ["metadata": ["name": "burn", "colour": 1]]), [["alertPolicyRef": "Not_A_Name"]],
                    [["alertPolicyRef": "burn", "kind": "AlertPolicy"]], policy(conditions: []),
                    policy(conditions: [condition, condition]), policy(targets: []),
                    policy(["alertWhenNoData": true, "alertWhenResolved": false, "alertWhenBreaching": true]),
                    policy(["alertWhenNoData": "yes"]), policy(["description": 5]), policy(["colour": "red"]),
                    policy(conditions: withCondition(["kind": "BurnRate"])),
                    policy(conditions: withCondition(["kind": "threshold"])),
                    policy(conditions: withCondition(["op": "eq"])), policy(conditions: withCondition(["threshold": -1])),
                    policy(conditions: withCondition(["threshold": "2"])), policy(conditions: withCondition(["threshold": 0])),
                    policy(conditions: withCondition(["lookbackWindow": "5x"])),
                    policy(conditions: withCondition(["lookbackWindow": .null])),
                    policy(conditions: withCondition(["alertAfter": 300])), policy(conditions: withCondition(["colour": "red"])),
                    policy(conditions: [condition.setting(.null, at: "spec.severity")]),
                    policy(conditions: [["conditionRef": "Not_A_Name"]]),
                    policy(targets: [target.setting("https://alerts.example:9095/hook?team=shop", at: "spec.target")]),
                    policy(targets: [target.setting("ftp://alerts.example/hook", at: "spec.target")]),
                    policy(targets: [target.setting("http://", at: "spec.target")]),
                    policy(targets: [target.setting("alerts.example", at: "spec.target")]),
                    policy(targets: [target.setting(5, at: "spec.target")]), "burn",
                ]),
        ]
    }

    @Test(
        "each constrained field of VM create, context open, token create and VirtualMachine, Context, Application, SLO and OpenSLO documents: the schema's verdict is the server's"
    )
    func schemaIsTheServersRule() async throws {
        let openAPI = try OpenAPITests()
        let checker = ResponseChecker(openAPI: openAPI)
        let plane = try await TestControlPlane.make()
        let tally = Mutex((mismatches: [String](), checked: 0, refusedBySchema: 0))
        try await plane.test { client in
            let setup = try await client.request(
                .post, "/v1/apply", body: String(decoding: try VireoJSON.encoder().encode(Self.sloApplication), as: UTF8.self))
            #expect(setup.status == 200, "\(setup.body)")
            var serial = 0
            for item in Self.cases {
                let schema = try #require(openAPI.document["components"]?["schemas"]?[item.schema])
                for candidate in item.candidates {
                    serial += 1
                    var body = JSONValue.object(item.base)
                    if let unique = item.unique { body = body.setting(.string("u\(serial)"), at: unique) }
                    body = body.setting(candidate, at: item.field)
                    let problems = checker.validate(body, against: schema, at: "$")
                    let text = String(decoding: try VireoJSON.encoder().encode(body), as: UTF8.self)
                    let response = try await client.request(.post, item.route, body: text)
                    let what = "\(item.route) \(item.field)=\(candidate)"
                    var mismatch: String?
                    if problems.isEmpty {
                        // Valid, it may still not be carried out now (no host can run a
                        // context here: 503), but never as invalid, nor as a crash.
                        if response.status == 400 || response.status == 500 {
                            mismatch = "\(what): the schema allows it, the server answered \(response.status): \(response.body)"
                        }
                    } else if response.status != 400 {
                        mismatch = "\(what): the schema refuses it (\(problems)), the server answered \(response.status)"
                    } else if !response.body.contains(item.field) {
                        mismatch = "\(what): refused without naming the field: \(response.body)"
                    }
                    tally.withLock {
                        $0.checked += 1
                        if !problems.isEmpty { $0.refusedBySchema += 1 }
                        if let mismatch { $0.mismatches.append(mismatch) }
                    }
                }
            }
        }
        let (mismatches, checked, refusedBySchema) = tally.withLock { $0 }
        #expect(mismatches.isEmpty, "\(mismatches.joined(separator: "\n"))")
        // Both verdicts were exercised: the comparison has teeth.
        #expect(checked > 100 && refusedBySchema > 40 && checked - refusedBySchema > 40, "\(checked), \(refusedBySchema)")
    }

    @Test("the images the schemas list are the catalogue's")
    func imagesAreTheCatalogues() throws {
        let schemas = try #require(try OpenAPITests().document["components"]?["schemas"])
        let catalogue = JSONValue.array(ImageCatalogue.builtIn.map { .string($0.name) })
        #expect(schemas["VMCreate"]?["properties"]?["image"]?["enum"] == catalogue)
        #expect(schemas["ContextOpen"]?["properties"]?["image"]?["enum"] == catalogue)
    }

    @Test("the memory each image needs, as the schemas state it, is the catalogue's")
    func imageMinimumsAreTheCatalogues() throws {
        let schemas = try #require(try OpenAPITests().document["components"]?["schemas"])
        func minimumMiB(_ reference: JSONValue?) -> Int? {
            guard case .string(let ref)? = reference?["$ref"], let name = ref.split(separator: "/").last,
                case .number(let bytes)? = schemas[String(name)]?["oneOf"]?[1]?["minimum"]
            else { return nil }
            return Int(bytes) >> 20
        }
        let tiny = try #require(ImageCatalogue.builtIn.first { $0.name == "tiny" }).minimumMemoryMiB
        let web = try #require(ImageCatalogue.builtIn.first { $0.name == "web" }).minimumMemoryMiB
        #expect(ImageCatalogue.builtIn.count == 2, "the schemas name tiny and web; another image needs its own rule")
        #expect(minimumMiB(schemas["VMCreate"]?["properties"]?["memory"]?["allOf"]?[0]) == tiny)
        #expect(minimumMiB(schemas["VMCreate"]?["allOf"]?[0]?["then"]?["properties"]?["memory"]) == web)
        #expect(minimumMiB(schemas["ContextOpen"]?["allOf"]?[0]?["else"]?["properties"]?["memory"]) == web)
        #expect(minimumMiB(schemas["ContextOpen"]?["properties"]?["memory"]?["allOf"]?[0]) == tiny)
        #expect(minimumMiB(schemas["VMCreate"]?["properties"]?["disk"]?["allOf"]?[0]) == ImageCatalogue.virtualDiskMiB)
    }
}

extension JSONValue {
    /// This object with `value` at `path` (`spec.memory`: `memory` in `spec`), made as needed.
    fileprivate func setting(_ value: JSONValue, at path: String) -> JSONValue {
        let keys = path.split(separator: ".", maxSplits: 1).map(String.init)
        var object = objectValue ?? [:]
        object[keys[0]] = keys.count == 1 ? value : (object[keys[0]] ?? .object([:])).setting(value, at: keys[1])
        return .object(object)
    }

    /// The element `index` of an array; nil for other values and beyond the end.
    fileprivate subscript(index: Int) -> JSONValue? {
        if case .array(let items) = self, items.indices.contains(index) { items[index] } else { nil }
    }
}

/// Literals for the contract's JSON bodies.
extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByFloatLiteral, ExpressibleByBooleanLiteral, ExpressibleByArrayLiteral,
    ExpressibleByDictionaryLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .number(Double(value)) }
    public init(floatLiteral value: Double) { self = .number(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(Dictionary(elements, uniquingKeysWith: { _, last in last }))
    }
}
