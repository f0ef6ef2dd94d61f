import Foundation
import VireoAPI
import VireoModel
import VireoStore
import VireoTelemetry

/// What happens to an application's VMs when the application is deleted.
public enum AppVMDisposition: String, Sendable, CaseIterable {
    /// The VMs keep running, no longer part of an application.
    case keep
    /// The VMs are deleted with the application.
    case delete
}

extension Controller {
    // MARK: Reads

    public func listApps() async -> AppList {
        var items: [AppView] = []
        for app in model.apps.values.sorted(by: { $0.name < $1.name }) {
            items.append(model.appView(app, status: await telemetry.status(app: app.name), withCurrent: false))
        }
        return AppList(items: items)
    }

    public func app(_ name: String) async throws -> AppView {
        guard let app = model.apps[name] else { throw VireoError.notFound("application", name) }
        return model.appView(app, status: await telemetry.status(app: name), withCurrent: true)
    }

    // MARK: Apply

    /// Applies validated manifest documents: creates what does not exist, updates applications
    /// that changed, leaves what matches — all in one write. Every document is checked against
    /// what exists before anything changes, so a conflict rejects the whole apply.
    public func apply(_ documents: [ManifestDocument]) async throws -> ApplyResult {
        let (result, appsChanged) = try await write { try $0.apply(documents) }
        if appsChanged { await telemetry.configure(model.apps.values.map(\.spec)) }
        return result
    }

    // MARK: Delete

    public func deleteApp(_ name: String, vms disposition: AppVMDisposition) async throws -> AppDeletion {
        let members = try await write { try $0.removeApp(name, vms: disposition) }
        await telemetry.configure(model.apps.values.map(\.spec))
        do {
            try await telemetry.store.deleteApp(name)
        } catch {
            logger.warning("cannot delete the application's series", metadata: ["app": "\(name)", "error": "\(error)"])
        }
        return AppDeletion(
            name: name, deletedVMs: disposition == .delete ? members.map(\.name) : [],
            keptVMs: disposition == .keep ? members.map(\.name) : [])
    }
}

extension ClusterModel {
    func appView(_ app: AppRecord, status: TelemetryEngine.AppStatus?, withCurrent: Bool) -> AppView {
        let vms = state.vms.values.filter { $0.spec.app == app.name }.sorted { $0.name < $1.name }.map {
            AppView.VM(name: $0.name, state: $0.state, host: $0.hostID.flatMap { state.hosts[$0]?.name }, address: $0.address)
        }
        let current = withCurrent ? status?.current.filter { !$0.name.hasSuffix("_bucket") } : nil
        return AppView(
            app: app, vms: vms, objectives: status?.objectives ?? [], lastSampleAt: status?.lastSampleAt,
            lastError: status?.lastError, current: current)
    }

    /// The telemetry settings of the application a VM belongs to, for its agent.
    func telemetrySpec(of vm: VirtualMachine) -> TelemetrySpec? {
        guard let name = vm.spec.app, let app = apps[name] else { return nil }
        let telemetry = app.spec.telemetry
        return telemetry.scrape == nil && telemetry.probe == nil ? nil : telemetry
    }

    // MARK: Apply

    /// Checks an Application document against what exists; returns what would change. Throws
    /// (and nothing is changed) when the document cannot be applied.
    func planApply(_ spec: ApplicationSpec) throws(VireoError) -> [String] {
        for vm in spec.vms {
            guard let existing = state.vm(named: vm.name) else { continue }
            if existing.intent == .deleted {
                throw VireoError(
                    .conflict, "Application '\(spec.name)': VM '\(vm.name)' is being deleted; apply again once it is gone")
            }
            if let owner = existing.spec.app, owner != spec.name {
                throw VireoError(.conflict, "Application '\(spec.name)': VM '\(vm.name)' belongs to application '\(owner)'")
            }
            // A VM created on its own (no app) is adopted when the rest of its spec matches.
            var have = existing.spec
            var want = vm
            have.app = nil
            want.app = nil
            if have != want {
                throw VireoError(
                    .conflict,
                    "Application '\(spec.name)': VM '\(vm.name)' exists with a different spec "
                        + "(\(VMSpecDifference.describe(existing.spec, vm))); delete it first to recreate it")
            }
        }
        guard let old = apps[spec.name] else {
            return spec.vms.map { "vm \($0.name): added" } + spec.objectives.map { "objective \($0.name): added" }
        }
        for vm in old.spec.vms where !spec.vms.contains(where: { $0.name == vm.name }) {
            throw VireoError(
                .conflict,
                "Application '\(spec.name)': VM '\(vm.name)' is no longer listed; delete it first (vireo vm delete \(vm.name)) "
                    + "or delete the application")
        }
        // Applying is level-triggered: a listed VM deleted since is made again.
        let missing = spec.vms.filter { vm in old.spec.vms.contains { $0.name == vm.name } && state.vm(named: vm.name) == nil }
        return ApplicationDifference.describe(old.spec, spec)
            + missing.map { "vm \($0.name): created again (it had been deleted)" }
    }

