/// Recent CPU use of hosts and VMs, from the cumulative CPU seconds their agents report with
/// each heartbeat: the rate over consecutive spans of at least `span` seconds, the last `keep` of
/// them, oldest first. Kept in memory only: after a controller restart it fills again within
/// seconds.
struct UsageHistory<Key: Hashable> {
    struct Series {
        var anchorTime: Double
        var anchorValue: Double
        var rates: [Double] = []
    }

    let span: Double
    let keep: Int
    private(set) var series: [Key: Series] = [:]

    init(span: Double = 2, keep: Int = 15) {
        self.span = span
        self.keep = keep
    }

    /// Takes a cumulative reading (`value` at `time`, seconds); `scale` divides the rate (a
    /// host's capacity, to get a fraction). A reading below the last one (the process restarted,
    /// the VM moved to another host) starts the series again.
    mutating func record(_ key: Key, value: Double, at time: Double, scale: Double = 1) {
        guard var entry = series[key] else {
            series[key] = Series(anchorTime: time, anchorValue: value)
            return
        }
        let elapsed = time - entry.anchorTime
        if value < entry.anchorValue || elapsed < 0 {
            series[key] = Series(anchorTime: time, anchorValue: value)
            return
        }
        guard elapsed >= span else { return }
        entry.rates.append((value - entry.anchorValue) / elapsed / max(scale, .leastNonzeroMagnitude))
        if entry.rates.count > keep { entry.rates.removeFirst(entry.rates.count - keep) }
        entry.anchorTime = time
        entry.anchorValue = value
        series[key] = entry
    }

    func rates(_ key: Key) -> [Double] { series[key]?.rates ?? [] }

    /// Forgets keys no longer wanted.
    mutating func retain(where keep: (Key) -> Bool) {
        for key in series.keys where !keep(key) { series[key] = nil }
    }

    mutating func forget(_ key: Key) { series[key] = nil }
}
