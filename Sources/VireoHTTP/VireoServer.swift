import Foundation
import Hummingbird
import Logging
import Metrics
import Prometheus
import Synchronization
import VireoAPI
import VireoController
import VireoModel
import VireoSecurity

/// Builds the HTTP API over a controller. Routes are thin: they decode, validate at the edge,
/// call the controller, and encode.
public struct VireoServer: Sendable {
    public let controller: Controller
    public let tokens: AccessTokens?
    public let registry: PrometheusCollectorRegistry
    public let consoleFiles: ConsoleFiles
    /// Hosts whose contexts' displays listen on this machine's loopback (the host of `vireo up`):
    /// the console shows those through `/v1/contexts/{context}/display`.
    public let displayHosts: Set<String>
    /// The cluster's own certificate authority (`--tls-auto`): it issues agents' certificates, and
    /// `/v1/agent/` then answers only to those.
    public let authority: ClusterAuthority?
    /// Largest request body accepted, in bytes.
    public static let maxBodyBytes = 1 << 20

    let listCache = VMPageCache()
    let listEncoder = VMListEncoder()

    /// Response header of `GET /v1/vms/{vm}/logs`: the position just past the returned output;
    /// pass it as `after` to get only what comes next.
    public static let logPositionHeader = "Vireo-Log-Position"

    public init(
        controller: Controller, tokens: AccessTokens?, registry: PrometheusCollectorRegistry,
        consoleFiles: ConsoleFiles = ConsoleFiles(), displayHosts: Set<String> = [], authority: ClusterAuthority? = nil
    ) {
        self.authority = authority
        self.controller = controller
        self.tokens = tokens
        self.registry = registry
        self.consoleFiles = consoleFiles
        self.displayHosts = displayHosts
    }

