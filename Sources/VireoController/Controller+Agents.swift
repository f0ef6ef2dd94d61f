import Foundation
import VireoAPI
import VireoModel

extension Controller: ControllerLink {
    public func deliver(_ samples: AgentSamples) async throws {
        _ = try await ingest(samples)
    }

    /// Registers (or re-registers) an agent's host. Hosts are keyed by name, so an agent that
    /// restarts gets its host, and its VMs, back.
    public func register(_ registration: AgentRegistration) async throws -> AgentRegistrationResponse {
        try ResourceName.validate(registration.name, field: "name")
        guard registration.fingerprint.cpus > 0, registration.fingerprint.memoryMiB > 0 else {
            throw VireoError.invalid(
                field: "fingerprint", value: "\(registration.fingerprint.cpus) cpus, \(registration.fingerprint.memoryMiB) MiB",
                "cpus and memory must be positive")
        }
        let host = try await write { $0.register(registration) }
        contextDesk.restart(host.id)
        logger.info("host registered", metadata: ["host": "\(host.name)", "driver": "\(host.fingerprint.driver)"])
        return AgentRegistrationResponse(
            hostID: host.id, heartbeatIntervalMs: Int(settings.heartbeatInterval.seconds * 1000),
            fenceAfterMs: Int(settings.fenceAfter.seconds * 1000))
    }

    /// For an agent known by its certificate (`certifiedAs`): refuses a host that is not the one
    /// its certificate names. An unknown host is `notFound`, as for any agent: it registers again.
    public func checkAgent(_ host: HostID, certifiedAs name: String) throws(VireoError) {
        guard let record = model.state.hosts[host] else {
            throw VireoError(.notFound, "host \(host) is not registered; register again")
        }
        guard record.name == name else {
            throw VireoError(.forbidden, "the certificate of host '\(name)' may not speak for host '\(record.name)'")
        }
    }

    /// A heartbeat of an agent known by its certificate, when `certifiedAs` is given: checked
    /// against it, then as any heartbeat.
    public func heartbeat(_ heartbeat: AgentHeartbeat, certifiedAs name: String?) async throws -> DesiredHostState {
        if let name { try checkAgent(heartbeat.hostID, certifiedAs: name) }
        return try await self.heartbeat(heartbeat)
    }

    /// Records what an agent reports and answers with the complete desired state of its host.
    public func heartbeat(_ heartbeat: AgentHeartbeat) async throws -> DesiredHostState {
        let host = try await write { try $0.record(heartbeat) }
        if let console = heartbeat.console, !console.isEmpty { await takeIn(console, from: host) }
        // Read before the state it describes: a change made in between moves it again.
        let generation = desiredWatch.generation(of: host)
        var desired = model.desiredState(for: host)
        takeContexts(heartbeat.contexts, from: host, into: &desired)
        // Only what changed travels: the same desired state as last time is answered by its
        // revision alone, which the agent already holds.
        let revision = sentDesired.revision(of: desired, for: host)
        desired.generation = generation
        desired.revision = revision
        // Copies of VMs restarted elsewhere while this host was lost: the agent stops them first.
        // One placed here again since (a pinned VM, or the host was the only one) is not released:
        // its copy here is the one to run.
        let pending = Set(model.state.hosts[host]?.releasePending ?? [])
        desired.release =
            heartbeat.instances.map(\.id).filter {
                pending.contains($0) && model.state.vms[$0]?.hostID != host
            }.nilIfEmpty
        if heartbeat.known == revision, desired.release == nil {
            return DesiredHostState(vms: [], generation: generation, revision: revision, unchanged: true)
        }
        return desired
    }

    /// Stores console output of the host's VMs. Output is not cluster state: it changes no version.
    /// If the store fails, the offsets stay, and the agent sends it again.
    private func takeIn(_ console: [ConsoleReport], from host: HostID) async {
        var chunks: [VMID: ConsoleChunk] = [:]
        for report in console where model.state.vms[report.id]?.hostID == host { chunks[report.id] = report.chunk }
        guard !chunks.isEmpty else { return }
        do {
            let offsets = try await store.appendConsole(chunks, retaining: ConsoleTail.defaultRetainedBytes)
            try await write { $0.setConsoleOffsets(offsets) }
        } catch {
            logger.error("cannot store console output", metadata: ["error": "\(error)"])
        }
    }

