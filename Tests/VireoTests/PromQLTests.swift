import Foundation
import Testing
import VireoAPI
import VireoModel
import VireoProcess
import VireoTelemetry

@Suite("PromQL: parsing")
struct PromQLParsingTests {
    @Test("selectors, ranges, functions and aggregations parse into their tree")
    func structure() throws {
        let expression = try PromQLExpression(
            parsing: #"sum by (job) (rate(http_requests_total{code=~"5..", path!="/metrics"}[5m]))"#)
        guard case .aggregate(.sum, let grouping, .call(.rate, let arguments)) = expression,
            case .range(let selector, let rangeMs) = arguments.first
        else {
            Issue.record("unexpected tree: \(expression)")
            return
        }
        #expect(grouping == PromQLGrouping(without: false, labels: ["job"]))
        #expect(rangeMs == 300_000)
        #expect(selector.name == "http_requests_total")
        #expect(selector.matchers.map(\.description) == [#"code=~"5..""#, #"path!="/metrics""#])

        let quantile = try PromQLExpression(parsing: "histogram_quantile(0.99, sum by (le) (rate(x_bucket[1m])))")
        #expect(quantile.description == "histogram_quantile(0.99, sum by (le) (rate(x_bucket[1m])))")
        // A grouping may follow the argument, and durations may combine units.
        let after = try PromQLExpression(parsing: "max(increase(x[1h30m])) without (instance, pod)")
        #expect(after.description == "max without (instance, pod) (increase(x[1h30m]))")
        #expect(try PromQLExpression(parsing: "x[250ms]") == .range(PromQLSelector(name: "x"), rangeMs: 250))
        #expect(
            try PromQLExpression(parsing: "x{a='b'}")
                == .selector(try PromQLSelector(name: "x", matchers: [.init(label: "a", kind: .equal, value: "b")])))
    }

    @Test(
        "arithmetic binds as in PromQL: ^ before unary minus before * / % before + -, ^ to the right",
        arguments: [
            ("1 + 2 * 3", 7.0), ("(1 + 2) * 3", 9), ("2 ^ 3 ^ 2", 512), ("-2 ^ 2", -4), ("1 - 2 - 3", -4),
            ("10 % 3", 1), ("8 / 2 / 2", 2), ("-(3 - 5)", 2), ("1e3 / 4", 250), ("+Inf", .infinity),
        ])
    func arithmetic(text: String, value: Double) throws {
        let result = try promEvaluate(text, RecentSamples())
        #expect(result == .scalar(value), "\(text)")
    }