    public func router() -> Router<VireoRequestContext> {
        let router = Router(context: VireoRequestContext.self)
        // Middleware must be added before routes, outermost first.
        router.add(
            middleware: RequestMetricsMiddleware(metrics: RequestMetrics(factory: PrometheusMetricsFactory(registry: registry))))
        router.add(middleware: ErrorEnvelopeMiddleware())
        let routeMethods = RouteMethods()
        router.add(middleware: MethodNotAllowedMiddleware(routes: routeMethods))
        router.add(
            middleware: CallerAuthenticator(
                tokens: tokens, controller: controller, loopbackOnly: tokens == nil, agentCertificates: authority != nil))
        router.add(middleware: AccessMiddleware(controller: controller))
        router.add(middleware: SameOriginMiddleware(loopbackOnly: tokens == nil))

        let health = ByteBuffer(data: try! VireoJSON.encoder().encode(Health(status: "ok", version: VireoVersion.current)))
        router.get("/healthz") { _, _ in jsonResponse(health) }
        router.get("/metrics") { _, _ in
            var buffer: [UInt8] = []
            registry.emit(into: &buffer)
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: MetricHelp.addHelp(to: buffer))))
        }
        let openAPI = ByteBuffer(string: OpenAPIDocument.json)
        router.get("/openapi.json") { _, _ in jsonResponse(openAPI) }
        addHostRoutes(router)
        addVMRoutes(router)
        addAppRoutes(router)
        addPlanRoutes(router)
        addAgentRoutes(router)
        addEventRoutes(router)
        addHistoryRoutes(router)
        addContextRoutes(router, service: controller)
        addConsoleRoutes(router)
        addDisplayRoutes(router)
        addAccessRoutes(router)
        routeMethods.set(router.routes.map { ($0.method.rawValue, $0.path.description) })
        return router
    }

    func addHostRoutes(_ router: Router<VireoRequestContext>) {
        let controller = self.controller
        router.get("/v1/hosts") { _, _ in try json(await controller.listHosts()) }
        router.get("/v1/alerts") { _, _ in try json(await controller.alerts()) }
        router.get("/v1/hosts/{host}") { _, context in
            try json(try await controller.host(context.parameters.require("host")))
        }
        let authority = self.authority
        router.post("/v1/hosts/{host}/revoke") { _, context in
            guard authority != nil else {
                throw VireoError(
                    .failedPrecondition,
                    "this controller has no certificate authority of its own (it was not started with --tls-auto): "
                        + "its agents speak with the join token, and there are no agent certificates to revoke")
            }
            return try json(try await controller.revokeCertificates(host: context.parameters.require("host")))
        }
    }

    func addVMRoutes(_ router: Router<VireoRequestContext>) {
        let controller = self.controller
        let cache = listCache
        let encoder = listEncoder
        router.get("/v1/vms") { request, _ in
            let query = request.uri.queryParameters
            let limit = try intParameter(query.get("limit"), name: "limit", range: 1...1000) ?? 100
            let after = query.get("after")
            let key = "\(limit)|\(after ?? "")"
            if let cached = cache.get(key, current: controller.currentVMPage) { return jsonResponse(cached) }
            let (page, stamp) = controller.stampedVMPage(after: after, limit: limit)
            let buffer = try encoder.encode(page)
            cache.put(key, buffer, stamp: stamp)
            return jsonResponse(buffer)
        }
        router.post("/v1/vms") { request, context in
            let body = try await readJSONBody(request)
            let spec = try VMSpecValidation.fromAPIBody(body)
            try AccessPolicy.permit(context.identity, [.vm(app: spec.app)])
            return try json(try await controller.createVM(spec), status: .created)
        }
        router.post("/v1/vms/import") { request, context in
            let body = try await readJSONBody(request)
            let vms = try VMImport.fromAPIBody(body)
            try AccessPolicy.permit(context.identity, vms.vms.map { .vm(app: $0.spec.app) })
            return try json(try await controller.importVMs(vms), status: .created)
        }
        router.get("/v1/vms/{vm}") { _, context in
            try json(try await controller.vm(context.parameters.require("vm")))
        }
        router.delete("/v1/vms/{vm}") { _, context in
            try json(try await controller.deleteVM(context.parameters.require("vm")), status: .accepted)
        }
        router.post("/v1/vms/{vm}/start") { _, context in
            try json(try await controller.startVM(context.parameters.require("vm")), status: .accepted)
        }
        router.post("/v1/vms/{vm}/stop") { _, context in
            try json(try await controller.stopVM(context.parameters.require("vm")), status: .accepted)
        }
        router.get("/v1/vms/{vm}/logs") { request, context in
            let query = request.uri.queryParameters
            let tail = try intParameter(query.get("tail"), name: "tail", range: 0...1_000_000)
            let after = try intParameter(query.get("after"), name: "after", range: 0...Int.max)
            let console = try await controller.console(context.parameters.require("vm"))
            var text = after.map { console.text(after: UInt64($0)) } ?? console.text
            if let tail { text = ConsoleTail.lastLines(tail, of: text) }
            var headers: HTTPFields = [.contentType: "text/plain; charset=utf-8", .cacheControl: "no-cache"]
            headers.append(HTTPFields.Element(name: .init(VireoServer.logPositionHeader)!, value: String(console.written)))
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
        }
        router.post("/v1/vms/{vm}/migrate") { request, context in
            let body = try FieldReader(try await readJSONBody(request), path: "")
            try body.rejectUnknown(allowed: ["to", "copyStorage", "cold"])
            let destination = try body.requiredString("to")
            let storage = try body.bool("copyStorage").map { $0 ? MigrationStorage.copy : .shared }
            let vm = try context.parameters.require("vm")
            if try body.bool("cold") == true {
                if storage == .shared {
                    throw VireoError.invalid(field: "copyStorage", value: "false", "a cold move always copies the disk")
                }
                return try json(try await controller.migrateVMCold(vm, to: destination), status: .accepted)
            }
            return try json(try await controller.migrateVM(vm, to: destination, storage: storage), status: .accepted)
        }
        router.get("/v1/migrations") { request, _ in
            let query = request.uri.queryParameters
            let limit = try intParameter(query.get("limit"), name: "limit", range: 1...1000) ?? 100
            return try json(try await controller.listMigrations(vm: query.get("vm"), limit: limit))
        }
        router.get("/v1/migrations/{migration}") { _, context in
            try json(try await controller.migration(context.parameters.require("migration")))
        }
        router.post("/v1/apply") { request, context in
            let text = try await readText(request)
            let documents = try ManifestParser.parse(text)
            if let caller = context.identity, caller.role != .admin {
                // An owner may not take a VM out of another's application by naming it in its own.
                let current =
                    caller.role == .owner
                    ? await controller.applications(
                        ofVMsNamed: documents.compactMap {
                            if case .virtualMachine(let spec) = $0 { spec.name } else { nil }
                        }) : [:]
                try AccessPolicy.permit(caller, AccessPolicy.changes(of: documents) { current[$0] })
            }
            return try json(try await controller.apply(documents))
        }
    }

    func addAppRoutes(_ router: Router<VireoRequestContext>) {
        let controller = self.controller
        router.get("/v1/apps") { _, _ in try json(await controller.listApps()) }
        router.get("/v1/apps/{app}") { _, context in
            try json(try await controller.app(context.parameters.require("app")))
        }
        router.delete("/v1/apps/{app}") { request, context in
            guard let text = request.uri.queryParameters.get("vms") else {
                throw VireoError(
                    .invalidArgument, "vms: is required: say what to do with the application's VMs (vms=keep or vms=delete)")
            }
            guard let disposition = AppVMDisposition(rawValue: text) else {
                throw VireoError.invalid(field: "vms", value: "'\(text)'", "expected keep or delete")
            }
            return try json(try await controller.deleteApp(context.parameters.require("app"), vms: disposition))
        }
        router.post("/v1/apps/{app}/packs/{pack}") { _, context in
            try json(
                try await controller.applyPack(context.parameters.require("pack"), to: context.parameters.require("app")))
        }
        router.get("/v1/packs") { _, _ in try json(PackList(items: Pack.builtIn.map(PackView.init))) }
        router.get("/v1/packs/{pack}") { _, context in
            let name = try context.parameters.require("pack")
            guard let pack = Pack.builtIn(named: name) else { throw VireoError.notFound("pack", name) }
            return try json(PackView(pack))
        }
        router.post("/v1/apps/{app}/samples") { request, context in
            let text = try await readText(request)
            return try json(
                try await controller.ingest(app: context.parameters.require("app"), exposition: text, at: controller.now()),
                status: .accepted)
        }
        router.get("/v1/apps/{app}/series") { request, context in
            let query = request.uri.queryParameters
            let metric = query.get("metric")
            let objective = query.get("objective")
            guard (metric == nil) != (objective == nil) else {
                throw VireoError(
                    .invalidArgument,
                    "metric, objective: give exactly one (a metric selector, or the name of an objective for its indicator per window)"
                )
            }
            let now = controller.now()
            let to = try timeParameter(query.get("to"), name: "to", now: now) ?? now
            let from = try timeParameter(query.get("from"), name: "from", now: now) ?? to.addingTimeInterval(-3_600)
            guard from <= to else {
                throw VireoError.invalid(field: "from", value: "'\(query.get("from") ?? "")'", "must not be after to")
            }
            let app = try context.parameters.require("app")
            if let objective {
                return try json(try await controller.objectiveSeries(app: app, objective: objective, from: from, to: to))
            }
            return try json(try await controller.series(app: app, metric: metric!, from: from, to: to))
        }
    }

    func addPlanRoutes(_ router: Router<VireoRequestContext>) {
        let controller = self.controller
        router.post("/v1/plans") { request, context in
            let body = try FieldReader(try await readJSONBody(request, emptyAs: .object([:])), path: "")
            try body.rejectUnknown(allowed: ["policy", "execute"])
            let execute = try body.bool("execute") ?? false
            if execute { try AccessPolicy.permit(context.identity, [.executePlan]) }
            let plan = try await controller.plan(policy: try body.string("policy"), execute: execute)
            return try json(plan, status: execute ? .created : .ok)
        }
        router.get("/v1/plans") { request, _ in
            let limit = try intParameter(request.uri.queryParameters.get("limit"), name: "limit", range: 1...1000) ?? 100
            return try json(try await controller.listPlans(limit: limit))
        }
        router.get("/v1/plans/{plan}") { _, context in
            try json(try await controller.storedPlan(context.parameters.require("plan")))
        }
        router.get("/v1/rebalance") { _, _ in try json(await controller.rebalanceStatus()) }
        router.put("/v1/rebalance") { request, _ in
            let body = try FieldReader(try await readJSONBody(request), path: "")
            try body.rejectUnknown(allowed: ["policy", "intervalSeconds"])
            let policy = try body.requiredString("policy")
            var settings = await controller.rebalanceStatus().settings
            settings.policy = policy.lowercased() == "off" ? nil : policy
            settings.intervalSeconds = try body.double("intervalSeconds") ?? settings.intervalSeconds
            return try json(try await controller.setRebalance(settings))
        }
    }

    func addAgentRoutes(_ router: Router<VireoRequestContext>) {
        let controller = self.controller
        let authority = self.authority
        // With the cluster's authority, only a certificate it issued speaks here (the join token
        // only buys one), and for its own host only: the host it names.
        @Sendable func certifiedHost(_ context: VireoRequestContext) throws -> String? {
            guard authority != nil else { return nil }
            guard let host = context.identity?.agentHost else {
                throw VireoError(
                    .forbidden,
                    "this controller admits agents by the certificate its authority issued them: start the agent "
                        + "with the join token (--token) and the controller's CA certificate (--ca-cert), and it gets one")
            }
            return host
        }
        router.post("/v1/agent/samples") { request, context in
            let certified = try certifiedHost(context)
            let delivery = try await decode(AgentSamples.self, from: request)
            if let certified { try await controller.checkAgent(delivery.hostID, certifiedAs: certified) }
            return try json(try await controller.ingest(delivery), status: .accepted)
        }
        router.post("/v1/agent/register") { request, context in
            let certified = try certifiedHost(context)
            let registration = try await decode(AgentRegistration.self, from: request)
            if let certified, registration.name != certified {
                throw VireoError(
                    .forbidden, "the certificate of host '\(certified)' may not register host '\(registration.name)'")
            }
            return try json(try await controller.register(registration))
        }
        router.post("/v1/agent/heartbeat") { request, context in
            let certified = try certifiedHost(context)
            let heartbeat = try await decode(AgentHeartbeat.self, from: request)
            return try json(try await controller.heartbeat(heartbeat, certifiedAs: certified))
        }
        // Held open until the host's desired state changes or the wait is over: between heartbeats
        // an agent hears of a change at once (docs/api.md).
        router.get("/v1/agent/watch") { request, context in
            let certified = try certifiedHost(context)
            let query = request.uri.queryParameters
            guard let host = query.get("host"), !host.isEmpty else {
                throw VireoError.invalid(field: "host", value: "''", "the host ID the agent registered as is required")
            }
            guard let after = try intParameter(query.get("after"), name: "after", range: Int.min...Int.max) else {
                throw VireoError.invalid(field: "after", value: "''", "the generation of the last answer is required")
            }
            let wait = try intParameter(query.get("waitMs"), name: "waitMs", range: 0...AgentWatch.maximumWaitMs) ?? 10_000
            if let certified { try await controller.checkAgent(HostID(host), certifiedAs: certified) }
            let generation = try await controller.watch(host: HostID(host), after: after, timeout: .milliseconds(wait))
            return try json(AgentWatch(generation: generation))
        }
        // An agent joining with the join token gets its client certificate here (or renews it
        // with the one it has, for its own host).
        router.post("/v1/agent/certificate") { request, context in
            guard let authority else {
                throw VireoError(
                    .failedPrecondition,
                    "this controller has no certificate authority of its own (it was not started with --tls-auto): "
                        + "agents join with the join token alone")
            }
            let asked = try AgentCertificateRequest.fromAPIBody(try await readJSONBody(request))
            if let own = context.identity?.agentHost, own != asked.host {
                throw VireoError(.forbidden, "the certificate of host '\(own)' may not ask for one of host '\(asked.host)'")
            }
            let issued = try authority.signAgent(
                request: asked.csr, host: asked.host, now: controller.certificateIssueTime(host: asked.host))
            context.logger.notice(
                "issued an agent certificate", metadata: ["host": "\(asked.host)", "expires": "\(issued.expiresAt)"])
            return try json(
                AgentCertificate(
                    certificate: issued.certificate, caCertificate: authority.certificatePEM, expiresAt: issued.expiresAt))
        }
    }
}

