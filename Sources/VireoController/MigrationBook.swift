import Foundation
import VireoModel

/// The migrations the controller keeps in memory: the open ones (under way, or not yet settled by
/// their destination), which heartbeats look at, the newest finished ones, and each VM's last
/// completed move (what rebalancing's cool-down needs). Older history is only in the store, so
/// memory does not grow with the cluster's age.
struct MigrationBook {
    /// Finished migrations kept in memory, besides the open ones and each VM's last move.
    static let recentCapacity = 1_000

    private(set) var byID: [MigrationID: Migration] = [:]
    private(set) var openIDs: Set<MigrationID> = []
    /// Finished migrations in the order they finished (IDs may repeat; trimming skips stale ones).
    private var finished: [MigrationID] = []
    /// Each VM's last completed migration.
    private(set) var lastCompleted: [VMID: Migration] = [:]
    /// The TLS credentials of live migrations under way, for each end: in memory only, never in
    /// the store, and gone once the migration ends.
    private(set) var credentials: [MigrationID: MigrationCredentialPair] = [:]

    init() {}

    subscript(id: MigrationID) -> Migration? { byID[id] }

    var isEmpty: Bool { byID.isEmpty }
    /// The migrations in memory: open and recent.
    var all: Dictionary<MigrationID, Migration>.Values { byID.values }
    var open: [Migration] { openIDs.compactMap { byID[$0] } }

    /// Records `migration`; one of a VM that is gone has nobody left to tell, so it is not open.
    mutating func put(_ migration: Migration, vmExists: Bool) {
        let wasKept = byID[migration.id] != nil
        byID[migration.id] = migration
        if migration.isOpen && vmExists {
            openIDs.insert(migration.id)
        } else {
            if openIDs.remove(migration.id) != nil || !wasKept { finished.append(migration.id) }
        }
        if migration.state == .completed, vmExists,
            (lastCompleted[migration.vmID]?.requestedAt ?? .distantPast) <= migration.requestedAt
        {
            lastCompleted[migration.vmID] = migration
        }
        if !migration.state.isActive { credentials[migration.id] = nil }
        trim()
    }

    mutating func keep(_ pair: MigrationCredentialPair, for id: MigrationID) {
        guard byID[id]?.state.isActive == true else { return }
        credentials[id] = pair
    }

    /// Forgets a deleted VM's last move.
    mutating func forget(vm: VMID) { lastCompleted[vm] = nil }

    /// The migration under way for `vm`, if any.
    func active(of vm: VMID) -> Migration? {
        openIDs.lazy.compactMap { self.byID[$0] }.first { $0.vmID == vm && $0.state.isActive }
    }

    /// Drops the oldest finished migrations beyond the capacity, a quarter at a time.
    private mutating func trim() {
        guard finished.count > Self.recentCapacity + Self.recentCapacity / 4 else { return }
        let drop = finished.count - Self.recentCapacity
        for id in finished.prefix(drop) where !openIDs.contains(id) { byID[id] = nil }
        finished.removeFirst(drop)
    }
}
