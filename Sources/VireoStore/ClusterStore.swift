import Foundation
import VireoModel

/// What the controller loads at start: every host, VM and application, and the recent history.
public struct StoredCluster: Sendable, Equatable {
    public var hosts: [HostRecord]
    public var vms: [VirtualMachine]
    /// The migrations not yet completed or failed, and the newest finished ones; oldest first.
    public var migrations: [Migration]
    public var apps: [AppRecord]
    /// The newest executed rebalancing plans, oldest first.
    public var plans: [Plan]
    /// How the cluster rebalances itself; nil if never set.
    public var rebalance: RebalanceSettings?
    public init(
        hosts: [HostRecord], vms: [VirtualMachine], migrations: [Migration] = [], apps: [AppRecord] = [],
        plans: [Plan] = [], rebalance: RebalanceSettings? = nil
    ) {
        self.hosts = hosts
        self.vms = vms
        self.migrations = migrations
        self.apps = apps
        self.plans = plans
        self.rebalance = rebalance
    }
}

/// Changes written together, atomically: all of them or none.
public struct StoreBatch: Sendable, Equatable {
    /// New VM records; `.conflict` if a name or ID is taken.
    public var insertedVMs: [VirtualMachine]
    /// Replacements for existing VM records.
    public var updatedVMs: [VirtualMachine]
    public var deletedVMs: [VMID]
    /// Hosts to insert or replace.
    public var hosts: [HostRecord]
    /// Migrations to insert or replace.
    public var migrations: [Migration]
    /// Applications to insert or replace, by name.
    public var apps: [AppRecord]
    public var deletedApps: [String]
    /// Plans to insert or replace, by ID.
    public var plans: [Plan]
    public var rebalance: RebalanceSettings?

    public init(
        insertedVMs: [VirtualMachine] = [], updatedVMs: [VirtualMachine] = [], deletedVMs: [VMID] = [], hosts: [HostRecord] = [],
        migrations: [Migration] = [], apps: [AppRecord] = [], deletedApps: [String] = [], plans: [Plan] = [],
        rebalance: RebalanceSettings? = nil
    ) {
        self.plans = plans
        self.rebalance = rebalance
        self.insertedVMs = insertedVMs
        self.updatedVMs = updatedVMs
        self.deletedVMs = deletedVMs
        self.hosts = hosts
        self.migrations = migrations
        self.apps = apps
        self.deletedApps = deletedApps
    }

    public var isEmpty: Bool {
        insertedVMs.isEmpty && updatedVMs.isEmpty && deletedVMs.isEmpty && hosts.isEmpty && migrations.isEmpty && apps.isEmpty
            && deletedApps.isEmpty
            && plans.isEmpty && rebalance == nil
    }
}

/// Durable desired and observed state. Every write is atomic and durable when it returns; a
/// write that fails changes nothing. The same conformance suite runs against every store.
public protocol ClusterStore: Sendable {
    /// Hosts, VMs, applications and settings, the migrations under way, and the newest `recent`
    /// migrations and plans (`Int.max`: all of them). Without `placements`, the VMs come without
    /// their placement explanations, which would be most of what a load decodes: a controller
    /// keeps none in memory and reads one with `placement(of:)` when a VM's view shows it.
    func load(recent: Int, placements: Bool) async throws -> StoredCluster
    /// The placement explanation stored with a VM; nil if it has none or does not exist.
    func placement(of vm: VMID) async throws -> PlacementExplanation?

    /// Migrations newest first (by request time), of one VM if given.
    func migrations(of vm: VMID?, limit: Int) async throws -> [Migration]
    func migration(_ id: MigrationID) async throws -> Migration?
    /// Migrations requested in `[from, to)`, oldest first: what the cluster moved over a window.
    func migrations(requestedFrom from: Date, to: Date) async throws -> [Migration]
    /// Executed plans newest first.
    func plans(limit: Int) async throws -> [Plan]
    func plan(_ id: String) async throws -> Plan?
    /// Executed plans created in `[from, to)`, oldest first.
    func plans(createdFrom from: Date, to: Date) async throws -> [Plan]