    /// Applies manifest documents after checking all of them; returns the result and whether
    /// any application changed.
    mutating func apply(_ documents: [ManifestDocument]) throws -> (ApplyResult, Bool) {
        for case .virtualMachine(let spec) in documents {
            if let existing = state.vm(named: spec.name), existing.spec != spec {
                throw VireoError(
                    .conflict,
                    "VirtualMachine '\(spec.name)' exists with a different spec (\(VMSpecDifference.describe(existing.spec, spec))); "
                        + "delete it first to recreate it")
            }
        }
        var manifestApps: [ApplicationSpec] = []
        var slos: [OpenSLODocument] = []
        for document in documents {
            switch document {
            case .application(let spec): manifestApps.append(spec)
            case .slo(let slo): slos.append(slo)
            case .virtualMachine: break
            }
        }
        let applications = try mergeSLOs(slos, into: manifestApps)
        var differences: [String: [String]] = [:]
        for spec in applications { differences[spec.name] = try planApply(spec) }

        // Everything is checked: from here on nothing throws.
        var items: [ApplyResult.Item] = []
        for document in documents {
            guard case .virtualMachine(let spec) = document else { continue }
            if state.vm(named: spec.name) != nil {
                items.append(.init(kind: document.kind, name: spec.name, action: .unchanged))
            } else {
                _ = try createVM(spec)
                items.append(.init(kind: document.kind, name: spec.name, action: .created))
            }
        }
        var appsChanged = false
        for spec in applications {
            let item = try applyApplication(spec, changes: differences[spec.name] ?? [])
            appsChanged = appsChanged || item.action != .unchanged
            items.append(item)
        }
        return (ApplyResult(items: items), appsChanged)
    }

    /// Creates or replaces an application after `planApply` accepted it, creating the VMs it
    /// lists that do not exist yet.
    mutating func applyApplication(_ spec: ApplicationSpec, changes: [String]) throws -> ApplyResult.Item {
        let existed = apps[spec.name] != nil
        if existed && changes.isEmpty { return .init(kind: "Application", name: spec.name, action: .unchanged) }
        let time = now()
        var app = apps[spec.name] ?? AppRecord(spec: spec, createdAt: time, updatedAt: time)
        if existed {
            app.spec = spec
            app.updatedAt = time
            app.generation += 1
        }
        put(app)
        events.publish(
            .app, name: spec.name, to: existed ? "updated" : "created", message: changes.joined(separator: "; "), at: time)
        for vm in spec.vms {
            if var existing = state.vm(named: vm.name) {
                // A VM created on its own (no app) becomes part of the application.
                if existing.spec.app == nil {
                    existing.spec.app = spec.name
                    existing.updatedAt = time
                    commit(vms: [existing])
                }
            } else {
                _ = try createVM(vm)
            }
        }
        return .init(kind: "Application", name: spec.name, action: existed ? .updated : .created, changes: changes)
    }

