/// What a PromQL expression evaluates to at one instant.
public enum PromQLValue: Sendable, Equatable {
    case scalar(Double)
    case vector([PromQLSample])
}

/// One element of an instant vector.
public struct PromQLSample: Sendable, Equatable {
    /// The metric name: kept by a plain selector, dropped by functions, aggregations and arithmetic.
    public var name: String?
    public var labels: Labels
    public var value: Double

    public init(name: String? = nil, labels: Labels, value: Double) {
        self.name = name
        self.labels = labels
        self.value = value
    }
}

/// The series an evaluation reads.
public protocol PromQLSeriesSource {
    /// How many series are named `name` (to make room for them at once).
    func seriesCount(named name: String) -> Int

    /// Calls `body` with every series named `name`: its labels and its samples (times in
    /// milliseconds since the epoch, oldest first) in [from, to].
    func forEachSeries(
        named name: String, from: Int64, to: Int64,
        _ body: (Labels, ArraySlice<Int64>, ArraySlice<Double>) -> Void)
}

/// Evaluates the PromQL subset of `PromQLExpression` at one instant, with Prometheus 2's
/// semantics: an instant selector takes each series' last sample in the 5 minutes up to the
/// instant, a range selector the samples in [t - range, t]; `rate` and `increase` extrapolate to
/// the range's ends as Prometheus does, and count a drop as a counter reset;
/// `histogram_quantile` interpolates linearly within the bucket.
public struct PromQLEvaluator<Source: PromQLSeriesSource> {
    let source: Source
    let time: Int64

    public init(source: Source, time: Int64) {
        self.source = source
        self.time = time
    }

    public func evaluate(_ expression: PromQLExpression) throws(PromQLError) -> PromQLValue {
        switch expression {
        case .number(let value):
            return .scalar(value)
        case .selector(let selector):
            var samples: [PromQLSample] = []
            samples.reserveCapacity(source.seriesCount(named: selector.name))
            source.forEachSeries(named: selector.name, from: time - PromQLExpression.instantLookbackMs, to: time) {
                labels, _, values in
                guard let last = values.last, selector.matches(labels) else { return }
                samples.append(PromQLSample(name: selector.name, labels: labels, value: last))
            }
            return .vector(samples)
        case .range(let selector, _):
            throw PromQLError(column: 0, "\(selector) with a range is a range vector: give it to rate, irate or increase")
        case .negate(let operand):
            switch try evaluate(operand) {
            case .scalar(let value): return .scalar(-value)
            case .vector(let samples): return .vector(samples.map { PromQLSample(labels: $0.labels, value: -$0.value) })
            }
        case .binary(let op, let lhs, let rhs):
            return try binary(op, try evaluate(lhs), try evaluate(rhs), expression)
        case .aggregate(let op, let grouping, let argument):
            guard case .vector(let samples) = try evaluate(argument) else {
                throw PromQLError(column: 0, "\(op.rawValue) needs a vector, and \(argument) is a scalar")
            }
            return .vector(Self.aggregate(op, grouping, samples))
        case .call(let function, let arguments):
            switch function {
            case .rate, .irate, .increase:
                guard case .range(let selector, let rangeMs) = arguments.first else {
                    throw PromQLError(column: 0, "\(function.rawValue) needs a range vector")
                }
                var samples: [PromQLSample] = []
                samples.reserveCapacity(source.seriesCount(named: selector.name))
                source.forEachSeries(named: selector.name, from: time - rangeMs, to: time) { labels, times, values in
                    guard selector.matches(labels) else { return }
                    let value =
                        function == .irate
                        ? Self.instantRate(times, values)
                        : Self.extrapolatedIncrease(
                            times, values, from: time - rangeMs, to: time, perSecond: function == .rate)
                    if let value { samples.append(PromQLSample(labels: labels, value: value)) }
                }
                return .vector(samples)
            case .histogramQuantile:
                guard case .scalar(let quantile) = try evaluate(arguments[0]) else {
                    throw PromQLError(column: 0, "histogram_quantile's first argument must be a number, not \(arguments[0])")
                }
                guard case .vector(let buckets) = try evaluate(arguments[1]) else {
                    throw PromQLError(column: 0, "histogram_quantile's second argument must be a vector of buckets")
                }
                return .vector(Self.histogramQuantile(quantile, buckets))
            }
        }
    }

