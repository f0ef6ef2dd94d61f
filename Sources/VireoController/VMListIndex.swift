import Synchronization
import VireoAPI
import VireoModel

/// Names in order, for stable pagination: binary search to find, an array to page.
struct SortedNames {
    private(set) var names: [String] = []

    mutating func insert(_ name: String) { names.insert(name, at: insertionIndex(of: name)) }

    mutating func remove(_ name: String) {
        let i = insertionIndex(of: name)
        if i < names.count && names[i] == name { names.remove(at: i) }
    }

    /// At most `limit` names after `cursor` (exclusive), and the cursor of the page after them
    /// (nil when they are the last).
    func page(after cursor: String?, limit: Int) -> (names: ArraySlice<String>, next: String?) {
        let start = cursor.map { insertionIndex(of: $0, after: true) } ?? 0
        let slice = names[start..<min(names.count, start + limit)]
        return (slice, slice.count == limit && slice.last != names.last ? slice.last : nil)
    }

    /// Binary search: the first index whose name is >= `name` (or > `name` when `after`).
    private func insertionIndex(of name: String, after: Bool = false) -> Int {
        var low = 0
        var high = names.count
        while low < high {
            let mid = (low + high) / 2
            if names[mid] < name || (after && names[mid] == name) { low = mid + 1 } else { high = mid }
        }
        return low
    }
}

/// The VM listing (`GET /v1/vms`), kept by the writer beside the committed model so that a list
/// takes a lock for a page, not a turn on the controller's actor: a heartbeat from a host with
/// thousands of VMs holds the actor for milliseconds, and every list request queued behind it
/// waited as long. Changed only after a commit, with the VMs and hosts it changed, so it shows
/// exactly the committed model's VMs, by name. It is the only ordered index of VM names.
final class VMListIndex: Sendable {
    private struct Index {
        var names = SortedNames()
        var views: [String: VMView] = [:]
        var nameByID: [VMID: String] = [:]
        var hostNames: [HostID: String] = [:]
    }
    private let index = Mutex(Index())

    init(_ model: ClusterModel) { rebuild(model) }

    func page(after cursor: String?, limit: Int) -> VMPage {
        index.withLock { index in
            let (names, next) = index.names.page(after: cursor, limit: limit)
            return VMPage(items: names.compactMap { index.views[$0] }, next: next)
        }
    }

    /// Takes in what a commit changed: these VMs (each as the model now has it, or gone) and hosts.
    func apply(vms changed: some Sequence<VMID>, hosts: some Sequence<HostRecord>, model: ClusterModel) {
        let renamed = index.withLock { index in
            hosts.contains { host in index.hostNames[host.id].map { $0 != host.name } ?? false }
        }
        // A host's new name is in the view of every VM on it: rare enough to start again.
        if renamed { return rebuild(model) }
        let views = changed.map { id in (id, model.state.vms[id].map { model.view($0, withPlacement: false) }) }
        index.withLock { index in
            for host in hosts { index.hostNames[host.id] = host.name }
            for (id, view) in views {
                if let old = index.nameByID[id], old != view?.name {
                    index.names.remove(old)
                    index.views[old] = nil
                    index.nameByID[id] = nil
                }
                guard let view else { continue }
                if index.nameByID[id] == nil {
                    index.names.insert(view.name)
                    index.nameByID[id] = view.name
                }
                index.views[view.name] = view
            }
        }
    }

    private func rebuild(_ model: ClusterModel) {
        var fresh = Index()
        for vm in model.state.vms.values {
            fresh.names.insert(vm.name)
            fresh.views[vm.name] = model.view(vm, withPlacement: false)
            fresh.nameByID[vm.id] = vm.name
        }
        for host in model.state.hosts.values { fresh.hostNames[host.id] = host.name }
        index.withLock { $0 = fresh }
    }
}
