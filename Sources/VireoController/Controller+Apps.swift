import Foundation
import VireoAPI
import VireoModel
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
    /// Applies a manifest. Everything but contexts is applied at once or not at all; contexts are
    /// opened after that, on their hosts, once the rest has been applied (a context that exists
    /// with another spec is refused before anything is applied).
    public func apply(_ documents: [ManifestDocument]) async throws -> ApplyResult {
        var contexts: [ContextOpenRequest] = []
        for case .context(let request) in documents { contexts.append(request) }
        try checkContexts(contexts)
        let rest = documents.filter { if case .context = $0 { false } else { true } }
        var result = ApplyResult(items: [])
        if !rest.isEmpty {
            let appsChanged: Bool
            (result, appsChanged) = try await write { try $0.apply(rest) }
            if appsChanged { await telemetry.configure(model.apps.values.map(\.spec)) }
        }
        do {
            result.items += try await applyContexts(contexts)
        } catch let error as VireoError where !rest.isEmpty {
            throw VireoError(
                error.code, "\(error.message) (the manifest's other documents were applied: \(result.items.count) of them)")
        }
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
            // A VM created on its own (no app) is adopted when the rest of its spec matches; its
            // restart policy is changed in place.
            var have = existing.spec
            var want = vm
            have.app = nil
            want.app = nil
            have.restartPolicy = nil
            want.restartPolicy = nil
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
            if let existing = state.vm(named: spec.name), existing.spec != spec,
                !VMSpecDifference.onlyRestartPolicy(existing.spec, spec)
            {
                throw VireoError(
                    .conflict,
                    "VirtualMachine '\(spec.name)' exists with a different spec (\(VMSpecDifference.describe(existing.spec, spec))); "
                        + "delete it first to recreate it")
            }
        }
        var manifestApps: [ApplicationSpec] = []
        var slos: [OpenSLODocument] = []
        var services: [String] = []
        for document in documents {
            switch document {
            case .application(let spec): manifestApps.append(spec)
            case .slo(let slo): slos.append(slo)
            case .service(let name): services.append(name)
            case .virtualMachine, .context: break
            }
        }
        // An OpenSLO Service is a Vireo application: it says nothing more, but must name one.
        for name in services where apps[name] == nil && !manifestApps.contains(where: { $0.name == name }) {
            throw VireoError.invalid(
                field: "Service '\(name)': metadata.name", value: "'\(name)'",
                "no such application; a Service is a Vireo application: apply its Application first (or in the same manifest)")
        }
        let applications = try mergeSLOs(slos, into: manifestApps)
        var differences: [String: [String]] = [:]
        for spec in applications { differences[spec.name] = try planApply(spec) }

        // Everything is checked: from here on nothing throws.
        var items: [ApplyResult.Item] = []
        for document in documents {
            guard case .virtualMachine(let spec) = document else { continue }
            if let existing = state.vm(named: spec.name) {
                if existing.spec == spec {
                    items.append(.init(kind: document.kind, name: spec.name, action: .unchanged))
                } else {
                    let change = VMSpecDifference.describe(existing.spec, spec)
                    setRestartPolicy(spec.restartPolicy, of: existing)
                    items.append(.init(kind: document.kind, name: spec.name, action: .updated, changes: [change]))
                }
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
        items += services.map { .init(kind: "Service", name: $0, action: .unchanged) }
        return (ApplyResult(items: items), appsChanged)
    }

    /// Changes a VM's restart policy in place: its record, and the desired state of its host
    /// (whose agent fences the VMs that restart elsewhere).
    mutating func setRestartPolicy(_ policy: RestartPolicy?, of vm: VirtualMachine) {
        var changed = vm
        changed.spec.restartPolicy = policy
        changed.updatedAt = now()
        commit(vms: [changed])
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
                if existing.spec.restartPolicy != vm.restartPolicy { setRestartPolicy(vm.restartPolicy, of: existing) }
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
            let names = Set(document.objectives.map(\.name))
            let alerts = (spec.alerts ?? []).filter { !names.contains($0.objective) } + document.alerts
            spec.alerts = alerts.isEmpty ? nil : alerts
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
    /// Adds a built-in management pack to an application (its exporter scraped, its metrics and
    /// objectives added), through the same checks and change record as an apply.
    public func applyPack(_ name: String, to app: String) async throws -> ApplyResult {
        guard let pack = Pack.builtIn(named: name) else { throw VireoError.notFound("pack", name) }
        guard let spec = model.apps[app]?.spec else { throw VireoError.notFound("application", app) }
        return try await apply([.application(try pack.apply(to: spec))])
    }
}