// MARK: Helpers shared by the routes

func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
    jsonResponse(ByteBuffer(data: try VireoJSON.encoder().encode(value)), status: status)
}

func jsonResponse(_ buffer: ByteBuffer, status: HTTPResponse.Status = .ok) -> Response {
    Response(status: status, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: buffer))
}

func readText(_ request: Request) async throws -> String {
    let buffer: ByteBuffer
    do {
        buffer = try await request.body.collect(upTo: VireoServer.maxBodyBytes)
    } catch {
        throw VireoError(.payloadTooLarge, "request body is larger than \(VireoServer.maxBodyBytes) bytes")
    }
    guard let text = buffer.getString(at: buffer.readerIndex, length: buffer.readableBytes),
        text.utf8.count == buffer.readableBytes, String(validating: buffer.readableBytesView, as: UTF8.self) != nil
    else {
        throw VireoError(.invalidArgument, "body: not valid UTF-8")
    }
    return text
}

/// Reads a JSON body into a `JSONValue`, so validation can name fields precisely. An empty body
/// is `emptyAs` if given, else refused.
func readJSONBody(_ request: Request, emptyAs: JSONValue? = nil) async throws -> JSONValue {
    let text = try await readText(request)
    if text.isEmpty, let emptyAs { return emptyAs }
    guard !text.isEmpty else { throw VireoError(.invalidArgument, "body: is required (a JSON object)") }
    do {
        return try VireoJSON.decoder().decode(JSONValue.self, from: Data(text.utf8))
    } catch {
        throw VireoError(.invalidArgument, "body: not valid JSON")
    }
}

