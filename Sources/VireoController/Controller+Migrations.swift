import Foundation
import VireoAPI
import VireoModel
import VireoPlacement

/// Live migration, orchestrated level-triggered like everything else: the controller records the
/// migration; each heartbeat answer tells the destination to prepare and, once it listens, the
/// source to send; agents report back; the VM changes host when the source reports completion
/// (or the destination reports the VM running there, if the source's word was lost).
extension Controller {
    /// Starts a live move. `storage` nil: the disk is shared where both hosts see the same
    /// storage, else copied; `.copy` copies it anyway; `.shared` refuses hosts that do not share.
    public func migrateVM(
        _ reference: String, to hostReference: String, storage: MigrationStorage? = nil, reason: String = "requested"
    ) async throws -> MigrationView {
        try await write { model in
            model.view(try model.startMigration(reference, to: hostReference, storage: storage, reason: reason))
        }
    }

    /// Starts a cold move: the VM stops, its disk is copied to the destination, and it starts there
    /// if it ran. Any two hosts whose drivers can (`cold-migration`), whatever their hypervisors.
    public func migrateVMCold(_ reference: String, to hostReference: String, reason: String = "requested") async throws
        -> MigrationView
    {
        try await write { model in model.view(try model.startColdMigration(reference, to: hostReference, reason: reason)) }
    }

    /// Migrations newest first, of one VM if given (also one deleted since): from the store,
    /// with the progress of those under way.
    public func listMigrations(vm reference: String? = nil, limit: Int = 100) async throws -> MigrationList {
        // A VM known here by name or ID, else an ID the store may still have migrations of.
        let known = reference.flatMap { model.migratedVM($0) }
        let vmID = known ?? reference.map { VMID($0) }
        let stored = try await store.migrations(of: vmID, limit: limit)
        let current = model.migrations
        let storedIDs = Set(stored.map(\.id))
        let merged =
            stored.map { current[$0.id] ?? $0 }
            + current.all.filter { !storedIDs.contains($0.id) && (vmID == nil || $0.vmID == vmID) }
        if let reference, known == nil, merged.isEmpty { throw VireoError.notFound("VM", reference) }
        let items = merged.sorted { ($0.requestedAt, $0.id) > ($1.requestedAt, $1.id) }.prefix(limit)
        return MigrationList(items: items.map(model.view))
    }

    public func migration(_ id: String) async throws -> MigrationView {
        if let migration = model.migrations[MigrationID(id)] { return model.view(migration) }
        guard let migration = try await store.migration(MigrationID(id)) else { throw VireoError.notFound("migration", id) }
        return model.view(migration)
    }

    /// Fails migrations that cannot go on: a host is gone, the VM is gone, or the destination did
    /// not get ready (or the source did not start) in time.
    public func expireMigrations() async throws {
        guard model.migrations.open.contains(where: \.state.isActive) else { return }
        try await write { $0.expireMigrations() }
    }
}

extension ClusterModel {
    /// Checks and records a migration.
    mutating func startMigration(
        _ reference: String, to hostReference: String, storage requested: MigrationStorage? = nil, reason: String
    ) throws -> Migration {
        let vm = try lookupVM(reference)
        guard let destination = state.host(named: hostReference) ?? state.hosts[HostID(hostReference)] else {
            throw VireoError.notFound("host", hostReference)
        }
        guard vm.intent == .running, vm.state == .running, let sourceID = vm.hostID, let source = state.hosts[sourceID]
        else {
            throw VireoError(.failedPrecondition, "VM '\(vm.name)' is \(vm.state.rawValue); only a running VM can be migrated")
        }
        if let active = migrations.active(of: vm.id) {
            throw VireoError(.conflict, "VM '\(vm.name)' is already migrating (migration \(active.id))")
        }
        guard destination.id != source.id else {
            throw VireoError(.failedPrecondition, "VM '\(vm.name)' already runs on host '\(destination.name)'")
        }
        if !source.fingerprint.capabilities.contains(.liveMigration) {
            throw VireoError(
                .failedPrecondition,
                "host '\(source.name)' cannot send VMs live (driver \(source.fingerprint.driver) without shared storage?)")
        }
        if let reason = liveMoveVerdict(
            vm, from: source, to: destination, in: state.placementCluster(settings: settings.placement)
        )
        .filtered {
            throw VireoError(.failedPrecondition, "host '\(destination.name)' cannot take VM '\(vm.name)' live: \(reason)")
        }
        let storage = try Self.storage(requested, from: source, to: destination)
        let time = now()
        let migration = Migration(
            vmID: vm.id, vmName: vm.name, source: source.id, destination: destination.id, reason: reason,
            requestedAt: time, storage: storage)
        let credentials = try issueCredentials(for: migration, listenerAddress: destination.address)
        remember(migration)
        if let credentials { keepCredentials(credentials, for: migration.id) }
        events.publish(.migration, name: vm.name, to: migration.state.rawValue, message: "to \(destination.name)", at: time)
        return migration
    }

