import Synchronization
import VireoAPI
import VireoModel

/// Names in order, for stable pagination: binary search to find, an array to page.
struct SortedNames {
    private(set) var names: [String] = []

    init(_ names: [String] = []) { self.names = names.sorted() }

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

/// What a page of the listing was made from (`VMListIndex.stampedPage`): the page is still what
/// the index would give while no change since `seq` touched a name it covers.
public struct VMPageStamp: Sendable, Equatable {
    public fileprivate(set) var seq: UInt64
    fileprivate let after: String?
    /// The page's last name; nil when it is empty.
    fileprivate let last: String?
    /// No page follows it: a name inserted after `last` joins it.
    fileprivate let complete: Bool

    /// Whether a change to `name` changes the page.
    fileprivate func covers(_ name: String) -> Bool {
        if let after, name <= after { return false }
        if complete { return true }
        return last.map { name <= $0 } ?? true
    }
}

/// The VM listing (`GET /v1/vms`), kept by the writer beside the committed model so that a list
/// takes a lock for a page, not a turn on the controller's actor: a heartbeat from a host with
/// thousands of VMs holds the actor for milliseconds, and every list request queued behind it
/// waited as long. Changed only after a commit, with the VMs and hosts it changed, so it shows
/// exactly the committed model's VMs, by name. It is the only ordered index of VM names.
///
/// It also remembers the names of its latest changes, so that an encoded page can be kept while
/// no VM in it (nor one that would join it) changed: while VMs are created elsewhere in the order,
/// every change is a new version of the cluster, and pages were made again at each.
final class VMListIndex: Sendable {
    private struct Index {
        var names = SortedNames()
        var views: [String: VMView] = [:]
        var nameByID: [VMID: String] = [:]
        var hostNames: [HostID: String] = [:]
        /// One more for each name that changed (its view, or its being there).
        var seq: UInt64 = 0
        /// The names changed after `forgotten`, with their `seq`, oldest first.
        var recent: [(seq: UInt64, name: String)] = []
        /// Changes up to this one are no longer listed: a stamp this old is not current.
        var forgotten: UInt64 = 0

        mutating func changed(_ name: String) {
            seq += 1
            recent.append((seq, name))
            if recent.count > VMListIndex.remembered {
                recent.removeFirst(VMListIndex.remembered / 2)
                forgotten = recent[0].seq - 1
            }
        }
    }
    /// At most this many changes are remembered (at least half as many).
    static let remembered = 4096
    private let index = Mutex(Index())

    init(_ model: ClusterModel) { rebuild(model) }

    func page(after cursor: String?, limit: Int) -> VMPage { stampedPage(after: cursor, limit: limit).page }

    /// A page, and what it was made from.
    func stampedPage(after cursor: String?, limit: Int) -> (page: VMPage, stamp: VMPageStamp) {
        index.withLock { index in
            let (names, next) = index.names.page(after: cursor, limit: limit)
            let page = VMPage(items: names.compactMap { index.views[$0] }, next: next)
            return (page, VMPageStamp(seq: index.seq, after: cursor, last: names.last, complete: next == nil))
        }
    }

    /// The stamp moved up to now if its page is still what the index would give, else nil.
    func current(_ stamp: VMPageStamp) -> VMPageStamp? {
        index.withLock { index in
            if stamp.seq == index.seq { return stamp }
            guard stamp.seq >= index.forgotten, stamp.seq < index.seq else { return nil }
            for change in index.recent.reversed() {
                if change.seq <= stamp.seq { break }
                if stamp.covers(change.name) { return nil }
            }
            var now = stamp
            now.seq = index.seq
            return now
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
                    index.changed(old)
                }
                guard let view else { continue }
                if index.nameByID[id] == nil {
                    index.names.insert(view.name)
                    index.nameByID[id] = view.name
                }
                if index.views[view.name] != view {
                    index.views[view.name] = view
                    index.changed(view.name)
                }
            }
        }
    }

    private func rebuild(_ model: ClusterModel) {
        var fresh = Index()
        fresh.names = SortedNames(model.state.vms.values.map(\.name))
        for vm in model.state.vms.values {
            fresh.views[vm.name] = model.view(vm, withPlacement: false)
            fresh.nameByID[vm.id] = vm.name
        }
        for host in model.state.hosts.values { fresh.hostNames[host.id] = host.name }
        index.withLock { index in
            // Every page made before is stale.
            fresh.seq = index.seq + 1
            fresh.forgotten = fresh.seq
            index = fresh
        }
    }
}
