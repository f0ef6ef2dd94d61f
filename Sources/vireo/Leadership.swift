import ArgumentParser
import Foundation
import Hummingbird
import HummingbirdTLS
import Logging
import NIOSSL
import Prometheus
import ServiceLifecycle
import Synchronization
import VireoAPI
import VireoController
import VireoHTTP
import VireoModel
import VireoStore
import VireoStorePostgres

/// Controllers that share one PostgreSQL database: one leads — it holds the lease in the
/// database, serves the API and runs the loops — and the others stand by. A standby serves reads
/// of the cluster's records from the database (`StandbyReads`), answers everything else with a
/// redirect (307) to the leader, and `/healthz` with 503, so a load balancer's health check picks
/// the leader; it takes the lease when the leader's runs out (`--lease-ttl`
/// after its last renewal), loads the cluster from the store and serves. The lease's term fences
/// the store: a deposed leader's writes are refused (`StoreFence`), and it exits.
struct Leadership: Sendable {
    let store: PostgresStore
    /// This controller's identity in the lease: its name and a random part, new at every start.
    let holder: String
    /// Where this controller serves the API, for standbys to send clients to.
    let url: String
    let ttl: Duration
    let logger: Logger

    /// The standby's signal sources, kept for the life of the process. Written only by `standBy`,
    /// which runs once, before anything else reads or writes it.
    nonisolated(unsafe) static var signalSources: [any DispatchSourceSignal] = []

    /// How often a standby looks at the lease, and a leader renews it.
    var poll: Duration { min(.milliseconds(500), ttl / 5) }

    /// Serves as a standby on `host`:`port` until this controller takes the lease; returns the
    /// lease it took, with the store fenced by its term, and the standby's server, answering 503
    /// ("taking over", so that a client given several URLs tries the next) while the new leader
    /// loads the cluster: stop it just before the leader's own server takes the port, which is then
    /// closed for a moment, not for the load (seconds at 100,000 VMs).
    func standBy(host: String, port: Int, tls: TLSConfiguration?, reads: StandbyReads) async throws -> (
        lease: LeaderLease, server: StandbyServer?
    ) {
        let first = try await store.claimLease(holder: holder, url: url, ttl: ttl)
        if first.holder == holder { return (taken(first), nil) }
        let leader = LeaderURL(first.live ? first.url : nil)
        let takingOver = Mutex(false)
        let responder = CallbackResponder<VireoRequestContext> { request, context in
            if takingOver.withLock({ $0 }) { return Self.takingOverAnswer(request) }
            let leading = leader.value.withLock { $0 }
            if let served = try await reads.answer(request, context: context, leader: leading) { return served }
            return Self.standbyAnswer(request, leader: leading)
        }
        let app = Application(
            responder: responder,
            server: try tls.map { try .tls(.http1(), tlsConfiguration: $0) } ?? .http1(),
            configuration: .init(address: .hostname(host, port: port), serverName: "vireo", backlog: ControlPlane.listenBacklog),
            logger: logger)
        let group = ServiceGroup(configuration: .init(services: [.init(service: app)], logger: logger))
        // Set by a signal, or when the server ends by itself (it could not listen).
        let stopped = Mutex(false)
        // SIGTERM and SIGINT are taken before this controller says it stands by, not once the
        // group runs: one sent in between ended the process by the signal's default (seen in a
        // full run of HATests). They stay taken: the leader's own services take them too.
        for number in [SIGTERM, SIGINT] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number)
            source.setEventHandler {
                stopped.withLock { $0 = true }
                Task { await group.triggerGracefulShutdown() }
            }
            source.resume()
            Self.signalSources.append(source)
        }
        logger.notice("standing by: the leader is \(first.holder) at \(first.url)")
        let serving = Task {
            defer { stopped.withLock { $0 = true } }
            try await group.run()
        }
        // Snapshots for the reads it serves, until it stops standing by.
        let refreshing = Task { await reads.keepFresh(logger: self.logger) }
        while true {
            if stopped.withLock({ $0 }) {
                refreshing.cancel()
                try await serving.value  // the server's error, if it ended by itself
                logger.notice("stopped while standing by")
                throw ExitCode.success
            }
            try? await Task.sleep(for: poll)
            // Stopped meanwhile: it must not take the lease now (above, it exits).
            if stopped.withLock({ $0 }) { continue }
            let lease: LeaderLease
            do {
                lease = try await store.claimLease(holder: holder, url: url, ttl: ttl)
            } catch {
                logger.warning("cannot read the leader lease: \(error)")
                continue
            }
            if lease.holder == holder {
                // From now on it answers 503 to everything: its snapshots are of no more use.
                takingOver.withLock { $0 = true }
                refreshing.cancel()
                let server = StandbyServer {
                    await group.triggerGracefulShutdown()
                    _ = try? await serving.value
                }
                return (taken(lease), server)
            }
            leader.value.withLock { $0 = lease.live ? lease.url : nil }
        }
    }

    private func taken(_ lease: LeaderLease) -> LeaderLease {
        store.fence(StoreFence(holder: holder, term: lease.term))
        logger.notice("leading in term \(lease.term) (lease \(ttl), renewed every \(poll))")
        return lease
    }

    /// The answer of a standby that took the lease and is loading the cluster: 503, try again.
    static func takingOverAnswer(_ request: Request) -> Response {
        errorResponse(
            VireoError(.unavailable, "this controller is a standby taking over as the leader; try again shortly"),
            requestID: UUID().uuidString)
    }

    /// A standby's answer: `/healthz` 503; anything else a redirect to the leader, or 503 while
    /// no controller leads.
    static func standbyAnswer(_ request: Request, leader: String?) -> Response {
        let path = request.uri.string
        if let leader, request.uri.path != "/healthz" {
            return Response(status: .temporaryRedirect, headers: [.location: leader + path])
        }
        let message =
            leader.map { "this controller is a standby; the leader is at \($0)" }
            ?? "this controller is a standby and no controller leads yet; try again shortly"
        return errorResponse(VireoError(.unavailable, message), requestID: UUID().uuidString)
    }
}