    /// Checks and records a cold move.
    mutating func startColdMigration(_ reference: String, to hostReference: String, reason: String) throws -> Migration {
        let vm = try lookupVM(reference)
        guard let destination = state.host(named: hostReference) ?? state.hosts[HostID(hostReference)] else {
            throw VireoError.notFound("host", hostReference)
        }
        guard let sourceID = vm.hostID, let source = state.hosts[sourceID],
            [.running, .stopped].contains(vm.state), vm.intent != .deleted
        else {
            throw VireoError(
                .failedPrecondition, "VM '\(vm.name)' is \(vm.state.rawValue); only a running or stopped VM on a host can move")
        }
        if let active = migrations.active(of: vm.id) {
            throw VireoError(.conflict, "VM '\(vm.name)' is already migrating (migration \(active.id))")
        }
        guard destination.id != source.id else {
            throw VireoError(.failedPrecondition, "VM '\(vm.name)' is already on host '\(destination.name)'")
        }
        if !ImageCatalogue.builtIn.contains(where: { $0.name == vm.spec.image }) {
            throw VireoError(
                .failedPrecondition,
                "VM '\(vm.name)' runs image '\(vm.spec.image)', which other hosts cannot make: it cannot move cold")
        }
        for host in [source, destination] where host.state != .ready {
            throw VireoError(.unavailable, "host '\(host.name)' is \(host.state.rawValue)")
        }
        for host in [source, destination] where !host.fingerprint.capabilities.contains(.coldMigration) {
            throw VireoError(
                .failedPrecondition,
                "host '\(host.name)' (driver \(host.fingerprint.driver)) cannot move VMs cold: it lacks cold-migration")
        }
        let cluster = state.placementCluster(settings: settings.placement)
        if let index = cluster.hosts.firstIndex(where: { $0.id == destination.id }),
            let reason = InitialPlacement.evaluate(PlacementVM(vm, pinned: false), on: index, in: cluster).filtered
        {
            throw VireoError(.failedPrecondition, "host '\(destination.name)' cannot take VM '\(vm.name)': \(reason)")
        }
        // Hosts that share storage hand the disk over as it is; others copy it.
        let shared = source.fingerprint.sharedStorage.map { $0 == destination.fingerprint.sharedStorage } ?? false
        let time = now()
        let migration = Migration(
            vmID: vm.id, vmName: vm.name, source: source.id, destination: destination.id, reason: reason,
            requestedAt: time, storage: shared ? .shared : .copy, kind: .cold)
        // A disk that is copied goes over TLS; one left in shared storage does not travel.
        let credentials = shared ? nil : try issueCredentials(for: migration, listenerAddress: source.address)
        remember(migration)
        if let credentials { keepCredentials(credentials, for: migration.id) }
        events.publish(
            .migration, name: vm.name, to: migration.state.rawValue, message: "cold, to \(destination.name)", at: time)
        return migration
    }

    /// Both ends' TLS credentials for a move, when the controller has an authority. The end that
    /// listens — the destination of a live move, the source of a cold one (it serves the disk) —
    /// gets a certificate naming the address it listens on (its agent's address, else loopback,
    /// as the agent chooses).
    private func issueCredentials(for migration: Migration, listenerAddress: String?) throws
        -> MigrationCredentialPair?
    {
        guard let authority = settings.migrationAuthority else { return nil }
        do {
            return try authority.issue(
                migration: migration.id, listener: migration.kind == .cold ? .source : .destination,
                address: listenerAddress ?? "127.0.0.1")
        } catch {
            throw VireoError(.internal, "cannot issue the migration's TLS credentials: \(error)")
        }
    }

