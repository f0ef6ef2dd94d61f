import Foundation
import Testing
import VireoModel
import VireoTelemetry

@Suite("Prometheus text exposition")
struct PrometheusTextTests {
    static let sample = #"""
        # HELP http_requests_total The total number of HTTP requests.
        # TYPE http_requests_total counter
        http_requests_total{method="post",code="200"} 1027 1395066363000
        http_requests_total{method="post",code="400"}    3 1395066363000

        # Escaping in label values:
        msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n\"FILE.TXT\""} 1.458255915e9

        # Minimalistic line:
        metric_without_timestamp_and_labels 12.47

        # A weird metric from before the epoch:
        something_weird{problem="division by zero"} +Inf -3982045

        # A histogram, which has a pretty complex representation in the text format:
        # HELP http_request_duration_seconds A histogram of the request duration.
        # TYPE http_request_duration_seconds histogram
        http_request_duration_seconds_bucket{le="0.05"} 24054
        http_request_duration_seconds_bucket{le="0.1"} 33444
        http_request_duration_seconds_bucket{le="0.2"} 100392
        http_request_duration_seconds_bucket{le="0.5"} 129389
        http_request_duration_seconds_bucket{le="1"} 133988
        http_request_duration_seconds_bucket{le="+Inf"} 144320
        http_request_duration_seconds_sum 53423
        http_request_duration_seconds_count 144320

        # Finally a summary, which has a complex representation, too:
        # HELP rpc_duration_seconds A summary of the RPC duration in seconds.
        # TYPE rpc_duration_seconds summary
        rpc_duration_seconds{quantile="0.01"} 3102
        rpc_duration_seconds{quantile="0.5"} 4773
        rpc_duration_seconds{quantile="0.99"} 76656
        rpc_duration_seconds_sum 1.7560473e+07
        rpc_duration_seconds_count 2693
        """#

    @Test("the format's reference example: types, help, labels, escapes, timestamps, ±Inf")
    func referenceExample() throws {
        let families = try PrometheusText.parse(Self.sample)
        try #require(
            families.map(\.name) == [
                "http_requests_total", "msdos_file_access_time_seconds", "metric_without_timestamp_and_labels",
                "something_weird", "http_request_duration_seconds", "rpc_duration_seconds",
            ])
        let requests = families[0]
        #expect(requests.type == .counter)
        #expect(requests.help == "The total number of HTTP requests.")
        #expect(requests.samples.count == 2)
        #expect(requests.samples[1].value == 3)
        #expect(requests.samples[1].label("code") == "400")
        #expect(requests.samples[1].timestampMs == 1_395_066_363_000)
        #expect(families[1].samples[0].label("path") == #"C:\DIR\FILE.TXT"#)
        #expect(families[1].samples[0].label("error") == "Cannot find file:\n\"FILE.TXT\"")
        #expect(families[1].samples[0].value == 1.458255915e9)
        #expect(families[1].type == .untyped)
        #expect(families[3].samples[0].value == .infinity)
        #expect(families[3].samples[0].timestampMs == -3_982_045)

        let histogram = try #require(families[4].histogram())
        #expect(families[4].type == .histogram)
        #expect(families[4].samples.count == 8)
        #expect(histogram.count == 144_320)
        #expect(histogram.sum == 53_423)
        #expect(histogram.buckets.map(\.upperBound) == [0.05, 0.1, 0.2, 0.5, 1, .infinity])
        // Rank 0.5 × 144320 = 72160 falls in (0.1, 0.2]: 0.1 + 0.1 × (72160 − 33444) / (100392 − 33444).
        let median = try #require(histogram.quantile(0.5))
        #expect(abs(median - (0.1 + 0.1 * (72160 - 33444) / (100392 - 33444))) < 1e-12)
        // Rank beyond the last finite bucket: the highest finite bound.
        #expect(histogram.quantile(0.99) == 1)

        #expect(families[5].type == .summary)
        #expect(families[5].samples.map(\.name).filter { $0 == "rpc_duration_seconds" }.count == 3)
    }

    @Test("a histogram's observations since an earlier scrape, and their quantile")
    func histogramWindow() throws {
        func scrape(_ fast: Int, _ slow: Int) throws -> Histogram {
            try #require(
                try PrometheusText.parse(
                    """
                    # TYPE lat histogram
                    lat_bucket{le="0.01"} \(fast)
                    lat_bucket{le="0.1"} \(fast + slow)
                    lat_bucket{le="+Inf"} \(fast + slow)
                    lat_sum 1
                    lat_count \(fast + slow)
                    """)[0].histogram())
        }
        let window = try #require(try scrape(1000, 10).since(try scrape(900, 10)))
        #expect(window.count == 100)
        #expect(window.quantile(0.99)! <= 0.01)  // the last 100 were all fast
        let slower = try #require(try scrape(1000, 110).since(try scrape(1000, 10)))
        #expect(slower.quantile(0.5)! > 0.01)
        #expect(try scrape(5, 0).since(try scrape(1000, 10)) == nil, "a counter reset has no difference")
    }

    @Test("what is wrong is named with its line")
    func errors() {
        let cases: [(String, Int, String)] = [
            ("ok 1\nbad{x=\"1\" 2", 2, "expected ',' or '}'"),
            ("a{x=1} 2", 1, "must be quoted"),
            ("a{x=\"1\\q\"} 2", 1, "unknown escape"),
            ("a{x=\"1\"", 1, "expected ',' or '}'"),
            ("a{x=\"1} 2", 1, "not closed"),
            ("a{x=\"1\",x=\"2\"} 2", 1, "appears twice"),
            ("a 1.2.3", 1, "'1.2.3' is not a number"),
            ("a 0x10", 1, "'0x10' is not a number"),
            ("a", 1, "has no value"),
            ("a 1 soon", 1, "not a timestamp"),
            ("a 1 2 3", 1, "after the timestamp"),
            ("9a 1", 1, "not a metric name"),
            ("a{9=\"1\"} 1", 1, "not a label name"),
            ("# TYPE a gauge\n# TYPE a counter", 2, "second # TYPE"),
            ("# TYPE a meter", 1, "unknown metric type"),
            ("a 1\n# TYPE a gauge", 2, "after its samples"),
        ]
        for (text, line, message) in cases {
            let error = #expect(throws: ExpositionError.self, "\(text)") { try PrometheusText.parse(text) }
            #expect(error?.line == line, "\(text)")
            #expect(error?.message.contains(message) == true, "\(text): \(error?.message ?? "")")
        }
    }

    @Test("what exporters emit besides the basics: CRLF, tabs, NaN, blank label sets, comments")
    func tolerant() throws {
        let families = try PrometheusText.parse("# just a comment\r\nup\t1\r\nx{} NaN\n\n#\n# HELP y a\\\\b\\nc\ny -Inf\n")
        try #require(families.map(\.name) == ["up", "x", "y"])
        #expect(families[0].samples[0].value == 1)
        #expect(families[1].samples[0].value.isNaN)
        #expect(families[2].help == "a\\b\nc")
        #expect(families[2].samples[0].value == -.infinity)
    }

    @Test("random bytes and mangled expositions never crash the parser")
    func fuzz() async throws {
        // Thousands of parses: on a thread of its own (`offPool`), not one of the few pool threads.
        let misplaced = try await offPool { Self.fuzzRounds() }
        #expect(misplaced.isEmpty, "errors naming a line outside the text: \(misplaced.prefix(3))")
    }

    /// The texts whose parse error named a line the text does not have.
    static func fuzzRounds() -> [String] {
        var misplaced: [String] = []
        var generator = SystemRandomNumberGenerator()
        let alphabet = Array("ab_:{}=\",# \n\\.0123456789eE+-InfNa\tle\"") + ["é", "\u{0}"]
        let seeds = sample.split(separator: "\n").map(String.init)
        for round in 0..<3000 {
            var text: String
            if round % 2 == 0 {
                text = String(
                    (0..<Int.random(in: 0..<120, using: &generator)).map { _ in alphabet.randomElement(using: &generator)! })
            } else {
                var lines = seeds
                for _ in 0..<3 {
                    let i = Int.random(in: 0..<lines.count, using: &generator)
                    var chars = Array(lines[i])
                    if !chars.isEmpty { chars.remove(at: Int.random(in: 0..<chars.count, using: &generator)) }
                    chars.insert(
                        alphabet.randomElement(using: &generator)!, at: Int.random(in: 0...chars.count, using: &generator))
                    lines[i] = String(chars)
                }
                text = lines.joined(separator: "\n")
            }
            do {
                _ = try PrometheusText.parse(text)
            } catch {
                if !(error.line >= 1 && error.line <= text.split(separator: "\n", omittingEmptySubsequences: false).count) {
                    misplaced.append(text)
                }
            }
        }
        return misplaced
    }

    @Test("plain decimals read to the same bits strtod gives: every length, sign and position of the point")
    func decimalsExactly() throws {
        var generator = SystemRandomNumberGenerator()
        var text = ""
        var expected: [Double] = []
        for i in 0..<20_000 {
            var digits = String(
                (0..<Int.random(in: 1...19, using: &generator)).map { _ in "0123456789".randomElement(using: &generator)! })
            if Bool.random(using: &generator) {
                digits.insert(
                    ".", at: digits.index(digits.startIndex, offsetBy: Int.random(in: 0...digits.count, using: &generator)))
            }
            let value = ["", "-", "+"].randomElement(using: &generator)! + digits
            guard let double = Double(value) else { continue }
            text += "m{i=\"\(i)\"} \(value)\n"
            expected.append(double)
        }
        let read = try #require(PrometheusText.parse(text).first).samples.map(\.value)
        #expect(read.count == expected.count)
        let differing = zip(read, expected).filter { $0.bitPattern != $1.bitPattern }
        #expect(differing.isEmpty, "\(differing.prefix(5))")
    }

    @Test("a real exporter's scrape: Debian's prometheus-node-exporter 1.5.0, captured on this kind of machine")
    func nodeExporter() throws {
        // Captured with: apt-get download prometheus-node-exporter; dpkg-deb -x …; run it with
        // --web.listen-address=127.0.0.1:19100; curl /metrics (see Fixtures/).
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
            "Fixtures/node-exporter-1.5.0.prom")
        let text = try String(contentsOf: path, encoding: .utf8)
        let families = try PrometheusText.parse(text)
        #expect(families.count == 283)
        var byType: [MetricType: Int] = [:]
        for family in families { byType[family.type, default: 0] += 1 }
        #expect(byType == [.counter: 60, .gauge: 175, .summary: 1, .untyped: 47])
        #expect(families.reduce(0) { $0 + $1.samples.count } == text.split(separator: "\n").filter { !$0.hasPrefix("#") }.count)
        let cpu = try #require(families.first { $0.name == "node_cpu_seconds_total" })
        #expect(cpu.type == .counter && cpu.help == "Seconds the CPUs spent in each mode.")
        #expect(cpu.samples.first.map { $0.label("cpu") == "0" && $0.label("mode") == "idle" && $0.value == 484.87 } == true)
        let gc = try #require(families.first { $0.name == "go_gc_duration_seconds" })
        #expect(gc.type == .summary)
        #expect(gc.samples.map(\.name).contains("go_gc_duration_seconds_count"))
        #expect(gc.samples.compactMap { $0.label("quantile") } == ["0", "0.25", "0.5", "0.75", "1"])
        let uname = try #require(families.first { $0.name == "node_uname_info" })
        #expect(uname.samples.first?.label("machine") == "x86_64")
    }
}
