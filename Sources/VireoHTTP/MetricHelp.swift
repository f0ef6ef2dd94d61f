/// `# HELP` for each of the controller's metrics. They are made through swift-metrics, which has
/// no help text, so the exposition is given it here: `promtool check metrics` asks every family
/// for one (`MetricsExpositionTests`).
enum MetricHelp {
    static let texts: [String: String] = [
        "vireo_vms": "VMs by state.",
        "vireo_hosts": "Hosts by state.",
        "vireo_slo_error_budget_remaining": "Fraction of the objective's error budget left over its compliance window.",
        "vireo_slo_burn_rate": "How fast the objective's error budget burns over the lookback window (1: exactly at budget).",
        "vireo_slo_state": "1 for the objective's current state (ok, warning, breaching, unknown), 0 for the others.",
        "vireo_http_requests_total": "API requests by method, route and status.",
        "vireo_http_request_duration_seconds": "API request durations by method and route.",
    ]

    /// The exposition with a `# HELP` line before each family's `# TYPE` line that has none.
    static func addHelp(to exposition: [UInt8]) -> String {
        var text = ""
        text.reserveCapacity(exposition.count + 1024)
        var previous: Substring = ""
        for line in String(decoding: exposition, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("# TYPE "), !previous.hasPrefix("# HELP ") {
                let name = line.dropFirst("# TYPE ".count).prefix { $0 != " " }
                if let help = texts[String(name)] { text += "# HELP \(name) \(help)\n" }
            }
            text += line
            text += "\n"
            previous = line
        }
        text.removeLast()
        return text
    }
}