    private func binary(
        _ op: PromQLOperator, _ lhs: PromQLValue, _ rhs: PromQLValue, _ expression: PromQLExpression
    ) throws(PromQLError) -> PromQLValue {
        switch (lhs, rhs) {
        case (.scalar(let a), .scalar(let b)):
            return .scalar(op.apply(a, b))
        case (.vector(let samples), .scalar(let b)):
            return .vector(samples.map { PromQLSample(labels: $0.labels, value: op.apply($0.value, b)) })
        case (.scalar(let a), .vector(let samples)):
            return .vector(samples.map { PromQLSample(labels: $0.labels, value: op.apply(a, $0.value)) })
        case (.vector(let left), .vector(let right)):
            // One to one, on all labels (the metric name aside). Within the subset no vector has
            // two series with the same labels (selectors pick one name, groupings are unique);
            // the checks guard that should it grow.
            var byLabels: [Labels: Double] = [:]
            for sample in right {
                guard byLabels.updateValue(sample.value, forKey: sample.labels) == nil else {
                    throw PromQLError(
                        column: 0, "in \(expression), the right side has several series with the labels \(sample.labels)")
                }
            }
            var seen = Set<Labels>()
            var result: [PromQLSample] = []
            for sample in left {
                guard let other = byLabels[sample.labels] else { continue }
                guard seen.insert(sample.labels).inserted else {
                    throw PromQLError(
                        column: 0, "in \(expression), the left side has several series with the labels \(sample.labels)")
                }
                result.append(PromQLSample(labels: sample.labels, value: op.apply(sample.value, other)))
            }
            return .vector(result)
        }
    }

    static func aggregate(_ op: PromQLAggregation, _ grouping: PromQLGrouping?, _ samples: [PromQLSample]) -> [PromQLSample] {
        var keys = GroupKeys(capacity: min(samples.count, 16))
        var groups: [AggregationGroup] = []
        groups.reserveCapacity(min(samples.count, 16))
        for sample in samples {
            // Without a grouping every sample falls in the one group with no labels.
            let slot = keys.slot(of: sample.labels) { grouping?.keeps($0) ?? false }
            if slot == groups.count { groups.append(AggregationGroup()) }
            groups[slot].sum += sample.value
            groups[slot].count += 1
            groups[slot].min = Swift.min(groups[slot].min, sample.value)
            groups[slot].max = Swift.max(groups[slot].max, sample.value)
        }
        return zip(keys.keys, groups).map { key, group in
            let value: Double =
                switch op {
                case .sum: group.sum
                case .avg: group.sum / Double(group.count)
                case .min: group.min
                case .max: group.max
                case .count: Double(group.count)
                }
            return PromQLSample(labels: key, value: value)
        }
    }

    /// Prometheus's extrapolated delta of a counter over [from, to]: the growth between the first
    /// and last samples (a drop counted as a reset), stretched towards the range's ends — all the
    /// way where the samples come within 110 % of their average interval of an end, half an
    /// interval otherwise, and never below a counter's zero. Per second with `perSecond`.
    static func extrapolatedIncrease(
        _ times: ArraySlice<Int64>, _ values: ArraySlice<Double>, from: Int64, to: Int64, perSecond: Bool
    ) -> Double? {
        guard times.count >= 2, let firstValue = values.first, let lastValue = values.last,
            let firstTime = times.first, let lastTime = times.last
        else { return nil }
        var growth = lastValue - firstValue
        var previous = firstValue
        for value in values.dropFirst() {
            if value < previous { growth += previous }
            previous = value
        }
        let sampled = Double(lastTime - firstTime) / 1000
        let average = sampled / Double(times.count - 1)
        var toStart = Double(firstTime - from) / 1000
        let toEnd = Double(to - lastTime) / 1000
        if growth > 0, firstValue >= 0 {
            // Where the counter would have been zero, were it growing at the same pace.
            toStart = min(toStart, sampled * (firstValue / growth))
        }
        let threshold = average * 1.1
        var interval = sampled
        interval += toStart < threshold ? toStart : average / 2
        interval += toEnd < threshold ? toEnd : average / 2
        // One factor, then one multiplication: Prometheus's order, to its last bit.
        var factor = interval / sampled
        if perSecond { factor /= Double(to - from) / 1000 }
        return growth * factor
    }

    /// The per-second rate between the last two samples (the last alone after a reset).
    static func instantRate(_ times: ArraySlice<Int64>, _ values: ArraySlice<Double>) -> Double? {
        guard times.count >= 2 else { return nil }
        let last = values[values.endIndex - 1]
        let before = values[values.endIndex - 2]
        let seconds = Double(times[times.endIndex - 1] - times[times.endIndex - 2]) / 1000
        guard seconds > 0 else { return nil }
        return (last < before ? last : last - before) / seconds
    }