func decode<T: Decodable>(_ type: T.Type, from request: Request) async throws -> T {
    let text = try await readText(request)
    do {
        return try VireoJSON.decoder().decode(type, from: Data(text.utf8))
    } catch let error as DecodingError {
        throw VireoError(.invalidArgument, ErrorEnvelopeMiddleware<VireoRequestContext>.describe(error))
    }
}

func intParameter(_ text: String?, name: String, range: ClosedRange<Int>) throws -> Int? {
    guard let text else { return nil }
    guard let value = Int(text), range.contains(value) else {
        throw VireoError.invalid(
            field: name, value: "'\(text)'", "must be an integer from \(range.lowerBound) to \(range.upperBound)")
    }
    return value
}

/// A time as RFC 3339 (`2026-12-01T13:00:00Z`), seconds since the epoch, or relative to now
/// (`-15m`, from `now`).
func timeParameter(_ text: String?, name: String, now: Date) throws -> Date? {
    guard let text else { return nil }
    if text.hasPrefix("-"), let seconds = DurationText.seconds(String(text.dropFirst())) {
        return now.addingTimeInterval(-seconds)
    }
    if let seconds = Double(text), seconds.isFinite { return Date(timeIntervalSince1970: seconds) }
    if let date = try? Date(text, strategy: .iso8601) { return date }
    throw VireoError.invalid(
        field: name, value: "'\(text)'", "not a time: give RFC 3339, seconds since the epoch, or -DURATION (e.g. -15m)")
}