    @Test(
        "what is not PromQL, or not in the subset, is refused with the column and what was expected",
        arguments: [
            ("rate(x)", 6, "needs a range vector"),
            ("sum(rate(x[5m])", 16, "expected ')'"),
            (#"x{code=~"("}"#, 3, "not a regular expression"),
            ("label_replace(x)", 1, "function 'label_replace' is not supported"),
            ("x offset 5m", 3, "'offset' is not supported"),
            ("x[5q]", 3, "'5q' is neither a number nor a duration"),
            ("x > 1", 3, "comparison operators"),
            ("x + on(a) y", 5, "'on' is not supported"),
            ("", 1, "the expression is empty"),
            (#"x{code="5""#, 11, "expected ',' or '}'"),
            (#"{code="5"}"#, 1, "needs a metric name"),
            ("rate(x[5m], y[5m])", 1, "takes one argument"),
            ("histogram_quantile(0.9)", 1, "takes two arguments"),
            ("x y", 3, "expected an operator or the end"),
            (#"x{code="5"#, 8, "no closing"),
            ("(x)[5m]", 4, "subqueries are not supported"),
            ("x[5m:1m]", 2, "subqueries are not supported"),
            ("sum by (a (x)", 11, "expected ',' or ')'"),
            ("x $ 2", 3, "unexpected character '$'"),
        ])
    func refused(text: String, column: Int, message: String) {
        let error = #expect(throws: PromQLError.self) { _ = try PromQLExpression(parsing: text) }
        #expect(error?.column == column, "\(text): \(String(describing: error))")
        #expect(error?.message.contains(message) == true, "\(text): \(String(describing: error))")
        #expect(error?.description.hasPrefix("at column \(column): ") == true)
    }
}

@Suite("PromQL: evaluation over scraped samples")
struct PromQLEvaluationTests {
    /// `http_requests_total` of two instances, every 15 s for a minute ending at 60 s: instance a
    /// grows by 1/s, instance b by 2/s; b's 5xx by 0.5/s.
    static func requests() -> RecentSamples {
        var samples = RecentSamples()
        for step in 0...4 {
            let t = Int64(step) * 15_000
            let s = Double(step) * 15
            samples.append(name: "http_requests_total", labels: promLabels(["instance": "a", "code": "200"]), at: t, value: s)
            samples.append(
                name: "http_requests_total", labels: promLabels(["instance": "b", "code": "200"]), at: t, value: 2 * s)
            samples.append(
                name: "http_requests_total", labels: promLabels(["instance": "b", "code": "503"]), at: t, value: s / 2)
        }
        return samples
    }

    @Test("an instant selector takes each series' last sample within 5 minutes; matchers = != =~ !~")
    func selectors() throws {
        var samples = RecentSamples()
        samples.append(name: "up", labels: promLabels(["job": "web"]), at: 0, value: 1)
        samples.append(name: "up", labels: promLabels(["job": "db"]), at: 200_000, value: 0)
        samples.append(name: "up", labels: promLabels(["job": "api"]), at: 290_000, value: 1)
        // At 320 s the web sample (320 s old) is stale; db and api are not.
        #expect(try promValues("up", samples, at: 320_000) == ["db": 0, "api": 1])
        #expect(try promValues(#"up{job!="db"}"#, samples, at: 320_000) == ["api": 1])
        #expect(try promValues(#"up{job=~"d.|ap."}"#, samples, at: 320_000) == ["db": 0, "api": 1])
        // Anchored: "a" does not match "api".
        #expect(try promValues(#"up{job=~"a"}"#, samples, at: 320_000).isEmpty)
        #expect(try promValues(#"up{job!~"db"}"#, samples, at: 320_000) == ["api": 1])
        // A missing label matches as empty.
        #expect(try promValues(#"up{zone=""}"#, samples, at: 320_000).count == 2)
        #expect(try promValues("down", samples, at: 320_000).isEmpty)
    }

    @Test("rate, increase and irate of counters, with Prometheus's extrapolation and counter resets")
    func counters() throws {
        let samples = Self.requests()
        // Samples at both ends of the range: no extrapolation.
        #expect(
            try promValues(#"rate(http_requests_total{code="200"}[1m])"#, samples, at: 60_000, by: "instance") == [
                "a": 1, "b": 2,
            ])
        #expect(
            try promValues(#"increase(http_requests_total{code="200"}[1m])"#, samples, at: 60_000, by: "instance") == [
                "a": 60, "b": 120,
            ])

        // Samples 10 s after the range's start and 5 s before its end: extrapolated to both ends
        // (each gap is under 110 % of the 15 s interval), and not below the counter's zero.
        var offset = RecentSamples()
        for (t, v) in [(10, 10.0), (25, 25), (40, 40), (55, 55)] {
            offset.append(name: "c", labels: Labels(), at: Int64(t) * 1000, value: v)
        }
        #expect(try promScalar("increase(c[1m])", offset, at: 60_000) == 60)
        #expect(abs(try promScalar("rate(c[1m])", offset, at: 60_000) - 1) < 1e-12)
        // A counter at 40 in its first sample, growing 1/s: at that pace it was zero 40 s
        // earlier, beyond the range's start, so it is extrapolated to both ends (10 s and 5 s).
        var late = RecentSamples()
        for (t, v) in [(10, 40.0), (25, 55)] { late.append(name: "c", labels: Labels(), at: Int64(t) * 1000, value: v) }
        #expect(try promScalar("increase(c[30s])", late, at: 30_000) == 15 * (15 + 10 + 5) / 15)
        // At 5 in its first sample it was zero 5 s earlier: extrapolated back 5 s only, not 10.
        var fresh = RecentSamples()
        for (t, v) in [(10, 5.0), (25, 20)] { fresh.append(name: "c", labels: Labels(), at: Int64(t) * 1000, value: v) }
        #expect(try promScalar("increase(c[30s])", fresh, at: 30_000) == 15 * (15 + 5 + 5) / 15)
        // Gaps beyond 110 % of the interval are extrapolated by half an interval only.
        var sparse = RecentSamples()
        for (t, v) in [(30, 30.0), (40, 40)] { sparse.append(name: "c", labels: Labels(), at: Int64(t) * 1000, value: v) }
        #expect(try promScalar("increase(c[1m])", sparse, at: 60_000) == 10 * (10 + 5 + 5) / 10)

        // A reset: 10, 20, then 5 and 15 — growth 10 + 5 + 10.
        var reset = RecentSamples()
        for (t, v) in [(0, 10.0), (20, 20), (40, 5), (60, 15)] {
            reset.append(name: "c", labels: Labels(), at: Int64(t) * 1000, value: v)
        }
        #expect(try promScalar("increase(c[1m])", reset, at: 60_000) == 25)
        #expect(try promScalar("irate(c[1m])", reset, at: 60_000) == 0.5)
        reset.append(name: "c", labels: Labels(), at: 70_000, value: 3)
        #expect(try promScalar("irate(c[1m])", reset, at: 70_000) == 0.3)
        // One sample in the range: no rate.
        #expect(try promValues("rate(c[5s])", reset, at: 70_000).isEmpty)
    }

    @Test("sum, avg, min, max and count, whole or by/without labels")
    func aggregations() throws {
        let samples = Self.requests()
        let rate = "rate(http_requests_total[1m])"
        #expect(try promScalar("sum(\(rate))", samples, at: 60_000) == 3.5)
        #expect(try promValues("sum by (instance) (\(rate))", samples, at: 60_000, by: "instance") == ["a": 1, "b": 2.5])
        #expect(try promValues("sum without (code) (\(rate))", samples, at: 60_000, by: "instance") == ["a": 1, "b": 2.5])
        #expect(try promValues("max by (code) (\(rate))", samples, at: 60_000, by: "code") == ["200": 2, "503": 0.5])
        #expect(try promValues("min by (code) (\(rate))", samples, at: 60_000, by: "code") == ["200": 1, "503": 0.5])
        #expect(try promValues("avg by (code) (\(rate))", samples, at: 60_000, by: "code") == ["200": 1.5, "503": 0.5])
        #expect(try promValues("count by (instance) (\(rate))", samples, at: 60_000, by: "instance") == ["a": 1, "b": 2])
        #expect(try promValues("sum(nothing)", samples, at: 60_000).isEmpty)
    }

    @Test("arithmetic between vectors matches series on their labels; with a scalar it applies to each")
    func vectorArithmetic() throws {
        let samples = Self.requests()
        // The error ratio per instance: 5xx over all.
        let ratio =
            #"sum by (instance) (rate(http_requests_total{code=~"5.."}[1m])) / sum by (instance) (rate(http_requests_total[1m]))"#
        #expect(try promValues(ratio, samples, at: 60_000, by: "instance") == ["b": 0.2])
        #expect(try promValues("1 - \(ratio)", samples, at: 60_000, by: "instance") == ["b": 0.8])
        #expect(
            try promValues(#"http_requests_total{code="200"} * 2"#, samples, at: 60_000, by: "instance") == ["a": 120, "b": 240])
        #expect(try promValues(#"-http_requests_total{instance="a"}"#, samples, at: 60_000, by: "instance") == ["a": -60])
        var twins = RecentSamples()
        twins.append(name: "x", labels: promLabels(["a": "1", "b": "1"]), at: 0, value: 1)
        twins.append(name: "x", labels: promLabels(["a": "1", "b": "2"]), at: 0, value: 3)
        twins.append(name: "y", labels: promLabels(["a": "1"]), at: 0, value: 8)
        // Series without a partner on the other side drop out.
        #expect(try promValues("sum without (b) (x) / y", twins, at: 0, by: "a") == ["1": 0.5])
        #expect(try promValues("x / y", twins, at: 0, by: "a").isEmpty)
        let scalar = #expect(throws: PromQLError.self) { _ = try promEvaluate("sum(1)", twins, at: 0) }
        #expect(scalar?.message.contains("needs a vector") == true)
        let range = #expect(throws: PromQLError.self) { _ = try promEvaluate("x[1m]", twins, at: 0) }
        #expect(range?.message.contains("range vector") == true)
    }

    @Test("histogram_quantile interpolates within the bucket, per histogram; +Inf and empty histograms as Prometheus")
    func quantiles() throws {
        var samples = RecentSamples()
        for (le, count) in [("0.1", 10.0), ("0.5", 30), ("1", 40), ("+Inf", 40)] {
            samples.append(name: "latency_bucket", labels: promLabels(["le": le, "path": "/"]), at: 0, value: count)
        }
        for (le, count) in [("0.1", 10.0), ("+Inf", 20)] {
            samples.append(name: "latency_bucket", labels: promLabels(["le": le, "path": "/slow"]), at: 0, value: count)
        }
        for (le, count) in [("0.1", 0.0), ("+Inf", 0)] {
            samples.append(name: "latency_bucket", labels: promLabels(["le": le, "path": "/idle"]), at: 0, value: count)
        }
        let median = try promValues("histogram_quantile(0.5, latency_bucket)", samples, at: 0, by: "path")
        #expect(median["/"].map { abs($0 - 0.3) < 1e-12 } == true, "\(median)")
        // The rank falls in +Inf: the last finite bound.
        #expect(median["/slow"] == 0.1)
        #expect(median["/idle"]?.isNaN == true)
        let p99 = try promValues("histogram_quantile(0.99, latency_bucket)", samples, at: 0, by: "path")
        #expect(p99["/"].map { abs($0 - 0.98) < 1e-12 } == true, "\(p99)")
        #expect(try promValues("histogram_quantile(1.5, latency_bucket)", samples, at: 0, by: "path")["/"] == .infinity)
        #expect(try promValues("histogram_quantile(-1, latency_bucket)", samples, at: 0, by: "path")["/"] == -.infinity)
    }

    @Test("the p99 of two instances' request durations over the last minute, as an objective would write it")
    func quantileOfRates() throws {
        // Each instance observes 10 requests/s: a in 0-100 ms, b in 100-500 ms (its share of 500 ms
        // requests growing), over one minute.
        var samples = RecentSamples()
        for step in 0...4 {
            let t = Int64(step) * 15_000
            let n = Double(step) * 150
            for (instance, buckets) in [
                ("a", [("0.1", n), ("0.5", n), ("+Inf", n)]),
                ("b", [("0.1", 0), ("0.5", n), ("+Inf", n)]),
            ] {
                for (le, count) in buckets {
                    samples.append(
                        name: "http_request_duration_seconds_bucket", labels: promLabels(["instance": instance, "le": le]),
                        at: t, value: count)
                }
            }
        }
        let p99 = try promScalar(
            "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[1m])))", samples, at: 60_000)
        // 20/s in all, 10/s under 0.1 and 20/s under 0.5: rank 19.8 lies 9.8/10 into (0.1, 0.5].
        #expect(abs(p99 - (0.1 + 0.4 * 0.98)) < 1e-12, "\(p99)")
        let p50 = try promScalar(
            "histogram_quantile(0.5, sum by (le) (rate(http_request_duration_seconds_bucket[1m])))", samples, at: 60_000)
        #expect(abs(p50 - 0.1) < 1e-12, "\(p50)")
    }
}

func promLabels(_ pairs: [String: String]) -> Labels {
    Labels(pairs.map { (name: $0.key, value: $0.value) })
}

func promEvaluate(_ text: String, _ samples: RecentSamples, at time: Int64 = 0) throws -> PromQLValue {
    try PromQLEvaluator(source: samples, time: time).evaluate(try PromQLExpression(parsing: text))
}

/// The vector's values keyed by the value of `label` (or of `job` by default).
func promValues(_ text: String, _ samples: RecentSamples, at time: Int64, by label: String = "job") throws -> [String: Double] {
    guard case .vector(let result) = try promEvaluate(text, samples, at: time) else {
        Issue.record("\(text) is a scalar")
        return [:]
    }
    return Dictionary(result.map { ($0.labels[label] ?? "", $0.value) }, uniquingKeysWith: { a, _ in a })
}

/// The value of a one-element vector.
func promScalar(_ text: String, _ samples: RecentSamples, at time: Int64) throws -> Double {
    guard case .vector(let result) = try promEvaluate(text, samples, at: time), result.count == 1 else {
        Issue.record("\(text) did not give one value")
        return .nan
    }
    return result[0].value
}

/// Vireo's evaluator against Prometheus's own: `promtool test rules` (Debian's `prometheus`)
/// evaluates the same expressions over the same series and must find exactly what Vireo found.
@Suite("PromQL: the same answers as Prometheus")
struct PromQLPrometheusTests {
    /// Series in promtool's notation (`start+step x count`, one sample per 15 s from 0) and the
    /// same samples for Vireo.
    static let series: [(name: String, labels: [String: String], values: [Double])] = {
        var series: [(name: String, labels: [String: String], values: [Double])] = []
        for (instance, perStep) in [("a", 15.0), ("b", 30)] {
            series.append(("http_requests_total", ["instance": instance, "code": "200"], (0...8).map { Double($0) * perStep }))
        }
        series.append(("http_requests_total", ["instance": "b", "code": "503"], (0...8).map { Double($0) * 7.5 }))
        // A counter that resets after its fourth sample.
        series.append(("restarts_total", ["instance": "a"], [3, 9, 14, 20, 2, 8, 11, 17, 30]))
        // Request durations of two instances: a fast, b spread over the buckets.
        for (instance, shares) in [("a", [0.9, 1.0, 1.0, 1.0]), ("b", [0.1, 0.5, 0.95, 1.0])] {
            for (le, share) in zip(["0.1", "0.5", "1", "+Inf"], shares) {
                series.append(
                    (
                        "http_request_duration_seconds_bucket", ["instance": instance, "le": le],
                        (0...8).map { (Double($0) * 40 * share).rounded() }
                    ))
            }
        }
        series.append(("queue_depth", ["instance": "a"], [4, 8, 2, 9, 1, 7, 3, 5, 6]))
        return series
    }()

    static let expressions = [
        "http_requests_total",
        #"rate(http_requests_total{code="200"}[1m])"#,
        "sum by (instance) (rate(http_requests_total[1m]))",
        #"sum(rate(http_requests_total{code=~"5.."}[2m])) / sum(rate(http_requests_total[2m]))"#,
        "increase(http_requests_total[45s])",
        "irate(http_requests_total[1m])",
        "rate(restarts_total[2m])",
        "increase(restarts_total[100s])",
        "irate(restarts_total[1m])",
        "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[1m])))",
        "histogram_quantile(0.5, sum by (le, instance) (rate(http_request_duration_seconds_bucket[2m])))",
        "histogram_quantile(0.9, http_request_duration_seconds_bucket)",
        "avg without (code) (rate(http_requests_total[1m]))",
        "max(queue_depth) - min(queue_depth)",
        "count by (code) (http_requests_total) * 2",
        "1 - sum without (code) (rate(http_requests_total{code!=\"200\"}[1m])) / sum without (code) (rate(http_requests_total[1m]))",
        "queue_depth % 4 + 2 ^ 3",
        "-queue_depth",
    ]

    @Test(
        "promtool evaluates each expression to exactly Vireo's samples, at several instants",
        .enabled(
            if: FileManager.default.isExecutableFile(atPath: "/usr/bin/promtool"),
            "needs promtool (Debian's prometheus package; scripts/install-deps.sh installs it)"))
    func sameAsPrometheus() async throws {
        var samples = RecentSamples()
        for s in Self.series {
            for (i, value) in s.values.enumerated() {
                samples.append(name: s.name, labels: promLabels(s.labels), at: Int64(i) * 15_000, value: value)
            }
        }
        var yaml = "tests:\n  - interval: 15s\n    input_series:\n"
        for s in Self.series {
            let text = s.name + Labels(s.labels.map { (name: $0.key, value: $0.value) }).description
            yaml += "      - series: '\(text)'\n        values: '\(s.values.map { Self.goFloat($0) }.joined(separator: " "))'\n"
        }
        yaml += "    promql_expr_test:\n"
        var compared = 0
        for expression in Self.expressions {
            for seconds in [60, 105, 120] {
                let value = try promEvaluate(expression, samples, at: Int64(seconds) * 1000)
                guard case .vector(let result) = value else {
                    Issue.record("\(expression) is a scalar")
                    continue
                }
                yaml += "      - expr: '\(expression.replacingOccurrences(of: "'", with: "''"))'\n"
                yaml += "        eval_time: \(seconds)s\n"
                yaml += result.isEmpty ? "        exp_samples: []\n" : "        exp_samples:\n"
                for sample in result {
                    let labels = (sample.name ?? "") + sample.labels.description
                    yaml += "          - labels: '\(labels)'\n            value: \(Self.goFloat(sample.value))\n"
                    compared += 1
                }
            }
        }
        let file = temporaryDirectory() + "/promql-test.yml"
        try FileManager.default.createDirectory(
            atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try yaml.write(toFile: file, atomically: true, encoding: .utf8)
        let output = String(
            decoding: try await HostTool.run("promtool", ["test", "rules", file], acceptedStatus: [0, 1]), as: UTF8.self)
        print("promtool compared \(compared) samples of \(Self.expressions.count) expressions at 3 instants")
        #expect(output.contains("SUCCESS"), "promtool disagrees:\n\(output)\n(test file: \(file))")
        #expect(compared > 50)
    }

    /// A float as Go's `strconv.ParseFloat` reads it back exactly.
    static func goFloat(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        return "\(value)"
    }
}

@Suite("PromQL objectives")
struct PromQLObjectiveTests {
    static let manifest = shopManifest.replacingOccurrences(
        of: "- { name: capacity, sli: queue_depth, max: 100 }",
        with: """
            - { name: capacity, sli: queue_depth, max: 100 }
                - { name: p99, sli: "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[10s])))", max: 0.05, window: 10s, goal: 0.9, burnRates: [{ long: 40s, short: 10s, factor: 2 }] }
                - { name: served, sli: "sum(rate(http_requests_total{code=~'2..'}[10s]))", min: 5, window: 10s }
                - { name: good, sli: "sum(rate(http_requests_total{code='200'}[10s])) / sum(rate(http_requests_total[10s]))", min: 0.99 }
            """)

    static func application(_ text: String = manifest) throws -> ApplicationSpec {
        try #require(ManifestParser.parse(text).compactMap { if case .application(let a) = $0 { a } else { nil } }.first)
    }

    @Test("an sli that is no plain selector is a PromQL expression; its kind follows from its form and min or max")
    func parsed() throws {
        let objectives = try Self.application().objectives
        #expect(objectives.map(\.language) == [nil, nil, nil, .promql, .promql, .promql])
        #expect(objectives[3].kind == .responseTime && objectives[3].target == 0.05)
        #expect(objectives[4].kind == .throughput && objectives[4].target == 5)
        #expect(objectives[5].kind == .ratio && objectives[5].target == 0.99)
        #expect(objectives[3].metric.hasPrefix("histogram_quantile(0.99"))
        // Plain selectors read as before, `rate(x)` included.
        #expect(objectives[1].metric == "http_requests_total" && objectives[1].language == nil)
    }

    @Test(
        "an expression that does not parse, or is no number or instant vector, is refused naming the field and the column",
        arguments: [
            ("sum(rate(http_requests_total[10s])", ["spec.objectives[3].sli", "at column", "expected ')'"]),
            ("sum(5)", ["spec.objectives[3].sli", "needs a vector"]),
            ("http_requests_total[10s]", ["spec.objectives[3].sli", "range vector"]),
            ("topk(1, queue_depth)", ["spec.objectives[3].sli", "'topk' is not supported"]),
            ("max(nope_seconds)", ["spec.objectives[3].sli", "nope_seconds", "unknown metric"]),
        ])
    func refused(sli: String, mentions: [String]) throws {
        let text = Self.manifest.replacingOccurrences(
            of: "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[10s])))", with: sli)
        do {
            _ = try ManifestParser.parse(text)
            Issue.record("accepted: \(sli)")
        } catch {
            #expect(error.code == .invalidArgument)
            for word in mentions { #expect(error.message.contains(word), "\(error.message)") }
        }
    }

    @Test("a PromQL objective judges the same breach as the selector one beside it, window by window")
    func judged() throws {
        let objectives = try Self.application().objectives
        var classic = try ObjectiveTracker(objectives[0])
        var query = try ObjectiveTracker(objectives[3])
        #expect(query.horizonMs == 10_000)
        var samples = RecentSamples()
        var requests = 0
        var ms: Int64 = 1_800_000_000_000
        var classicStates: [SLOState] = []
        var queryStates: [SLOState] = []
        // 60 s fast (20 ms), 30 s slow (200 ms), 30 s fast; a scrape every 2 s.
        for step in 0..<60 {
            requests += 20
            let latency = (30..<45).contains(step) ? 0.2 : 0.02
            for family in try PrometheusText.parse(shopExposition(requests: requests, latency: latency, queue: 3, at: ms)) {
                for s in family.samples {
                    samples.append(name: s.name, labels: Labels(s.labels), at: s.timestampMs!, value: s.value)
                }
            }
            ms += 2_000
            classic.evaluate(samples, now: ms, delayMs: 0)
            query.evaluate(samples, now: ms, delayMs: 0)
            classicStates.append(classic.state)
            queryStates.append(query.state)
        }
        #expect(queryStates[34...38].contains(.breaching), "\(queryStates)")
        #expect(queryStates.last == .ok)
        let a = classic.status()
        let b = query.status()
        print(
            "selector objective: \(a.goodWindows) good, \(a.badWindows) bad; PromQL: \(b.goodWindows) good, \(b.badWindows) bad")
        #expect(b.badWindows >= 2 && b.badWindows <= 4, "\(b)")
        #expect(b.goodWindows >= 6)
        #expect(b.sli.map { $0 < 0.05 } == true)
        // The 5xx-free ratio and the throughput over the same samples.
        let rate = Indicator.value(
            objectives[4], query: try PromQLExpression(parsing: objectives[4].metric), in: samples, at: ms - 2_000)
        #expect(rate.map { abs($0 - 10) < 1e-9 } == true, "\(String(describing: rate))")
        let ratio = Indicator.value(
            objectives[5], query: try PromQLExpression(parsing: objectives[5].metric), in: samples, at: ms - 2_000)
        #expect(ratio == 1)
    }
}