/// What a standby serves itself: reads of the cluster's records — hosts, VMs, migrations, plans,
/// the rebalancing settings, packs, tokens and the audit trail, and the API's description — from
/// a snapshot of the database it loads while reads come, paced (a controller over the store that never
/// writes). Everything else is the leader's: changes, the agents' API, and what lives in the
/// leader's memory or data directory (applications' objectives and telemetry, alerts, the usage
/// history, contexts, the event stream, metrics, the console).
///
/// A served answer says where it came from: `Vireo-Standby` (the leader's URL) and
/// `Vireo-Snapshot-Age-Ms` (how old the snapshot is). A client that must read what it has just
/// changed sends `Vireo-Consistency: leader` and is redirected, as the CLI and agents do.
final class StandbyReads: Sendable {
    typealias Responder = RouterResponder<VireoRequestContext>
    static let refresh: Duration = .seconds(1)
    /// A snapshot older than this (the database has not answered for a while, or nobody read)
    /// is not served.
    static let maximumAge: Duration = .seconds(5)
    /// A standby nobody has read from for this long loads no more snapshots: the whole cluster
    /// each second is work worth doing only while someone reads. The next read goes to the
    /// leader (once the snapshot is `maximumAge` old) and starts the loading again.
    static let idleAfter: Duration = .seconds(5)
    static let consistencyHeader = HTTPFields.Element.Name("Vireo-Consistency")!
    static let standbyHeader = HTTPFields.Element.Name("Vireo-Standby")!
    static let ageHeader = HTTPFields.Element.Name("Vireo-Snapshot-Age-Ms")!

    private let load: @Sendable () async throws -> Responder
    private let snapshot = Mutex<(responder: Responder, loadedAt: ContinuousClock.Instant)?>(nil)
    /// When a read this standby serves last came.
    private let lastRead = Mutex<ContinuousClock.Instant?>(nil)

    init(load: @escaping @Sendable () async throws -> Responder) { self.load = load }

    /// A snapshot of the cluster in `store`: a controller over it that never writes (it rebalances
    /// nothing), behind the API's router. Like any controller it reads a VM's placement
    /// explanation from the store when one VM's view shows it.
    static func snapshot(of store: any ClusterStore, settings: ControllerSettings, tokens: AccessTokens?) async throws
        -> Responder
    {
        var readSettings = settings
        readSettings.rebalance = nil
        let registry = PrometheusCollectorRegistry()
        let snapshot = try await Controller.open(
            store: store, settings: readSettings,
            logger: Logger(label: "vireo.standby", factory: { _ in SwiftLogNoOpLogHandler() }),
            metricsFactory: PrometheusMetricsFactory(registry: registry))
        // A token the leader rotated is the cluster's from this snapshot on.
        try await tokens?.refresh(from: snapshot)
        return VireoServer(controller: snapshot, tokens: tokens, registry: registry).router().buildResponder()
    }

    /// Whether a standby answers `method` `path` itself.
    static func serves(method: HTTPRequest.Method, path: String) -> Bool {
        guard method == .get || method == .head else { return false }
        let parts = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        if path == "/openapi.json" { return true }
        guard parts.count >= 2, parts.first == "v1" else { return false }
        switch (parts.count, parts.dropFirst().first ?? "") {
        case (2, "hosts"), (2, "vms"), (2, "migrations"), (2, "plans"), (2, "rebalance"), (2, "packs"), (2, "tokens"),
            (2, "audit"):
            return true
        case (3, "hosts"), (3, "vms"), (3, "migrations"), (3, "plans"), (3, "packs"):
            return !(parts.last ?? "").isEmpty
        case (4, "vms"):
            return parts.last == "logs"
        default:
            return false
        }
    }