    /// Inserts a new VM; `.conflict` if the name or ID is taken.
    func insertVM(_ vm: VirtualMachine) async throws
    /// Writes a batch in one transaction; `.notFound` (and nothing written) if a VM to update or
    /// delete does not exist, `.conflict` if a VM's name or a host's name is taken. A VM written
    /// without a placement explanation keeps the one stored with it (a controller holds none in
    /// memory; it writes one when it places the VM).
    func commit(_ batch: StoreBatch) async throws

    /// Takes in console output (`ConsoleTail.append`), keeping the last `retaining` bytes per VM,
    /// in one transaction. Output of VMs that do not exist is dropped; deleting a VM deletes its
    /// output. Returns the new `next` offset of each VM whose output was taken in.
    func appendConsole(_ chunks: [VMID: ConsoleChunk], retaining: Int) async throws -> [VMID: UInt64]
    /// The kept console output of a VM; nil when there is none yet.
    func consoleTail(of vm: VMID) async throws -> ConsoleTail?
    /// How far each VM's console has been taken in (`ConsoleTail.next`), for VMs that have output.
    func consoleOffsets() async throws -> [VMID: UInt64]

    /// Every API token, revoked and expired ones included, by name.
    func tokens() async throws -> [AccessToken]
    /// Stores a new token; `.conflict` if its name or secret is taken (also by a revoked one).
    func insertToken(_ token: AccessToken) async throws
    /// Replaces a token (to revoke it); `.notFound` if there is none of that name.
    func updateToken(_ token: AccessToken) async throws
    /// Appends to the audit trail; returns the entry with its `seq`.
    func appendAudit(_ entry: AuditEntry) async throws -> AuditEntry
    /// The newest `limit` entries at or after `since` (all if nil), oldest first.
    func audit(since: Date?, limit: Int) async throws -> [AuditEntry]
    /// Deletes the entries from before `before`; returns how many.
    func pruneAudit(before: Date) async throws -> Int

    /// The cluster's secret named `name` (its API tokens, its certificate authority): the one
    /// stored, or `proposed`, stored now, if there is none. Controllers sharing a database so
    /// share the first one's. Not fenced: a controller settles its secrets before it leads.
    func secret(_ name: String, proposing proposed: String) async throws -> String
    /// Replaces the secret `name`, which must still be `expected` (`.conflict` otherwise, and
    /// nothing changed), with `value`, and adds `supersededDigest` (a digest of `expected`) to the
    /// ones `supersededSecrets(name)` lists, in one transaction.
    func rotateSecret(_ name: String, from expected: String, to value: String, supersededDigest: String) async throws
    /// The cluster's secret `name` as stored; nil if it has none. Only reads.
    func secret(_ name: String) async throws -> String?

    /// For each host whose agent certificates were revoked, the time before which a certificate
    /// issued to it is refused.
    func certificateCutoffs() async throws -> [String: Date]
    /// Refuses the agent certificates issued to `host` before `cutoff` (a later cutoff it already
    /// has stays). Returns the cutoff now in force.
    func revokeCertificates(host: String, before cutoff: Date) async throws -> Date
}

extension ClusterStore {
    /// Where the digests a secret superseded are kept: a secret of its own.
    public static func supersededName(of secret: String) -> String { secret + "/superseded" }

    /// Digests of the values the secret `name` had before its rotations, oldest first.
    public func supersededSecrets(_ name: String) async throws -> [String] {
        (try await secret(Self.supersededName(of: name)) ?? "").split(separator: "\n").map(String.init)
    }

    /// Everything, the whole history included.
    public func load() async throws -> StoredCluster { try await load(recent: .max) }

    /// With the VMs' placement explanations.
    public func load(recent: Int) async throws -> StoredCluster { try await load(recent: recent, placements: true) }

    public func updateVM(_ vm: VirtualMachine) async throws { try await commit(StoreBatch(updatedVMs: [vm])) }
    public func deleteVM(_ id: VMID) async throws { try await commit(StoreBatch(deletedVMs: [id])) }
    public func upsertHost(_ host: HostRecord) async throws { try await commit(StoreBatch(hosts: [host])) }
}
