import VireoModel

/// The migrations the controller knows, with the set of open ones (under way, or not yet settled
/// by their destination) that heartbeats look at, so a long history costs them nothing.
struct MigrationBook {
    private(set) var byID: [MigrationID: Migration] = [:]
    private(set) var openIDs: Set<MigrationID> = []

    init() {}

    subscript(id: MigrationID) -> Migration? { byID[id] }

    var isEmpty: Bool { byID.isEmpty }
    var all: Dictionary<MigrationID, Migration>.Values { byID.values }
    var open: [Migration] { openIDs.compactMap { byID[$0] } }

    /// Records `migration`; one of a VM that is gone has nobody left to tell, so it is not open.
    mutating func put(_ migration: Migration, vmExists: Bool) {
        byID[migration.id] = migration
        if migration.isOpen && vmExists {
            openIDs.insert(migration.id)
        } else {
            openIDs.remove(migration.id)
        }
    }

    /// The migration under way for `vm`, if any.
    func active(of vm: VMID) -> Migration? {
        openIDs.lazy.compactMap { self.byID[$0] }.first { $0.vmID == vm && $0.state.isActive }
    }
}