    /// A move that should be encrypted — a live one, or a cold one that copies the disk — but
    /// whose credentials this controller does not hold (it restarted since they were issued: they
    /// live in memory only).
    func lacksCredentials(_ migration: Migration) -> Bool {
        settings.migrationAuthority != nil && (migration.kind != .cold || migration.storage == .copy)
            && migration.state.isActive && migrations.credentials[migration.id] == nil
    }

    /// Whether a move lacking its credentials is still to begin sending: then it fails rather than
    /// go plain (a live move before its destination is ready, a cold one before its disk is copied).
    func notYetSent(_ migration: Migration) -> Bool {
        migration.state == .pending || (migration.kind == .cold && migration.state == .ready)
    }

    static let lostCredentials =
        "the controller restarted before this migration began and no longer holds its TLS credentials "
        + "(they are kept in memory only); nothing was sent: migrate the VM again"

    /// How the disk goes in a move between the two hosts, given what was asked for.
    static func storage(_ requested: MigrationStorage?, from source: HostRecord, to destination: HostRecord) throws
        -> MigrationStorage
    {
        let possible = source.fingerprint.migrationStorage(to: destination.fingerprint)
        switch requested {
        case nil:
            if let possible { return possible }
        case .shared:
            guard possible == .shared else {
                throw VireoError(
                    .failedPrecondition,
                    "hosts '\(source.name)' and '\(destination.name)' do not share storage; copy the disk instead "
                        + "(copyStorage, vireo migrate --copy-storage)")
            }
            return .shared
        case .copy:
            let can = [source, destination].filter { $0.fingerprint.capabilities.contains(.storageMigration) }
            if can.count == 2 { return .copy }
        }
        let lacking = [source, destination].filter { !$0.fingerprint.capabilities.contains(.storageMigration) }
        throw VireoError(
            .failedPrecondition,
            "the hosts do not share storage and host '\(lacking.first?.name ?? destination.name)' (driver "
                + "\(lacking.first?.fingerprint.driver ?? "?")) cannot copy a disk during a live move")
    }

    /// Whether `destination` can take `vm` live from `source` (which can send it), and why not: the
    /// destination must live-migrate and be of the source's hypervisor family, then fit the VM as a
    /// new one would. `vireo migrate` and `vm show` ask the same question.
    func liveMoveVerdict(_ vm: VirtualMachine, from source: HostRecord, to destination: HostRecord, in cluster: PlacementCluster)
        -> HostVerdict
    {
        let refused = { (reason: FilterReason) in
            HostVerdict(hostID: destination.id, hostName: destination.name, filtered: reason)
        }
        if !destination.fingerprint.capabilities.contains(.liveMigration) { return refused(.missingCapability(.liveMigration)) }
        let (from, to) = (source.fingerprint.migrationFamily, destination.fingerprint.migrationFamily)
        if from != to { return refused(.otherHypervisor(source: from, destination: to)) }
        if source.fingerprint.migrationStorage(to: destination.fingerprint) == nil {
            return refused(.missingCapability(.storageMigration))
        }
        guard let index = cluster.hosts.firstIndex(where: { $0.id == destination.id }) else {
            return refused(.hostNotReady(state: destination.state))
        }
        return InitialPlacement.evaluate(PlacementVM(vm, pinned: false), on: index, in: cluster)
    }

    /// Every other host's verdict on taking a running VM live, for `vm show`; nil when it does not
    /// run or its host cannot send it.
    func liveMoves(of vm: VirtualMachine) -> [HostVerdict]? {
        guard vm.state == .running, let sourceID = vm.hostID, let source = state.hosts[sourceID],
            source.fingerprint.capabilities.contains(.liveMigration)
        else { return nil }
        let cluster = state.placementCluster(settings: settings.placement)
        return state.hosts.values.filter { $0.id != sourceID }.sorted { $0.name < $1.name }.map {
            liveMoveVerdict(vm, from: source, to: $0, in: cluster)
        }
    }

    func view(_ migration: Migration) -> MigrationView {
        MigrationView(
            migration, source: state.hosts[migration.source]?.name ?? migration.source.rawValue,
            destination: state.hosts[migration.destination]?.name ?? migration.destination.rawValue)
    }