    /// The objectives of OpenSLO documents merged into their applications' specs (from the same
    /// manifest or stored). Throws, naming the document, when the service is unknown or an
    /// objective uses a metric the application does not declare.
    func mergeSLOs(_ documents: [OpenSLODocument], into manifestApps: [ApplicationSpec]) throws(VireoError) -> [ApplicationSpec] {
        var specs: [String: ApplicationSpec] = [:]
        for spec in manifestApps { specs[spec.name] = spec }
        for document in documents {
            guard var spec = specs[document.service] ?? apps[document.service]?.spec else {
                throw VireoError.invalid(
                    field: "SLO '\(document.name)': spec.service", value: "'\(document.service)'",
                    "no such application; apply its Application first (or in the same manifest)")
            }
            for objective in document.objectives {
                try ApplicationValidation.checkMetrics(
                    objective, telemetry: spec.telemetry, field: "SLO '\(document.name)': spec.indicator")
                if let i = spec.objectives.firstIndex(where: { $0.name == objective.name }) {
                    spec.objectives[i] = objective
                } else {
                    spec.objectives.append(objective)
                }
            }
            specs[spec.name] = spec
        }
        return specs.values.sorted { $0.name < $1.name }
    }

    // MARK: Delete

    /// Deletes the record and detaches or marks for deletion its VMs, in one write. Returns the
    /// VMs.
    mutating func removeApp(_ name: String, vms disposition: AppVMDisposition) throws -> [VirtualMachine] {
        let time = now()
        guard apps[name] != nil else { throw VireoError.notFound("application", name) }
        let members = state.vms.values.filter { $0.spec.app == name }.sorted { $0.name < $1.name }
        if disposition == .delete { for vm in members { try refuseWhileMigrating(vm) } }
        var updated: [VirtualMachine] = []
        var removed: [VMID] = []
        for var vm in members {
            switch disposition {
            case .keep:
                vm.spec.app = nil
                vm.updatedAt = time
                updated.append(vm)
            case .delete:
                if markDeleted(&vm, at: time) { removed.append(vm.id) } else { updated.append(vm) }
            }
        }
        commit(vms: updated, deleting: removed)
        deleteApp(name)
        for vm in members where removed.contains(vm.id) { events.publish(.vmDeleted, name: vm.name, at: time) }
        events.publish(.app, name: name, to: "deleted", message: "VMs: \(disposition.rawValue)", at: time)
        return members
    }
}

extension Controller {

    // MARK: Telemetry

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
        let ms = { (d: Date) in Int64((d.timeIntervalSince1970 * 1000).rounded()) }
        let found = try await telemetry.store.query(
            app: name, name: selector.name, selector: selector, from: ms(from), to: ms(to))
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
        let ms = Int64((time.timeIntervalSince1970 * 1000).rounded())
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
        let changes = await telemetry.evaluate(now: Int64((time.timeIntervalSince1970 * 1000).rounded()))
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
        // The gauges change only when a window was judged or the applications changed: not every tick.
        let version = await telemetry.statusVersion
        if version != gaugedStatusVersion {
            gaugedStatusVersion = version
            sloGauges.update(await telemetry.allStatuses())
        }
    }
}

/// One line per difference between two VM specs.
enum VMSpecDifference {
    static func describe(_ a: VMSpec, _ b: VMSpec) -> String {
        var parts: [String] = []
        if a.image != b.image { parts.append("image \(a.image) → \(b.image)") }
        if a.cpus != b.cpus { parts.append("cpus \(a.cpus) → \(b.cpus)") }
        if a.memoryMiB != b.memoryMiB {
            parts.append("memory \(ByteSize.format(mib: a.memoryMiB)) → \(ByteSize.format(mib: b.memoryMiB))")
        }
        if a.host != b.host { parts.append("host \(a.host ?? "-") → \(b.host ?? "-")") }
        if a.app != b.app { parts.append("app \(a.app ?? "-") → \(b.app ?? "-")") }
        return parts.joined(separator: ", ")
    }
}

/// What `vireo apply` prints for a changed application.
enum ApplicationDifference {
    static func describe(_ a: ApplicationSpec, _ b: ApplicationSpec) -> [String] {
        var lines: [String] = []
        for vm in b.vms where !a.vms.contains(where: { $0.name == vm.name }) { lines.append("vm \(vm.name): added") }
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
        return lines
    }

    static func describe(_ t: TelemetryEndpoint?) -> String {
        t.map { ":\($0.port)\($0.path) every \(DurationText.format($0.intervalSeconds))" } ?? "none"
    }
}
