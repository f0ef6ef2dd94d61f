import VireoModel

/// One line per difference between two VM specs.
enum VMSpecDifference {
    /// Whether `b` is `a` with another restart policy: a change `apply` makes in place (the VM
    /// runs on; its host hears of it with its desired state). Any other difference means a new VM.
    static func onlyRestartPolicy(_ a: VMSpec, _ b: VMSpec) -> Bool {
        var same = a
        same.restartPolicy = b.restartPolicy
        return a != b && same == b
    }

    static func describe(_ a: VMSpec, _ b: VMSpec) -> String {
        var parts: [String] = []
        if a.image != b.image { parts.append("image \(a.image) → \(b.image)") }
        if a.cpus != b.cpus { parts.append("cpus \(a.cpus) → \(b.cpus)") }
        if a.memoryMiB != b.memoryMiB {
            parts.append("memory \(ByteSize.format(mib: a.memoryMiB)) → \(ByteSize.format(mib: b.memoryMiB))")
        }
        if a.host != b.host { parts.append("host \(a.host ?? "-") → \(b.host ?? "-")") }
        if a.app != b.app { parts.append("app \(a.app ?? "-") → \(b.app ?? "-")") }
        if a.diskMiB != b.diskMiB {
            let size = { (mib: Int?) in mib.map { ByteSize.format(mib: $0) } ?? "the image's" }
            parts.append("disk \(size(a.diskMiB)) → \(size(b.diskMiB))")
        }
        if a.restartPolicy != b.restartPolicy {
            let policy = { (p: RestartPolicy?) in (p ?? .never).rawValue }
            parts.append("restartPolicy \(policy(a.restartPolicy)) → \(policy(b.restartPolicy))")
        }
        return parts.joined(separator: ", ")
    }
}

/// What `vireo apply` prints for a changed application.
enum ApplicationDifference {
    static func describe(_ a: ApplicationSpec, _ b: ApplicationSpec) -> [String] {
        var lines: [String] = []
        for vm in b.vms {
            guard let old = a.vms.first(where: { $0.name == vm.name }) else {
                lines.append("vm \(vm.name): added")
                continue
            }
            if old != vm { lines.append("vm \(vm.name): \(VMSpecDifference.describe(old, vm))") }
        }
        if a.telemetry.scrape != b.telemetry.scrape {
            lines.append("telemetry.scrape: \(describe(a.telemetry.scrape)) → \(describe(b.telemetry.scrape))")
        }
        if a.telemetry.probe != b.telemetry.probe {
            lines.append("telemetry.probe: \(describe(a.telemetry.probe)) → \(describe(b.telemetry.probe))")
        }
        if a.telemetry.metrics != b.telemetry.metrics {
            let names = { (m: [MetricDeclaration]) in m.map { "\($0.name) (\($0.type.rawValue))" }.joined(separator: ", ") }
            lines.append("telemetry.metrics: [\(names(a.telemetry.metrics))] → [\(names(b.telemetry.metrics))]")
        }
        if a.telemetry.source != b.telemetry.source {
            let url = { (s: TelemetrySource?) in s.map { "prometheus \($0.prometheus.url)" } ?? "none" }
            lines.append("telemetry.source: \(url(a.telemetry.source)) → \(url(b.telemetry.source))")
        }
        for objective in a.objectives where b.objective(named: objective.name) == nil {
            lines.append("objective \(objective.name): removed")
        }
        for objective in b.objectives {
            guard let old = a.objective(named: objective.name) else {
                lines.append("objective \(objective.name): added")
                continue
            }
            guard old != objective else { continue }
            var parts: [String] = []
            if old.kind != objective.kind { parts.append("kind \(old.kind.rawValue) → \(objective.kind.rawValue)") }
            if old.metric != objective.metric { parts.append("sli \(old.metric) → \(objective.metric)") }
            if old.totalMetric != objective.totalMetric {
                parts.append("total \(old.totalMetric ?? "-") → \(objective.totalMetric ?? "-")")
            }
            if old.quantile != objective.quantile {
                parts.append("quantile \(old.quantile.map { "\($0)" } ?? "-") → \(objective.quantile.map { "\($0)" } ?? "-")")
            }
            if old.target != objective.target { parts.append("target \(old.target) → \(objective.target)") }
            if old.windowSeconds != objective.windowSeconds {
                parts.append("window \(DurationText.format(old.windowSeconds)) → \(DurationText.format(objective.windowSeconds))")
            }
            if old.goal != objective.goal { parts.append("goal \(old.goal) → \(objective.goal)") }
            if old.periodSeconds != objective.periodSeconds {
                parts.append("period \(DurationText.format(old.periodSeconds)) → \(DurationText.format(objective.periodSeconds))")
            }
            if old.burnRateAlerts != objective.burnRateAlerts { parts.append("burn-rate alerts changed") }
            lines.append("objective \(objective.name): " + parts.joined(separator: ", "))
        }
        let alerts = { (spec: ApplicationSpec) in
            Dictionary((spec.alerts ?? []).map { ("\($0.objective)/\($0.name)", $0) }, uniquingKeysWith: { a, _ in a })
        }
        let (before, after) = (alerts(a), alerts(b))
        for key in Set(before.keys).union(after.keys).sorted() where before[key] != after[key] {
            lines.append("alert \(key): \(before[key] == nil ? "added" : after[key] == nil ? "removed" : "changed")")
        }
        return lines
    }

    static func describe(_ t: TelemetryEndpoint?) -> String {
        t.map { ":\($0.port)\($0.path) every \(DurationText.format($0.intervalSeconds))" } ?? "none"
    }
}