    /// A VM by name or ID, also one that no longer exists but has migrations still in memory.
    func migratedVM(_ reference: String) -> VMID? {
        if let vm = try? lookupVM(reference) { return vm.id }
        return migrations.all.first(where: { $0.vmName == reference || $0.vmID.rawValue == reference })?.vmID
    }

    /// What the host must do about migrations: the source sends once the destination is ready; the
    /// destination prepares, and hears how it ended until it has settled.
    func migrationOrders(for host: HostID) -> [MigrationOrder] {
        migrations.open.compactMap { migration -> MigrationOrder? in
            let role: MigrationOrder.Role
            let cold = migration.kind == .cold
            if migration.source == host && (migration.state.isActive || (cold && migration.sourceSettled != true)) {
                role = .source
            } else if migration.destination == host && (migration.state.isActive || !migration.destinationSettled) {
                role = .destination
            } else {
                return nil
            }
            guard let vm = state.vms[migration.vmID] else { return nil }
            // Never plain instead: a destination that would prepare, or a source that would send,
            // without credentials hears nothing until the migration fails.
            let credentials = migrations.credentials[migration.id]
            // (A cold move's source serves in `pending`, its destination copies in `ready`.)
            let acts: Bool =
                cold
                ? (role == .source && migration.state == .pending) || (role == .destination && migration.state == .ready)
                : (role == .destination && migration.state == .pending) || (role == .source && migration.state == .ready)
            if lacksCredentials(migration), acts { return nil }
            return MigrationOrder(
                id: migration.id, role: role, state: migration.state,
                vm: DesiredVM(
                    id: vm.id, name: vm.name, image: vm.spec.image, cpus: vm.spec.cpus, memoryMiB: vm.spec.memoryMiB,
                    intent: vm.intent, generation: vm.generation, diskMiB: vm.spec.diskMiB),
                guestAddress: vm.address, incomingURI: migration.incomingURI, storage: migration.storage,
                kind: migration.kind,
                credentials: migration.state.isActive ? (role == .source ? credentials?.source : credentials?.destination) : nil)
        }.sorted { $0.id < $1.id }
    }

    /// Applies what a host reports about its migrations.
    mutating func applyMigrationReports(_ heartbeat: AgentHeartbeat, at time: Date) {
        let host = heartbeat.hostID
        for report in heartbeat.migrations ?? [] {
            guard var migration = migrations[report.id] else { continue }
            let before = migration
            if migration.kind == .cold {
                if applyColdReport(report, from: host, to: &migration, at: time) { continue }
            } else if migration.destination == host {
                switch report.state {
                case .ready where migration.state == .pending:
                    migration.state = .ready
                    migration.incomingURI = report.incomingURI
                case .failed where migration.state.isActive:
                    migration = failed(migration, "destination: \(report.message ?? "failed")", at: time)
                default: break
                }
                if report.settled == true { migration.destinationSettled = true }
            } else if migration.source == host {
                switch report.state {
                case .running where migration.state == .ready || migration.state == .running:
                    if migration.state == .ready { migration.startedAt = time }
                    migration.state = .running
                    migration.progress = report.progress ?? migration.progress
                case .completed:
                    migration.stats = report.stats ?? migration.stats
                    if migration.state.isActive {
                        complete(&migration, at: time)
                        continue
                    }
                case .failed where migration.state.isActive:
                    migration = failed(migration, report.message ?? "failed on the source", at: time)
                default: break
                }
            }
            if migration != before { save(migration, was: before, at: time) }
        }
        // The source's word can be lost (it died right after): the guest running on the
        // destination proves the move happened.
        let incoming = Dictionary(
            migrations.open
                .filter { $0.destination == host && ($0.state == .running || $0.state == .ready) && $0.kind != .cold }
                .map { ($0.vmID, $0) },
            uniquingKeysWith: { a, _ in a })
        for instance in heartbeat.instances where instance.state == .running {
            guard var migration = incoming[instance.id], migrations[migration.id]?.state.isActive == true else { continue }
            migration.message = "completed as reported by the destination"
            complete(&migration, at: time)
        }
    }