    public nonisolated func watch(host: HostID, after known: Int, timeout: Duration) async throws -> Int {
        let wait = min(timeout, .milliseconds(AgentWatch.maximumWaitMs))
        guard let generation = await desiredWatch.wait(host: host, after: known, timeout: wait) else {
            throw VireoError(.unavailable, "the controller is shutting down")
        }
        return generation
    }

    /// Marks hosts that stopped heartbeating as unreachable: their VMs are left as they are (the
    /// agent keeps running them without the controller). Hosts silent for `hostLostAfter` are
    /// lost: their VMs with `restartPolicy: always` start on other hosts.
    public func checkHostLiveness() async throws {
        let time = now()
        if !model.overdueHosts(at: time).isEmpty {
            let changed = try await write { $0.markUnreachable(at: time) }
            for host in changed { logger.warning("host unreachable", metadata: ["host": "\(host.name)"]) }
        }
        if model.state.vmCountByState[.failed, default: 0] > 0, !model.failedToRestart(at: time).isEmpty {
            try await write { $0.restartFailed(at: time) }
        }
        if !model.hostsToDeclareLost(at: time).isEmpty
            || model.state.hosts.values.contains(where: { $0.state == .lost && !model.leaving($0).isEmpty })
        {
            let restarted = try await write { $0.restartFromLostHosts(at: time) }
            for (vm, host) in restarted {
                logger.warning("restarting a VM from a lost host", metadata: ["vm": "\(vm)", "host": "\(host)"])
            }
        }
    }
}

extension ClusterModel {
    mutating func register(_ registration: AgentRegistration) -> HostRecord {
        let time = now()
        let host: HostRecord
        if var existing = state.host(named: registration.name) {
            let previous = existing.state
            existing.fingerprint = registration.fingerprint
            existing.address = registration.address
            existing.lastHeartbeatAt = time
            if previous != .ready {
                existing.state = .ready
                existing.stateChangedAt = time
            }
            host = existing
            commit(hosts: [host])
            if previous != .ready {
                events.publish(.hostState, name: host.name, from: previous.rawValue, to: HostState.ready.rawValue, at: time)
            }
        } else {
            host = HostRecord(
                id: .generate(), name: registration.name, state: .ready, fingerprint: registration.fingerprint,
                address: registration.address, registeredAt: time, lastHeartbeatAt: time, stateChangedAt: time)
            commit(hosts: [host])
        }
        events.publish(.hostRegistered, name: host.name, to: host.fingerprint.driver, at: time)
        return host
    }

