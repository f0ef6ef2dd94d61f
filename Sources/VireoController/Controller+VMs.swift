import Foundation
import VireoAPI
import VireoModel
import VireoPlacement

/// VM lifecycle: create, start, stop, delete, placement of pending VMs.
extension Controller {
    /// Creates a VM and places it at once if some host can take it; otherwise it stays `pending`
    /// with the reasons, and is placed when a host can.
    public func createVM(_ spec: VMSpec) async throws -> VMView {
        try await write { try $0.createVM(spec) }
    }

    public func startVM(_ reference: String) async throws -> VMView {
        try await write { try $0.startVM(reference) }
    }

    public func stopVM(_ reference: String) async throws -> VMView {
        try await write { try $0.stopVM(reference) }
    }

    /// Deletes a VM. A VM on a host stays `deleting` until its agent has removed it; one that
    /// never reached a host is removed at once. Returns the record as it was last.
    public func deleteVM(_ reference: String) async throws -> VMView {
        try await write { try $0.deleteVM(reference) }
    }

    /// The console output the controller keeps for a VM (empty when none has arrived yet).
    public func console(_ reference: String) async throws -> ConsoleTail {
        let vm = try model.lookupVM(reference)
        return try await store.consoleTail(of: vm.id) ?? ConsoleTail()
    }

    /// Places every pending VM that wants to run, oldest first. Without hosts there is nowhere to
    /// place them: once their reason says so (VMs created since were told so when created), the
    /// passes stop until a host comes.
    public func schedulePending() async throws {
        let withoutHosts = model.state.hosts.isEmpty
        if withoutHosts && passedWithoutHosts { return }
        guard model.state.vmCountByState[.pending, default: 0] > 0,
            model.state.vms.values.contains(where: { $0.state == .pending && $0.intent == .running })
        else {
            passedWithoutHosts = withoutHosts
            return
        }
        try await write { $0.schedulePending() }
        passedWithoutHosts = withoutHosts
    }
}

extension ClusterModel {
    mutating func createVM(_ spec: VMSpec) throws -> VMView {
        guard state.vm(named: spec.name) == nil else {
            throw VireoError(.conflict, "a VM named '\(spec.name)' already exists")
        }
        let time = now()
        var vm = VirtualMachine(
            id: .generate(), spec: spec, state: .pending, intent: .running, createdAt: time, updatedAt: time,
            stateChangedAt: time)
        let placed = place(&vm, at: time, publish: false)
        insert(vm)
        events.publish(.vmCreated, name: vm.name, to: vm.state.rawValue, message: vm.message, at: time)
        if placed { events.publish(.vmPlaced, name: vm.name, to: vm.placement?.chosenHost, at: time) }
        return view(vm)
    }

    mutating func startVM(_ reference: String) throws -> VMView {
        var vm = try lookupVM(reference)
        if vm.intent == .deleted { throw VireoError(.conflict, "VM '\(vm.name)' is being deleted") }
        if vm.intent == .running && vm.state != .failed && vm.state != .stopped { return view(vm) }
        let time = now()
        if let hostID = vm.hostID, vm.intent != .running, let host = state.hosts[hostID] {
            // A stopped VM released its CPU and memory; it must fit again on its host.
            let cluster = state.placementCluster(settings: settings.placement)
            let verdict = cluster.hosts.firstIndex { $0.id == hostID }.map {
                InitialPlacement.evaluate(PlacementVM(vm, pinned: false), on: $0, in: cluster)
            }
            if let reason = verdict?.filtered, reason.kind == "capacity" {
                throw VireoError(.failedPrecondition, "VM '\(vm.name)' cannot start on host '\(host.name)': \(reason)")
            }
        }
        vm.intent = .running
        vm.generation += 1
        vm.updatedAt = time
        if vm.hostID == nil {
            transition(&vm, to: .pending, message: nil, at: time)
            _ = place(&vm, at: time, publish: true)
        } else if vm.state != .scheduled {
            transition(&vm, to: .starting, message: nil, at: time)
        }
        commit(vms: [vm])
        return view(vm)
    }