    /// What a host says about a cold move. Returns true when it has written the migration itself.
    private mutating func applyColdReport(
        _ report: MigrationReport, from host: HostID, to migration: inout Migration, at time: Date
    ) -> Bool {
        if migration.source == host {
            switch report.state {
            case .ready where migration.state == .pending:
                // The VM is stopped and its disk offered: the destination copies it now.
                migration.state = .ready
                migration.startedAt = time
                migration.incomingURI = report.incomingURI
            case .failed where migration.state.isActive:
                migration = failed(migration, "source: \(report.message ?? "failed")", at: time)
            default: break
            }
            if report.settled == true, !migration.state.isActive { migration.sourceSettled = true }
        } else if migration.destination == host {
            switch report.state {
            case .completed where migration.state.isActive:
                var stats = report.stats ?? MigrationStats(totalTimeMs: 0, downtimeMs: 0, transferredBytes: 0)
                // The VM was down from the request (the source stopped it) to now.
                let downMs = Int(time.timeIntervalSince(migration.requestedAt) * 1000)
                stats.totalTimeMs = downMs
                stats.downtimeMs = downMs
                migration.stats = stats
                migration.destinationSettled = report.settled == true
                complete(&migration, at: time)
                return true
            case .failed where migration.state.isActive:
                migration = failed(migration, "destination: \(report.message ?? "failed")", at: time)
            default: break
            }
            if report.settled == true { migration.destinationSettled = true }
        }
        return false
    }

    /// The VM now lives on the destination. Writes the migration and the VM together.
    private mutating func complete(_ migration: inout Migration, at time: Date) {
        let before = migration
        migration.state = .completed
        migration.endedAt = time
        guard var vm = state.vms[migration.vmID] else {
            save(migration, was: before, at: time)
            return
        }
        vm.hostID = migration.destination
        vm.address = nil  // the destination reports it
        // An explicit move overrides a pin: the VM is pinned where it was moved to.
        if vm.spec.host != nil { vm.spec.host = state.hosts[migration.destination]?.name }
        vm.updatedAt = time
        commit(vms: [vm], migrations: [migration])
        events.publish(
            .migration, name: migration.vmName, from: before.state.rawValue, to: migration.state.rawValue,
            message: migration.stats.map { "downtime \($0.downtimeMs) ms, total \($0.totalTimeMs) ms" }, at: time)
    }

    private func failed(_ migration: Migration, _ reason: String, at time: Date) -> Migration {
        var migration = migration
        migration.state = .failed
        migration.message = reason
        migration.endedAt = time
        return migration
    }

    private mutating func save(_ migration: Migration, was before: Migration, at time: Date) {
        // Progress alone is kept in memory: it changes every heartbeat and means nothing after a restart.
        if migration.state != before.state || migration.destinationSettled != before.destinationSettled
            || migration.sourceSettled != before.sourceSettled
            || migration.stats != before.stats || migration.incomingURI != before.incomingURI
        {
            remember(migration)
        } else {
            rememberProgress(migration)
        }
        if migration.state != before.state {
            events.publish(
                .migration, name: migration.vmName, from: before.state.rawValue, to: migration.state.rawValue,
                message: migration.message, at: time)
        }
    }

    mutating func expireMigrations() {
        let time = now()
        for migration in migrations.open where migration.state.isActive {
            var reason: String?
            if state.vms[migration.vmID] == nil {
                reason = "the VM was deleted"
            } else if lacksCredentials(migration) && notYetSent(migration) {
                reason = Self.lostCredentials
            } else if let host = [migration.source, migration.destination].first(where: { state.hosts[$0]?.state != .ready }) {
                reason = "host '\(state.hosts[host]?.name ?? host.rawValue)' is unreachable"
            } else if migration.state != .running, migration.kind != .cold || migration.state == .pending,
                // A cold move's source first stops the guest (up to the agent's 120 s).
                time.timeIntervalSince(migration.requestedAt)
                    > settings.migrationStartTimeout.seconds + (migration.kind == .cold ? 120 : 0)
            {
                reason =
                    lacksCredentials(migration)
                    ? Self.lostCredentials
                    : migration.kind == .cold
                        ? "the source did not stop the VM and offer its disk in time"
                        : migration.state == .pending
                            ? "the destination did not get ready within \(settings.migrationStartTimeout)"
                            : "the source did not start sending within \(settings.migrationStartTimeout)"
            }
            if let reason { save(failed(migration, reason, at: time), was: migration, at: time) }
        }
    }
}