    /// The φ-quantile of each histogram in `buckets` (series that differ only in `le`), as
    /// Prometheus computes it: the bucket where the rank falls, interpolated linearly; the upper
    /// bound of the last finite bucket when the rank falls in +Inf; NaN without a +Inf bucket or
    /// observations; counts that decrease with `le` (a scrape between two buckets) made monotonic.
    static func histogramQuantile(_ quantile: Double, _ buckets: [PromQLSample]) -> [PromQLSample] {
        var keys = GroupKeys(capacity: 1)
        var histograms: [[(upper: Double, count: Double)]] = []
        for bucket in buckets {
            guard let le = bucket.labels["le"], let upper = parseValue(le) else { continue }
            let slot = keys.slot(of: bucket.labels) { $0 != "le" }
            if slot == histograms.count {
                histograms.append([])
                histograms[slot].reserveCapacity(buckets.count)
            }
            histograms[slot].append((upper, bucket.value))
        }
        return zip(keys.keys, histograms).map { key, histogram in
            PromQLSample(labels: key, value: bucketQuantile(quantile, histogram))
        }
    }

    static func bucketQuantile(_ quantile: Double, _ unsorted: [(upper: Double, count: Double)]) -> Double {
        if quantile.isNaN { return .nan }
        if quantile < 0 { return -.infinity }
        if quantile > 1 { return .infinity }
        var buckets = unsorted.sorted { $0.upper < $1.upper }
        guard buckets.count >= 2, buckets[buckets.count - 1].upper == .infinity else { return .nan }
        for i in buckets.indices.dropFirst() where buckets[i].count < buckets[i - 1].count {
            buckets[i].count = buckets[i - 1].count
        }
        let observations = buckets[buckets.count - 1].count
        guard observations > 0 else { return .nan }
        var rank = quantile * observations
        let b = buckets.firstIndex { $0.count >= rank } ?? buckets.count - 1
        if b == buckets.count - 1 { return buckets[buckets.count - 2].upper }
        if b == 0, buckets[0].upper <= 0 { return buckets[0].upper }
        var start = 0.0
        var count = buckets[b].count
        if b > 0 {
            start = buckets[b - 1].upper
            count -= buckets[b - 1].count
            rank -= buckets[b - 1].count
        }
        return start + (buckets[b].upper - start) * (rank / count)
    }
}

/// The distinct label sets of an aggregation's groups, in the order they were first seen. Few
/// groups (the usual case: `by (le)` gives a dozen) are found by comparing, which is cheaper than
/// hashing their strings; past 16 a dictionary takes over.
struct GroupKeys {
    private(set) var keys: [Labels] = []
    private var index: [Labels: Int]?

    init(capacity: Int) { keys.reserveCapacity(capacity) }

    /// The slot of the labels of `labels` that `keep` accepts (a group's key, or a histogram's
    /// buckets without `le`); the key is made only when it is new.
    mutating func slot(of labels: Labels, keeping keep: (String) -> Bool) -> Int {
        if index == nil, let slot = keys.firstIndex(where: { $0.equals(labels, keeping: keep) }) { return slot }
        return slot(of: labels.filter(keep))
    }

    /// The slot of `key`: an existing one, or `keys.count` before it was added.
    mutating func slot(of key: Labels) -> Int {
        if let index {
            if let slot = index[key] { return slot }
        } else if let slot = keys.firstIndex(of: key) {
            return slot
        }
        keys.append(key)
        if index != nil {
            index?[key] = keys.count - 1
        } else if keys.count > 16 {
            index = Dictionary(uniqueKeysWithValues: keys.enumerated().map { ($1, $0) })
        }
        return keys.count - 1
    }
}

/// One group's running figures in an aggregation.
struct AggregationGroup {
    var sum = 0.0
    var count = 0
    var min = Double.infinity
    var max = -Double.infinity
}

extension RecentSamples: PromQLSeriesSource {
    public func seriesCount(named name: String) -> Int { indices(named: name).count }

    public func forEachSeries(
        named name: String, from: Int64, to: Int64,
        _ body: (Labels, ArraySlice<Int64>, ArraySlice<Double>) -> Void
    ) {
        for i in indices(named: name) {
            let s = series[i]
            guard let end = s.lastIndex(atOrBefore: to) else { continue }
            let first = s.lastIndex(atOrBefore: from - 1).map { $0 + 1 } ?? s.start
            guard first <= end else { continue }
            body(s.labels, s.times[first...end], s.values[first...end])
        }
    }
}