    /// Applies the VM reports of a heartbeat; returns the host.
    mutating func record(_ heartbeat: AgentHeartbeat) throws -> HostID {
        guard var host = state.hosts[heartbeat.hostID] else {
            throw VireoError(.notFound, "host \(heartbeat.hostID) is not registered; register again")
        }
        let time = now()
        var hostChanges: [HostRecord] = []
        let previous = host.state
        host.lastHeartbeatAt = time
        if host.state != .ready {
            host.state = .ready
            host.stateChangedAt = time
            hostChanges.append(host)
        }
        // Migrations first: a VM that has just moved is no longer this host's to observe.
        applyMigrationReports(heartbeat, at: time)
        recordUsage(heartbeat, at: time)
        if let contexts = heartbeat.contexts {
            var hold = ClusterState.Allocation()
            for context in contexts.items where context.state != .closed {
                hold.cpus += context.cpus
                hold.memoryMiB += context.memoryMiB
                hold.vms += 1
            }
            for pool in contexts.pools {
                hold.cpus += pool.cpus * pool.target
                hold.memoryMiB += pool.memoryMiB * pool.target
                hold.vms += pool.target
            }
            holdForContexts(hold, on: host.id)
        }
        let reports = Dictionary(heartbeat.instances.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        if let pending = host.releasePending {
            // Done with: released (the host no longer reports them), or placed here again.
            let left = pending.filter { reports[$0] != nil && state.vms[$0]?.hostID != host.id }
            if left != pending {
                host.releasePending = left.nilIfEmpty
                if hostChanges.isEmpty { hostChanges.append(host) } else { hostChanges[0] = host }
            }
        }
        var updated: [VirtualMachine] = []
        var removed: [VirtualMachine] = []
        for id in state.vmsByHost[host.id] ?? [] {
            guard let vm = state.vms[id] else { continue }
            switch observe(vm, report: reports[id], at: time) {
            case .some(let new) where new != vm: updated.append(new)
            case .some: break
            case .none: removed.append(vm)
            }
        }
        if hostChanges.isEmpty && updated.isEmpty && removed.isEmpty {
            // Liveness alone is kept in memory: writing every heartbeat would cost a disk write
            // per host per second for no durable value.
            touch(host)
        } else {
            commit(vms: updated, deleting: removed.map(\.id), hosts: [host])
        }
        if previous != .ready {
            events.publish(.hostState, name: host.name, from: previous.rawValue, to: HostState.ready.rawValue, at: time)
        }
        for vm in removed { events.publish(.vmDeleted, name: vm.name, at: time) }
        return host.id
    }

    func desiredState(for host: HostID) -> DesiredHostState {
        // A VM moving cold is the migration's to stop and hand over, not the host's to keep running.
        let vms = (state.vmsByHost[host] ?? []).compactMap { state.vms[$0] }
            .filter { migrations.isEmpty || migrations.active(of: $0.id)?.kind != .cold }
            .sorted { $0.name < $1.name }
        let storage = state.hosts[host]?.fingerprint.sharedStorage
        return DesiredHostState(
            vms: vms.map {
                DesiredVM(
                    id: $0.id, name: $0.name, image: $0.spec.image, cpus: $0.spec.cpus, memoryMiB: $0.spec.memoryMiB,
                    intent: $0.intent, generation: $0.generation, consoleOffset: consoleOffsets[$0.id], app: $0.spec.app,
                    telemetry: telemetrySpec(of: $0), diskMiB: $0.spec.diskMiB,
                    restartsElsewhere: $0.spec.restartsElsewhere ? true : nil,
                    takesSharedDisk: $0.diskInSharedStorage.map { $0 == storage } == true ? true : nil)
            },
            migrations: migrations.isEmpty ? nil : migrationOrders(for: host).nilIfEmpty)
    }

    /// The record after taking in what the agent reported; nil when the record should go
    /// (the VM was being deleted and the agent no longer has it).
    mutating func observe(_ vm: VirtualMachine, report: InstanceReport?, at time: Date) -> VirtualMachine? {
        var vm = vm
        switch vm.intent {
        case .deleted:
            return report == nil ? nil : vm
        case .stopped:
            switch report?.state {
            case nil, .stopped: transition(&vm, to: .stopped, message: nil, at: time)
            case .failed: transition(&vm, to: .stopped, message: report?.message, at: time)
            case .running, .starting, .stopping: transition(&vm, to: .stopping, message: nil, at: time)
            }
        case .running:
            // Its new host has it: the disk it took over is its own now.
            if report != nil, vm.diskInSharedStorage != nil {
                vm.diskInSharedStorage = nil
                vm.updatedAt = time
            }
            guard let report else {
                if vm.state == .running || vm.state == .stopping {
                    transition(&vm, to: .scheduled, message: "the host no longer reports this VM; starting it again", at: time)
                }
                return vm
            }
            // A report about an older request must not override the newer one (for example a
            // failure of the start before the user's latest `vm start`).
            let current = report.generation >= vm.generation
            switch report.state {
            case .running: transition(&vm, to: .running, message: nil, at: time)
            case .starting: transition(&vm, to: .starting, message: nil, at: time)
            case .stopping where current: transition(&vm, to: .stopping, message: report.message, at: time)
            case .stopped where current:
                transition(&vm, to: .stopped, message: report.message ?? "the guest powered off", at: time)
            case .failed where current: transition(&vm, to: .failed, message: report.message, at: time)
            case .stopping, .stopped, .failed: break
            }
            // Only a running VM has an address (`transition` clears it otherwise).
            let address = vm.state == .running ? report.address : nil
            if vm.address != address {
                vm.address = address
                vm.updatedAt = time
            }
            if vm.state == .running, let boot = report.bootMs, vm.lastBootMs != boot {
                vm.lastBootMs = boot
                vm.updatedAt = time
            }
        }
        return vm
    }

    /// Marks the hosts whose last heartbeat is older than the timeout unreachable; returns them.
    /// Ready hosts whose last heartbeat is older than the timeout.
    func overdueHosts(at time: Date) -> [HostRecord] {
        state.hosts.values.filter {
            $0.state == .ready && time.timeIntervalSince($0.lastHeartbeatAt) > settings.hostTimeout.seconds
        }
    }

    mutating func markUnreachable(at time: Date) -> [HostRecord] {
        let timeout = settings.hostTimeout.seconds
        let changed = overdueHosts(at: time).map { host in
            var host = host
            host.state = .unreachable
            host.stateChangedAt = time
            return host
        }
        guard !changed.isEmpty else { return [] }
        commit(hosts: changed)
        for host in changed {
            events.publish(
                .hostState, name: host.name, from: HostState.ready.rawValue, to: HostState.unreachable.rawValue,
                message: "no heartbeat for \(Int(timeout)) s", at: time)
        }
        return changed
    }

    /// How long a failed VM with `restartPolicy: always` stays failed before it is started again.
    static let restartDelay: TimeInterval = 5

    /// Failed VMs with `restartPolicy: always` on a ready host, failed for `restartDelay`.
    func failedToRestart(at time: Date) -> [VirtualMachine] {
        state.vms.values.filter {
            $0.state == .failed && $0.intent == .running && $0.spec.restartsElsewhere
                && time.timeIntervalSince($0.stateChangedAt) >= Self.restartDelay
                && $0.hostID.flatMap { state.hosts[$0]?.state } == .ready
        }
    }

    /// Starts again, on their host, the VMs that `restartPolicy: always` keeps running: a start
    /// that failed (for one restarted from a lost host, because the lost host's frozen hypervisor
    /// still held the disk's lock) is tried every `restartDelay`.
    mutating func restartFailed(at time: Date) {
        for var vm in failedToRestart(at: time) {
            vm.generation += 1
            vm.updatedAt = time
            let why = vm.message.map { ": \($0)" } ?? ""
            transition(&vm, to: .starting, message: "restarting (restartPolicy: always) after a failure\(why)", at: time)
            commit(vms: [vm])
        }
    }

    /// Unreachable hosts silent for longer than `hostLostAfter`.
    func hostsToDeclareLost(at time: Date) -> [HostRecord] {
        state.hosts.values.filter {
            $0.state == .unreachable && time.timeIntervalSince($0.lastHeartbeatAt) > settings.hostLostAfter.seconds
        }
    }

    /// The VMs on `host` that start elsewhere once it is lost: `restartPolicy: always`, meant to
    /// run, not moving, and not pinned to it (such a VM has nowhere else to go: it waits).
    func leaving(_ host: HostRecord) -> [VirtualMachine] {
        (state.vmsByHost[host.id] ?? []).compactMap { state.vms[$0] }.filter {
            $0.spec.restartsElsewhere && $0.spec.host != host.name && $0.intent == .running
                && migrations.active(of: $0.id) == nil
        }
    }

    /// Declares silent hosts lost, and starts the VMs on lost hosts that restart elsewhere
    /// (`restartPolicy: always`, meant to run, not moving) on other hosts: placed at once where
    /// one can take them, else `pending` until one can. Their lost host's agent fenced itself
    /// before this (`ControllerSettings.fenceAfter`); if it returns it is told to release its
    /// copies. Returns the VMs restarted, with the host each left.
    mutating func restartFromLostHosts(at time: Date) -> [(vm: String, host: String)] {
        for var host in hostsToDeclareLost(at: time) {
            host.state = .lost
            host.stateChangedAt = time
            commit(hosts: [host])
            events.publish(
                .hostState, name: host.name, from: HostState.unreachable.rawValue, to: HostState.lost.rawValue,
                message: "no heartbeat for \(Int(time.timeIntervalSince(host.lastHeartbeatAt))) s; its agent, if it runs, "
                    + "stopped its VMs that restart elsewhere after \(DurationText.format(settings.fenceAfter.seconds)) cut off",
                at: time)
        }
        var restarted: [(vm: String, host: String)] = []
        for var host in state.hosts.values where host.state == .lost {
            let leaving = leaving(host)
            guard !leaving.isEmpty else { continue }
            for var vm in leaving.sorted(by: { $0.createdAt < $1.createdAt }) {
                vm.hostID = nil
                vm.generation += 1
                vm.updatedAt = time
                vm.diskInSharedStorage = host.fingerprint.sharedStorage
                transition(&vm, to: .pending, message: "host \(host.name) was lost; starting elsewhere", at: time)
                _ = place(&vm, at: time, publish: true)
                commit(vms: [vm])
                restarted.append((vm.name, host.name))
            }
            host.releasePending = Set(host.releasePending ?? []).union(leaving.map(\.id)).sorted()
            commit(hosts: [host])
        }
        return restarted
    }
}

extension Array {
    var nilIfEmpty: Self? { isEmpty ? nil : self }
}
