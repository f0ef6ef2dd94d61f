import VireoModel

/// The recent samples of one application's series, in memory, for SLO evaluation: what the
/// last few windows need and nothing older (the durable, downsampled history is `SeriesStore`).
public struct RecentSamples: Sendable {
    struct Series: Sendable {
        let name: String
        let labels: Labels
        /// A histogram bucket's upper bound (its `le` label), read once.
        let upperBound: Double?
        var times: [Int64] = []
        var values: [Double] = []
        /// Index of the oldest kept sample; older ones are dropped in bulk.
        var start = 0

        mutating func append(_ t: Int64, _ v: Double) {
            // Out-of-order or repeated samples (a retried push) keep the series sorted.
            if let last = times.last, t <= last { return }
            times.append(t)
            values.append(v)
        }

        mutating func trim(before t: Int64) {
            while start < times.count - 1, times[start + 1] <= t { start += 1 }
            if start > 1_024, start * 2 > times.count {
                times.removeFirst(start)
                values.removeFirst(start)
                start = 0
            }
        }

        var count: Int { times.count - start }

        /// The last sample at or before `t`, as an index.
        func lastIndex(atOrBefore t: Int64) -> Int? {
            var low = start
            var high = times.count
            while low < high {
                let mid = (low + high) / 2
                if times[mid] <= t { low = mid + 1 } else { high = mid }
            }
            return low > start ? low - 1 : nil
        }
    }

    private(set) var series: [Series] = []
    private var index: [SeriesKey: Int] = [:]
    private var byName: [String: [Int]] = [:]

    struct SeriesKey: Hashable {
        var name: String
        var labels: Labels
    }

    public init() {}

    public var seriesCount: Int { series.count }
    public var sampleCount: Int { series.reduce(0) { $0 + $1.count } }

    /// Adds one sample (milliseconds since the epoch).
    public mutating func append(name: String, labels: Labels, at t: Int64, value: Double) {
        let key = SeriesKey(name: name, labels: labels)
        let i: Int
        if let existing = index[key] {
            i = existing
        } else {
            i = series.count
            series.append(Series(name: name, labels: labels, upperBound: labels["le"].flatMap(parseValue)))
            index[key] = i
            byName[name, default: []].append(i)
        }
        series[i].append(t, value)
    }

    /// Drops samples older than `t`, but keeps the last one before it: increases over a window
    /// starting at `t` need it as their base.
    public mutating func trim(before t: Int64) {
        for i in series.indices { series[i].trim(before: t) }
    }

    /// The series named `name`, as indices.
    func indices(named name: String) -> [Int] { byName[name] ?? [] }

    func matching(_ name: String, _ selector: SeriesSelector) -> [Int] {
        (byName[name] ?? []).filter { selector.matches(series[$0].labels) }
    }

    /// How much a counter grew in (from, to]: from the last sample at or before `from` (or the
    /// first in the window when there is none) to the last at or before `to`, counting a drop as
    /// a reset. Nil when the window has no sample.
    public func increase(_ i: Int, from: Int64, to: Int64) -> Double? {
        let s = series[i]
        guard let end = s.lastIndex(atOrBefore: to) else { return nil }
        let base = s.lastIndex(atOrBefore: from) ?? s.start
        guard end > base || (end == base && s.times[end] > from) else { return nil }
        var total = 0.0
        var previous = s.values[base]
        if base + 1 <= end {
            for k in (base + 1)...end {
                let v = s.values[k]
                total += v >= previous ? v - previous : v
                previous = v
            }
        }
        return total
    }

    /// The largest value in (from, to]; nil without samples there.
    func maximum(_ i: Int, from: Int64, to: Int64) -> Double? {
        let s = series[i]
        guard let end = s.lastIndex(atOrBefore: to) else { return nil }
        var k = end
        var result: Double?
        while k >= s.start, s.times[k] > from {
            result = max(result ?? -.infinity, s.values[k])
            k -= 1
        }
        return result
    }

    /// The points of the series named `name` that `selector` matches, in [from, to].
    public func points(_ selector: SeriesSelector, name: String? = nil, from: Int64, to: Int64) -> [(
        labels: Labels, times: [Int64], values: [Double]
    )] {
        matching(name ?? selector.name, selector).map { i in
            let s = series[i]
            let range = s.start..<s.times.count
            let kept = range.filter { s.times[$0] >= from && s.times[$0] <= to }
            return (s.labels, kept.map { s.times[$0] }, kept.map { s.values[$0] })
        }
    }
}