    /// The snapshot's answer to `request`, or nil when the leader must answer it.
    func answer(_ request: Request, context: VireoRequestContext, leader: String?) async throws -> Response? {
        guard Self.serves(method: request.method, path: request.uri.path),
            request.headers[Self.consistencyHeader]?.lowercased() != "leader"
        else { return nil }
        lastRead.withLock { $0 = .now }
        guard let (responder, loadedAt) = snapshot.withLock({ $0 }),
            ContinuousClock.now - loadedAt <= Self.maximumAge
        else { return nil }
        var response = try await responder.respond(to: request, context: context)
        response.headers[Self.standbyHeader] = leader ?? "none"
        let age = ContinuousClock.now - loadedAt
        response.headers[Self.ageHeader] = "\(age.components.seconds * 1000 + age.components.attoseconds / 1_000_000_000_000_000)"
        return response
    }

    /// Loads a snapshot now, then again while reads come (within `idleAfter`), paced by a
    /// `SnapshotSchedule`: at least `refresh` apart and at most a quarter of a core; a cluster so
    /// large that its snapshot is `maximumAge` old when made is loaded ever more rarely (its reads
    /// go to the leader), and says so once. Until cancelled. One that cannot be loaded leaves the
    /// last one in place, served until it is `maximumAge` old.
    func keepFresh(logger: Logger) async {
        var schedule = SnapshotSchedule(refresh: Self.refresh, maximumAge: Self.maximumAge)
        while !Task.isCancelled {
            let started = ContinuousClock.now
            let wanted =
                snapshot.withLock { $0 == nil } || lastRead.withLock { $0.map { started - $0 < Self.idleAfter } ?? false }
            var pause = Self.refresh
            if wanted, let responder = try? await load() {
                let took = ContinuousClock.now - started
                if schedule.servable(took) { snapshot.withLock { $0 = (responder, started) } }
                pause = schedule.wait(after: took)
                if schedule.tooSlow == 1 {
                    let message =
                        "the cluster takes \(took) to load, longer than a snapshot may be served (\(Self.maximumAge)): "
                        + "this standby sends reads to the leader, and loads again after \(pause), then ever more rarely"
                    logger.warning("\(message)")
                }
            }
            try? await Task.sleep(for: pause)
        }
    }
}

/// A standby's server, left serving while its controller takes over.
struct StandbyServer: Sendable {
    /// Stops it and waits until its port is closed.
    let stop: @Sendable () async -> Void
}

/// The leader's URL as a standby last read it, for its responder.
final class LeaderURL: Sendable {
    let value: Mutex<String?>
    init(_ url: String?) { value = Mutex(url) }
}

/// The leader's side: renews the lease every `poll` from the moment it was taken (loading a large
/// cluster may take longer than the lease). When the lease is lost — another controller took it,
/// or it could not be renewed before it ran out — the service ends with an error and the
/// controller stops; its writes are already refused by the fence. On a clean stop it gives the
/// lease up, so a standby takes over at once.
final class LeaseKeeper: Service, Sendable {
    let leadership: Leadership
    private let renewing: Task<Void, any Error>

    init(leadership: Leadership, term: Int64) {
        self.leadership = leadership
        renewing = Task { try await Self.renew(leadership, term: term) }
    }

    func run() async throws {
        try await withTaskCancellationOrGracefulShutdownHandler {
            try await renewing.value
        } onCancelOrGracefulShutdown: {
            self.renewing.cancel()
        }
    }

    /// Renews until cancelled (then gives the lease up), or throws once the lease is lost.
    private static func renew(_ leadership: Leadership, term: Int64) async throws {
        let store = leadership.store
        var renewed = ContinuousClock.now
        while true {
            do {
                try await Task.sleep(for: leadership.poll)
            } catch {
                await uncancelled { try? await store.releaseLease(holder: leadership.holder) }
                return
            }
            let lease: LeaderLease
            do {
                lease = try await store.claimLease(holder: leadership.holder, url: leadership.url, ttl: leadership.ttl)
            } catch {
                leadership.logger.warning("cannot renew the leader lease: \(error)")
                guard ContinuousClock.now - renewed < leadership.ttl else {
                    leadership.logger.critical("the leader lease ran out unrenewed; this controller stops")
                    throw VireoError(.unavailable, "the leader lease ran out unrenewed: \(error)")
                }
                continue
            }
            guard lease.holder == leadership.holder, lease.term == term else {
                let message = "lost the leader lease to \(lease.holder) (term \(lease.term)); this controller stops"
                leadership.logger.critical("\(message)")
                throw VireoError(.unavailable, message)
            }
            renewed = .now
        }
    }
}
