import Foundation
import VireoAPI
import VireoModel
import VireoTelemetry

/// Application telemetry through the controller: samples in, series out, objectives judged.
extension Controller {
    /// Takes in a Prometheus text exposition for `app` (its own push, or an agent's scrape of
    /// one of its VMs, labelled with `vm`). Only declared and Vireo's own metrics are kept.
    public func ingest(app name: String, exposition text: String, vm: String? = nil, at time: Date) async throws -> IngestResult {
        guard let app = model.apps[name] else { throw VireoError.notFound("application", name) }
        let families: [MetricFamily]
        do throws(ExpositionError) {
            families = try PrometheusText.parse(text)
        } catch {
            throw VireoError(.invalidArgument, "body: not Prometheus text format: \(error)")
        }
        let samples = Self.samples(of: families, declared: app.spec.telemetry.metrics, vm: vm, at: time)
        try await telemetry.ingest(app: name, samples)
        return IngestResult(accepted: samples.count)
    }

    /// Takes in what an agent scraped and measured. Items of applications or VMs that no longer
    /// exist are dropped (the agent's view may be a heartbeat old); a malformed exposition is
    /// recorded as the application's last error, not fatal to the rest.
    public func ingest(_ delivery: AgentSamples) async throws -> IngestResult {
        guard model.state.hosts[delivery.hostID] != nil else { throw VireoError.notFound("host", delivery.hostID.rawValue) }
        var accepted = 0
        for item in delivery.items {
            guard let app = model.apps[item.app], model.state.vm(named: item.vm)?.spec.app == item.app else { continue }
            if let error = item.error {
                await telemetry.noteError(app: item.app, "\(item.vm): \(error)")
            }
            guard !item.exposition.isEmpty else { continue }
            let families: [MetricFamily]
            do throws(ExpositionError) {
                families = try PrometheusText.parse(item.exposition)
            } catch {
                await telemetry.noteError(app: item.app, "\(item.vm): metrics are not Prometheus text: \(error)")
                continue
            }
            let samples = Self.samples(of: families, declared: app.spec.telemetry.metrics, vm: item.vm, at: item.time)
            try await telemetry.ingest(app: item.app, samples)
            accepted += samples.count
            if item.error == nil { await telemetry.noteError(app: item.app, nil) }
        }
        return IngestResult(accepted: accepted)
    }

    /// The indicator of each window of `objective` that ended from `from` to `to`, as the series
    /// `vireo_slo_sli{objective="…"}` (windows without data have no point; the latest 11,000
    /// windows at most), for charts of an objective against its target.
    public func objectiveSeries(app name: String, objective: String, from: Date, to: Date) async throws -> SeriesResponse {
        guard let app = model.apps[name] else { throw VireoError.notFound("application", name) }
        guard app.spec.objectives.contains(where: { $0.name == objective }) else {
            throw VireoError.notFound("objective", "\(name)/\(objective)")
        }
        let windows =
            try await telemetry.windows(
                app: name, objective: objective, from: Self.milliseconds(from), to: Self.milliseconds(to),
                latest: Self.maxObjectivePoints) ?? []
        let points = windows.compactMap { w in
            w.sli.map { SeriesData.Point(t: Date(timeIntervalSince1970: Double(w.end) / 1000), v: $0) }
        }
        return SeriesResponse(
            app: name, metric: "vireo_slo_sli{objective=\"\(objective)\"}", from: from, to: to,
            series: [SeriesData(name: "vireo_slo_sli", labels: ["objective": objective], resolution: "window", points: points)])
    }
    static let maxObjectivePoints = 11_000

    /// A time as the telemetry engine and its store count it: milliseconds since the epoch.
    static func milliseconds(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1000).rounded()) }

    /// Stored points of `metric` (a selector) for charts.
    public func series(app name: String, metric: String, from: Date, to: Date) async throws -> SeriesResponse {
        guard model.apps[name] != nil else { throw VireoError.notFound("application", name) }
        let selector: SeriesSelector
        do throws(SelectorError) {
            selector = try SeriesSelector(parsing: metric)
        } catch {
            throw VireoError.invalid(field: "metric", value: "'\(metric)'", "not a metric selector: \(error.message)")
        }
        try await telemetry.flush()
        let found = try await telemetry.store.query(
            app: name, name: selector.name, selector: selector, from: Self.milliseconds(from), to: Self.milliseconds(to))
        return SeriesResponse(
            app: name, metric: selector.description, from: from, to: to,
            series: found.map { s in
                SeriesData(
                    name: s.name, labels: s.labels, resolution: s.resolution,
                    points: s.points.map {
                        .init(
                            t: Date(timeIntervalSince1970: Double($0.t) / 1000), v: $0.v, min: $0.min, max: $0.max, mean: $0.mean)
                    })
            })
    }

    static func samples(
        of families: [MetricFamily], declared: [MetricDeclaration], vm: String?, at time: Date
    ) -> [(name: String, labels: Labels, time: Int64, value: Double)] {
        let known = Set((declared + MetricCatalogue.builtIn).map(\.name))
        let ms = milliseconds(time)
        var result: [(name: String, labels: Labels, time: Int64, value: Double)] = []
        for family in families where known.contains(family.name) || known.contains(family.name + "_total") {
            for sample in family.samples {
                var labels = sample.labels
                if let vm, !labels.contains(where: { $0.name == "vm" }) { labels.append(("vm", vm)) }
                result.append((sample.name, Labels(labels), sample.timestampMs ?? ms, sample.value))
            }
        }
        return result
    }

    /// Judges the objectives' windows that have ended; publishes state changes as events and
    /// every objective's budget and burn rates as gauges.
    public func evaluateSLOs() async {
        let time = now()
        publish(await telemetry.evaluate(now: Self.milliseconds(time)), at: time)
        await askSources()
        await evaluateAlerts(at: time)
        // The gauges change only when a window was judged or the applications changed: not every tick.
        let version = await telemetry.statusVersion
        if version != gaugedStatusVersion {
            gaugedStatusVersion = version
            sloGauges.update(await telemetry.allStatuses())
        }
    }

    /// Publishes objectives' state changes as events and logs.
    func publish(_ changes: [SLOChange], at time: Date) {
        for change in changes {
            let sli = change.status.sli.map { String(format: "%.4g", $0) } ?? "no data"
            events.publish(
                .slo, name: "\(change.app)/\(change.objective)", from: change.from.rawValue, to: change.to.rawValue,
                message:
                    "sli \(sli), target \(change.status.target), budget remaining \(String(format: "%.3f", change.status.errorBudgetRemaining))",
                at: time)
            logger.info(
                "objective changed state",
                metadata: [
                    "app": "\(change.app)", "objective": "\(change.objective)", "from": "\(change.from)", "to": "\(change.to)",
                ])
        }
    }
}
