import VireoModel
import VireoPlacement

/// The controller's in-memory copy of the store, with the indexes the API and placement need.
/// Only `Controller` mutates it, and only after the store has accepted the change.
struct ClusterState {
    struct Allocation: Equatable {
        var cpus = 0
        var memoryMiB = 0
        var vms = 0
    }

    private(set) var vms: [VMID: VirtualMachine] = [:]
    private(set) var vmIDByName: [String: VMID] = [:]
    private(set) var hosts: [HostID: HostRecord] = [:]
    private(set) var hostIDByName: [String: HostID] = [:]
    private(set) var vmsByHost: [HostID: Set<VMID>] = [:]
    /// CPU and memory held on each host by VMs whose intent is `running`, plus VM counts.
    private(set) var allocation: [HostID: Allocation] = [:]
    /// What each host's desktop contexts (and its pool of ready ones) hold, as it last reported:
    /// placement counts it as taken.
    private(set) var contextHold: [HostID: Allocation] = [:]
    private(set) var vmCountByState: [VMState: Int] = [:]
    private(set) var hostCountByState: [HostState: Int] = [:]
    /// Placement's view of the hosts, kept between decisions: built at the first placement after
    /// a host joined or changed (its state, its fingerprint), and one host's reserved capacity
    /// changed in place as VMs come and go, so that placing a VM costs one pass over the hosts,
    /// not a sort and a copy of them.
    private var placement: (settings: PlacementSettings, cluster: PlacementCluster, index: [HostID: Int])?
    /// Bumped on every change; lets readers cache what they derived from the state.
    private(set) var version = 0

    func vm(named name: String) -> VirtualMachine? {
        vmIDByName[name].flatMap { vms[$0] }
    }

    func host(named name: String) -> HostRecord? {
        hostIDByName[name].flatMap { hosts[$0] }
    }

    /// Replaces (or inserts, or with `nil` removes) a VM, keeping every index consistent. Its
    /// placement explanation is not kept: it is written to the store, which gives it to the view
    /// that shows it.
    mutating func put(_ new: VirtualMachine?, replacing id: VMID) {
        let new = new?.withoutPlacement
        let old = vms[id]
        if let old {
            account(old, sign: -1)
            if new == nil || new!.name != old.name { vmIDByName[old.name] = nil }
            if let host = old.hostID { vmsByHost[host]?.remove(id) }
        }
        if let new {
            vms[id] = new
            if old?.name != new.name { vmIDByName[new.name] = id }
            if let host = new.hostID { vmsByHost[host, default: []].insert(id) }
            account(new, sign: 1)
        } else {
            vms[id] = nil
        }
        version += 1
    }

    mutating func put(_ host: HostRecord) {
        let old = hosts[host.id]
        if let old, old.name != host.name { hostIDByName[old.name] = nil }
        if old?.name != host.name || old?.state != host.state || old?.fingerprint != host.fingerprint {
            placement = nil
        }
        if let old { hostCountByState[old.state, default: 0] -= 1 }
        hostCountByState[host.state, default: 0] += 1
        hosts[host.id] = host
        hostIDByName[host.name] = host.id
        version += 1
    }

    private mutating func account(_ vm: VirtualMachine, sign: Int) {
        vmCountByState[vm.state, default: 0] += sign
        guard let host = vm.hostID else { return }
        var a = allocation[host, default: Allocation()]
        a.vms += sign
        if vm.intent == .running {
            a.cpus += sign * vm.spec.cpus
            a.memoryMiB += sign * vm.spec.memoryMiB
        }
        allocation[host] = a
        updateReserved(host)
    }

    mutating func setContextHold(_ hold: Allocation, on host: HostID) {
        contextHold[host] = hold.vms == 0 ? nil : hold
        updateReserved(host)
        version += 1
    }

    /// What VMs and contexts hold on `host`, in the kept placement view.
    private mutating func updateReserved(_ host: HostID) {
        guard let i = placement?.index[host] else { return }
        let (vcpus, memoryMiB) = reserved(on: host)
        placement?.cluster.setReserved(host: i, vcpus: vcpus, memoryMiB: Double(memoryMiB))
    }

    private func reserved(on host: HostID) -> (cpus: Int, memoryMiB: Int) {
        let a = allocation[host] ?? Allocation()
        let held = contextHold[host] ?? Allocation()
        return (a.cpus + held.cpus, a.memoryMiB + held.memoryMiB)
    }

    /// `placementCluster(settings:)`, kept for the next decision.
    mutating func keptPlacementCluster(settings: PlacementSettings) -> PlacementCluster {
        if let placement, placement.settings == settings { return placement.cluster }
        let cluster = builtPlacementCluster(settings: settings)
        placement = (
            settings, cluster, Dictionary(uniqueKeysWithValues: cluster.hosts.enumerated().map { ($1.id, $0) })
        )
        return cluster
    }

    /// Placement's view of every host (the VMs' allocations and the contexts' hold reserved
    /// capacity), sorted by name so ties break the same way every time.
    func placementCluster(settings: PlacementSettings) -> PlacementCluster {
        if let placement, placement.settings == settings { return placement.cluster }
        return builtPlacementCluster(settings: settings)
    }

    /// `placementCluster(settings:)` made from the records, ignoring the one kept.
    func builtPlacementCluster(settings: PlacementSettings) -> PlacementCluster {
        let hosts = hosts.values.sorted { $0.name < $1.name }.map { host in
            let (cpus, memoryMiB) = reserved(on: host.id)
            return PlacementHost(
                id: host.id, name: host.name, state: host.state, cores: host.fingerprint.cpus,
                memoryMiB: Double(host.fingerprint.memoryMiB), capabilities: CapabilitySet(host.fingerprint.capabilities),
                reservedVCPUs: cpus, reservedMemoryMiB: Double(memoryMiB), family: host.fingerprint.migrationFamily)
        }
        return PlacementCluster(settings: settings, hosts: hosts)
    }
}