/// Encoded pages of `GET /v1/vms` by request, each with the stamp of the listing it was made
/// from: served again while the listing says no VM in it (or one that would join it) changed.
final class VMPageCache: Sendable {
    private struct Entries {
        var pages: [String: (buffer: ByteBuffer, stamp: VMPageStamp)] = [:]
        var bytes = 0
    }
    private let entries = Mutex(Entries())
    /// Above this many bytes of pages, start again.
    private let capacity: Int

    init(capacity: Int = 32 << 20) { self.capacity = capacity }

    /// The page for `key` if it is current (`current` moves its stamp up to now).
    func get(_ key: String, current: (VMPageStamp) -> VMPageStamp?) -> ByteBuffer? {
        guard let entry = entries.withLock({ $0.pages[key] }), let now = current(entry.stamp) else { return nil }
        if now != entry.stamp {
            entries.withLock { e in
                if e.pages[key]?.stamp == entry.stamp { e.pages[key]?.stamp = now }
            }
        }
        return entry.buffer
    }

    func put(_ key: String, _ buffer: ByteBuffer, stamp: VMPageStamp) {
        entries.withLock { e in
            if let kept = e.pages[key] {
                if kept.stamp.seq >= stamp.seq { return }
                e.bytes -= kept.buffer.readableBytes
            }
            if e.bytes + buffer.readableBytes > capacity { e = Entries() }
            e.pages[key] = (buffer, stamp)
            e.bytes += buffer.readableBytes
        }
    }
}
