import Foundation
import VireoAPI
import VireoModel

/// The context verbs over every host: the controller finds the context's host (or chooses one for
/// `open`), passes the verb with its next heartbeat reply, and answers with what the host did.
/// A host that is unreachable cannot be asked: its own local API still can.
extension Controller: ContextService {
    /// How long a verb waits for its host; an `open` that waits for the boot gets longer.
    static let contextCommandTimeout: Duration = .seconds(60)
    static let contextOpenTimeout: Duration = .seconds(360)

    public func listContexts() async throws -> ContextList {
        let (items, pools) = contextDesk.all()
        let state = model.state
        let contexts = items.map { host, context in
            var context = context
            if let record = state.hosts[host], record.state != .ready {
                context.message = "host \(record.name) is \(record.state.rawValue): as it last reported"
            }
            return context
        }
        return ContextList(
            items: contexts.sorted { ($0.name, $0.host) < ($1.name, $1.host) },
            pools: pools.sorted { ($0.host, $0.image) < ($1.host, $1.image) })
    }

    public func context(_ name: String, host: String?) async throws -> Context {
        try await located(name, host: host).context
    }

    public func openContext(_ request: ContextOpenRequest) async throws -> Context {
        let spec = request.spec
        if let existing = contextDesk.all().items.first(where: { $0.1.name == spec.name }) {
            throw VireoError(.conflict, "context '\(spec.name)' is already open on host \(existing.1.host)")
        }
        let host = try contextHost(for: request)
        var sent = request
        sent.host = nil
        let result = try await contextDesk.send(
            ContextCommand(id: UUID().uuidString.lowercased(), action: .open, name: spec.name, open: sent), to: host.id,
            hostName: host.name, timeout: request.wait ? Self.contextOpenTimeout : Self.contextCommandTimeout)
        return try Self.context(in: result, from: host.name)
    }

    public func resetContext(_ name: String, host: String?, force: Bool) async throws -> Context {
        try await pass(.reset, name, host: host, force: force)
    }

    public func keepContext(_ name: String, host: String?) async throws -> Context {
        try await pass(.keep, name, host: host)
    }

    public func closeContext(_ name: String, host: String?) async throws -> Context {
        try await pass(.close, name, host: host)
    }

    public func contextLogs(_ name: String, host: String?, tail: Int?) async throws -> String {
        let result = try await send(
            ContextCommand(id: UUID().uuidString.lowercased(), action: .logs, name: name, tail: tail), host: host)
        return result.logs ?? ""
    }

    /// Opens the contexts of an applied manifest that are not open yet; returns what it did.
    func applyContexts(_ requests: [ContextOpenRequest]) async throws -> [ApplyResult.Item] {
        var items: [ApplyResult.Item] = []
        for request in requests {
            if contextDesk.all().items.contains(where: { $0.1.name == request.spec.name }) {
                items.append(.init(kind: "Context", name: request.spec.name, action: .unchanged))
                continue
            }
            _ = try await openContext(request)
            items.append(.init(kind: "Context", name: request.spec.name, action: .created))
        }
        return items
    }

    /// Refuses a manifest's contexts that exist with a different spec, before anything is applied.
    func checkContexts(_ requests: [ContextOpenRequest]) throws {
        for request in requests {
            guard let existing = contextDesk.all().items.first(where: { $0.1.name == request.spec.name })?.1 else {
                continue
            }
            let have = ContextSpec(
                name: existing.name, kind: existing.kind, image: existing.image, cpus: existing.cpus,
                memoryMiB: existing.memoryMiB, network: existing.network, display: request.spec.display)
            if have != request.spec {
                throw VireoError(
                    .conflict,
                    "Context '\(request.spec.name)' is open on host \(existing.host) with a different spec; close it first to reopen it"
                )
            }
        }
    }