    mutating func stopVM(_ reference: String) throws -> VMView {
        var vm = try lookupVM(reference)
        if vm.intent == .deleted { throw VireoError(.conflict, "VM '\(vm.name)' is being deleted") }
        if vm.intent == .stopped { return view(vm) }
        try refuseWhileMigrating(vm)
        let time = now()
        vm.intent = .stopped
        vm.generation += 1
        vm.updatedAt = time
        switch vm.state {
        case .pending, .failed, .stopped: transition(&vm, to: .stopped, message: nil, at: time)
        default: transition(&vm, to: .stopping, message: nil, at: time)
        }
        commit(vms: [vm])
        return view(vm)
    }

    mutating func deleteVM(_ reference: String) throws -> VMView {
        var vm = try lookupVM(reference)
        try refuseWhileMigrating(vm)
        let time = now()
        if markDeleted(&vm, at: time) {
            commit(deleting: [vm.id])
            events.publish(.vmDeleted, name: vm.name, at: time)
        } else {
            commit(vms: [vm])
        }
        return view(vm)
    }

    /// Marks a VM for deletion; returns whether it can go at once (it never reached a host).
    mutating func markDeleted(_ vm: inout VirtualMachine, at time: Date) -> Bool {
        if vm.intent != .deleted {
            vm.intent = .deleted
            vm.generation += 1
        }
        transition(&vm, to: .deleting, message: nil, at: time)
        return vm.hostID == nil
    }

    /// Runs placement for a pending VM. Returns whether it found a host.
    @discardableResult
    mutating func place(_ vm: inout VirtualMachine, at time: Date, publish: Bool) -> Bool {
        let cluster = keptPlacementCluster()
        let request = PlacementVM(vm, pinned: true)
        let (chosen, explanation) = InitialPlacement.placeExplained(request, in: cluster, decidedAt: time)
        vm.placement = explanation
        guard let chosen else {
            // Why no host fits, from every host's verdict (only now: placing builds none).
            let message = Self.unplacedMessage(InitialPlacement.place(request, in: cluster), pinned: vm.spec.host)
            if vm.message != message { vm.message = message }
            return false
        }
        vm.hostID = chosen
        if publish {
            transition(&vm, to: .scheduled, message: nil, at: time)
            events.publish(.vmPlaced, name: vm.name, to: vm.placement?.chosenHost, at: time)
        } else {
            vm.state = .scheduled
            vm.message = nil
        }
        return true
    }

    static func unplacedMessage(_ decision: PlacementDecision, pinned: String?) -> String {
        if decision.verdicts.isEmpty { return "no hosts registered" }
        if let pinned, !decision.verdicts.contains(where: { $0.hostName == pinned }) {
            return "pinned host '\(pinned)' is not registered"
        }
        var counts: [String: Int] = [:]
        for verdict in decision.verdicts {
            if let reason = verdict.filtered, case .notPinnedHost = reason { continue }
            counts[verdict.filtered.map { "\($0)" } ?? "scored", default: 0] += 1
        }
        let reasons = counts.sorted { $0.key < $1.key }.map { "\($0.value)× \($0.key)" }
        return "no host can take the VM: " + reasons.joined(separator: "; ")
    }

    mutating func schedulePending() {
        let pending = state.vms.values.filter { $0.state == .pending && $0.intent == .running }
            .sorted { $0.createdAt < $1.createdAt }
        guard !pending.isEmpty else { return }
        let time = now()
        for var vm in pending {
            let before = vm
            place(&vm, at: time, publish: true)
            // Only write when something a user can see changed (a host, or a new reason).
            if vm.hostID != before.hostID || vm.message != before.message {
                vm.updatedAt = time
                commit(vms: [vm])
            }
        }
    }

    /// A migrating VM is being handed between two hosts: stopping or deleting it now would leave
    /// one of them with a half-made copy.
    func refuseWhileMigrating(_ vm: VirtualMachine) throws(VireoError) {
        if let migration = migrations.active(of: vm.id) {
            throw VireoError(
                .conflict,
                "VM '\(vm.name)' is migrating (migration \(migration.id), \(migration.state.rawValue)); try again when it ends")
        }
    }
}

extension PlacementVM {
    /// A VM as placement sees it; `pinned`: keep the host its spec pins it to.
    init(_ vm: VirtualMachine, pinned: Bool) {
        self.init(
            id: vm.id, name: vm.name, vcpus: vm.spec.cpus, memoryMiB: Double(vm.spec.memoryMiB),
            pinnedHost: pinned ? vm.spec.host : nil)
    }
}