    /// Takes the context part of a heartbeat and fills in the reply's.
    func takeContexts(_ report: HostContexts?, from host: HostID, into desired: inout DesiredHostState) {
        guard let report, let record = model.state.hosts[host] else { return }
        for entry in contextDesk.take(report, from: host, name: record.name) {
            events.publish(
                .context, name: entry.context, to: entry.action.rawValue,
                message: ["host \(record.name)", entry.message].compactMap { $0 }.joined(separator: ": "), at: entry.time)
        }
        desired.contextCommands = contextDesk.commands(for: host)
        desired.contextJournalAck = contextDesk.recordedSeq(of: host)
    }

    // MARK: Helpers

    private func pass(_ action: ContextCommand.Action, _ name: String, host: String?, force: Bool? = nil) async throws
        -> Context
    {
        let result = try await send(
            ContextCommand(id: UUID().uuidString.lowercased(), action: action, name: name, force: force), host: host)
        return try Self.context(in: result, from: host ?? "its host")
    }

    private static func context(in result: ContextCommandResult, from host: String) throws -> Context {
        guard let context = result.context else {
            throw VireoError(.internal, "host \(host) answered without the context")
        }
        return context
    }

    /// Sends a command to the host of context `command.name` and waits for the answer.
    private func send(_ command: ContextCommand, host: String?) async throws -> ContextCommandResult {
        let (hostID, context) = try located(command.name, host: host)
        guard let record = model.state.hosts[hostID], record.state == .ready else {
            throw VireoError(
                .unavailable,
                "host \(context.host) is unreachable: use its local API (`vireo --server http://127.0.0.1:7481 context ...` on it)"
            )
        }
        return try await contextDesk.send(command, to: hostID, hostName: record.name, timeout: Self.contextCommandTimeout)
    }

    /// The context named `name` (on `host`, if given); when it is open on several hosts the host
    /// must be named.
    private func located(_ name: String, host: String?) throws -> (host: HostID, context: Context) {
        let matches = contextDesk.all().items.filter { $0.1.name == name && (host == nil || $0.1.host == host) }
        guard let first = matches.first else {
            throw VireoError(.notFound, "context '\(name)' not found\(host.map { " on host \($0)" } ?? "")")
        }
        guard matches.count == 1 else {
            let hosts = matches.map(\.1.host).sorted().joined(separator: ", ")
            throw VireoError(.conflict, "context '\(name)' is open on several hosts (\(hosts)): say which with --host")
        }
        return first
    }

    /// The host to open a context on: the one named, else the ready host that can run contexts
    /// with the most memory left.
    private func contextHost(for request: ContextOpenRequest) throws -> HostRecord {
        let state = model.state
        var needed: Set<Capability> = [.snapshots, .privateNetworks]
        if request.spec.display != nil { needed.insert(.display) }
        func lacking(_ host: HostRecord) -> [Capability] {
            needed.filter { !host.fingerprint.capabilities.contains($0) }.sorted()
        }
        if let name = request.host {
            guard let host = state.host(named: name) else { throw VireoError.notFound("host", name) }
            guard host.state == .ready else { throw VireoError(.unavailable, "host \(name) is \(host.state.rawValue)") }
            let missing = lacking(host)
            guard missing.isEmpty else {
                throw VireoError(
                    .unsupported,
                    "host \(name) (driver \(host.fingerprint.driver)) cannot run this context: it lacks "
                        + missing.map(\.rawValue).joined(separator: ", "))
            }
            return host
        }
        let candidates = state.hosts.values.filter { $0.state == .ready && lacking($0).isEmpty }
        guard let best = candidates.max(by: { a, b in (free(a), b.name) < (free(b), a.name) })
        else {
            throw VireoError(
                .unavailable,
                "no ready host can run contexts (they need a driver with \(needed.sorted().map(\.rawValue).joined(separator: ", ")))"
            )
        }
        return best
    }

    /// Memory left on `host` after its VMs and what its contexts and pool hold (as placement counts it).
    private func free(_ host: HostRecord) -> Int {
        let state = model.state
        return host.fingerprint.memoryMiB - (state.allocation[host.id]?.memoryMiB ?? 0)
            - (state.contextHold[host.id]?.memoryMiB ?? 0)
    }
}
