import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL
import Synchronization
import VireoAPI
import VireoModel
import VireoSecurity

/// The HTTP client used by the CLI, remote agents and tests.
///
/// Every failure is a `VireoError`: the server's envelope when it answered, `.unavailable`
/// when it could not be reached.
public struct VireoClient: Sendable {
    /// The controller's URL, or several separated by commas (controllers sharing one database):
    /// a request goes to the one that answered last, and on to the next when it cannot be reached
    /// or is a standby. A standby given alone redirects to the leader.
    public let server: String
    public let token: String?
    public let timeout: TimeAmount
    private let http: HTTPClient
    private let servers: [String]
    private let answering: Answering

    /// The index in `servers` of the controller that answered last.
    private final class Answering: Sendable {
        let index = Mutex(0)
    }

    /// One client for the process's lifetime (never shut down, so never deinitialised). It fails
    /// a request at once when the controller refuses the connection instead of retrying until
    /// the deadline: a CLI user wants "unreachable" now, and the agent retries on its own.
    public static let sharedHTTPClient = makeHTTPClient(trusting: nil)

    /// An HTTP client as `sharedHTTPClient` that trusts for `https://` only the certificate
    /// authority in the PEM file at `caFile` (a controller with its own CA: `--ca-cert`). One per
    /// file for the process's lifetime, as the shared one (a client must be shut down before it
    /// goes, and these never go).
    public static func httpClient(trusting caFile: String) -> HTTPClient {
        trustingClients.withLock { clients in
            if let client = clients[caFile] { return client }
            let client = makeHTTPClient(trusting: caFile)
            clients[caFile] = client
            return client
        }
    }
    private static let trustingClients = Mutex<[String: HTTPClient]>([:])

    private static func makeHTTPClient(trusting caFile: String?) -> HTTPClient {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.timeout.connect = .seconds(5)
        // `exchange` follows a standby's redirect itself: AsyncHTTPClient drops the token on a
        // redirect to another origin (the leader's), which the leader then refuses.
        configuration.redirectConfiguration = .disallow
        if let caFile {
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .file(caFile)
            configuration.tlsConfiguration = tls
        }
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }

    /// An HTTP client as `httpClient(trusting:)` that presents `identity` (an agent's certificate
    /// and key) to the servers it connects to. One per file and certificate for the process's
    /// lifetime, as the others: an agent has one, and one more each time it renews (yearly).
    public static func httpClient(trusting caFile: String, identity: AgentIdentity) throws -> HTTPClient {
        try identityClients.withLock { clients in
            let key = caFile + "\n" + identity.certificate
            if let client = clients[key] { return client }
            var configuration = HTTPClient.Configuration()
            configuration.connectionPool.retryConnectionEstablishment = false
            configuration.timeout.connect = .seconds(5)
            configuration.redirectConfiguration = .disallow
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .file(caFile)
            tls.certificateChain = try NIOSSLCertificate.fromPEMBytes(Array(identity.certificate.utf8)).map {
                .certificate($0)
            }
            tls.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: Array(identity.privateKey.utf8), format: .pem))
            configuration.tlsConfiguration = tls
            let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
            clients[key] = client
            return client
        }
    }
    private static let identityClients = Mutex<[String: HTTPClient]>([:])

    /// Checks a `--ca-cert` file before any request: a missing or unreadable file is named now,
    /// not as a TLS failure of the first request.
    public static func checkCAFile(_ path: String, field: String) throws {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw VireoError.invalid(field: field, value: "'\(path)'", "cannot read the file")
        }
        guard text.contains("-----BEGIN CERTIFICATE-----") else {
            throw VireoError.invalid(field: field, value: "'\(path)'", "not a PEM certificate")
        }
    }

    public init(
        server: String, token: String? = nil, timeout: TimeAmount = .seconds(30), http: HTTPClient = sharedHTTPClient
    ) {
        servers = server.split(separator: ",").map { url in
            let url = url.trimmingCharacters(in: .whitespaces)
            return url.hasSuffix("/") ? String(url.dropLast()) : url
        }
        self.server = servers.joined(separator: ",")
        answering = Answering()
        self.token = token
        self.timeout = timeout
        self.http = http
    }

    // MARK: API

    public func health() async throws -> Health { try await get("/healthz") }
    public func hosts() async throws -> HostList { try await get("/v1/hosts") }
    public func host(_ name: String) async throws -> HostView { try await get("/v1/hosts/\(escape(name))") }

    /// Refuses the agent certificates issued to host `name` so far (`POST /v1/hosts/{host}/revoke`).
    public func revokeCertificates(host name: String) async throws -> CertificateRevocation {
        try await send(.POST, "/v1/hosts/\(escape(name))/revoke")
    }

    public func vms(after: String? = nil, limit: Int = 100) async throws -> VMPage {
        var path = "/v1/vms?limit=\(limit)"
        if let after { path += "&after=\(escape(after))" }
        return try await get(path)
    }

    /// Every VM, following pages.
    public func allVMs() async throws -> [VMView] {
        var items: [VMView] = []
        var cursor: String?
        repeat {
            let page = try await vms(after: cursor, limit: 1000)
            items += page.items
            cursor = page.next
        } while cursor != nil
        return items
    }

    public func vm(_ reference: String) async throws -> VMView { try await get("/v1/vms/\(escape(reference))") }

    /// Creates a VM from the flat API form (`name`, `image`, `cpus`, `memory`, `host`, `app`).
    public func createVM(_ body: [String: JSONValue]) async throws -> VMView {
        try await send(.POST, "/v1/vms", body: try VireoJSON.encoder().encode(JSONValue.object(body)))
    }

    /// Records VMs a host's hypervisor already has (`POST /v1/vms/import`): all of them or none.
    public func importVMs(_ request: VMImportRequest) async throws -> VMImportResult {
        try await send(.POST, "/v1/vms/import", body: try VireoJSON.encoder().encode(request))
    }

    public func startVM(_ reference: String) async throws -> VMView {
        try await send(.POST, "/v1/vms/\(escape(reference))/start")
    }
    public func stopVM(_ reference: String) async throws -> VMView {
        try await send(.POST, "/v1/vms/\(escape(reference))/stop")
    }
    public func deleteVM(_ reference: String) async throws -> VMView {
        try await send(.DELETE, "/v1/vms/\(escape(reference))")
    }
    /// `copyStorage` nil: the controller copies the disk only when the hosts do not share it.
    /// `cold`: stop, copy the disk, start on the destination (across hypervisor families too).
    public func migrateVM(_ reference: String, to host: String, copyStorage: Bool? = nil, cold: Bool = false)
        async throws -> MigrationView
    {
        var body: [String: JSONValue] = ["to": .string(host)]
        if let copyStorage { body["copyStorage"] = .bool(copyStorage) }
        if cold { body["cold"] = .bool(true) }
        return try await send(
            .POST, "/v1/vms/\(escape(reference))/migrate", body: try VireoJSON.encoder().encode(JSONValue.object(body)))
    }

    public func migrations(vm: String? = nil, limit: Int = 100) async throws -> MigrationList {
        var path = "/v1/migrations?limit=\(limit)"
        if let vm { path += "&vm=\(escape(vm))" }
        return try await get(path)
    }

    public func migration(_ id: MigrationID) async throws -> MigrationView {
        try await get("/v1/migrations/\(escape(id.rawValue))")
    }

    /// A dry run, or with `execute` an executed and stored plan.
    public func plan(policy: String?, execute: Bool) async throws -> Plan {
        try await send(.POST, "/v1/plans", body: try VireoJSON.encoder().encode(PlanRequest(policy: policy, execute: execute)))
    }
    public func plans(limit: Int = 100) async throws -> PlanList { try await get("/v1/plans?limit=\(limit)") }
    public func plan(_ id: String) async throws -> Plan { try await get("/v1/plans/\(escape(id))") }
    public func rebalance() async throws -> RebalanceStatus { try await get("/v1/rebalance") }
    /// `policy` `off` stops automatic rebalancing.
    public func setRebalance(policy: String, intervalSeconds: Double?) async throws -> RebalanceStatus {
        var body: [String: JSONValue] = ["policy": .string(policy)]
        if let intervalSeconds { body["intervalSeconds"] = .number(intervalSeconds) }
        return try await send(.PUT, "/v1/rebalance", body: try VireoJSON.encoder().encode(JSONValue.object(body)))
    }

    public func createToken(_ request: TokenRequest) async throws -> TokenCreated {
        var body: [String: JSONValue] = ["name": .string(request.name), "role": .string(request.role.rawValue)]
        if !request.apps.isEmpty { body["apps"] = .array(request.apps.map(JSONValue.string)) }
        if let expiresAt = request.expiresAt { body["expiresAt"] = .string(expiresAt.formatted(.iso8601)) }
        return try await send(.POST, "/v1/tokens", body: try VireoJSON.encoder().encode(JSONValue.object(body)))
    }
    public func tokens() async throws -> TokenList { try await get("/v1/tokens") }
    public func revokeToken(_ name: String) async throws -> TokenView { try await send(.DELETE, "/v1/tokens/\(escape(name))") }
    /// `POST /v1/tokens/{token}/rotate`: a new secret for the controller's own token `admin` or
    /// `join`; the old one is refused from now on.
    public func rotateToken(_ name: String) async throws -> TokenCreated {
        try await send(.POST, "/v1/tokens/\(escape(name))/rotate")
    }
    /// The newest `limit` audit entries at or after `since` (as `GET /v1/audit` takes it), oldest first.
    public func audit(since: String?, limit: Int) async throws -> AuditList {
        var path = "/v1/audit?limit=\(limit)"
        if let since { path += "&since=\(escape(since))" }
        return try await get(path)
    }

    public func apply(manifest: String) async throws -> ApplyResult {
        try await send(.POST, "/v1/apply", body: Data(manifest.utf8), contentType: "application/yaml")
    }
    /// Remembered events after `seq`, without following.
    public func apps() async throws -> AppList { try await get("/v1/apps") }
    public func alerts() async throws -> AlertList { try await get("/v1/alerts") }
    public func packs() async throws -> PackList { try await get("/v1/packs") }
    public func pack(_ name: String) async throws -> PackView { try await get("/v1/packs/\(escape(name))") }
    public func applyPack(_ name: String, to app: String) async throws -> ApplyResult {
        try await send(.POST, "/v1/apps/\(escape(app))/packs/\(escape(name))")
    }
    public func app(_ name: String) async throws -> AppView { try await get("/v1/apps/\(escape(name))") }
    public func deleteApp(_ name: String, vms: String) async throws -> AppDeletion {
        try await send(.DELETE, "/v1/apps/\(escape(name))?vms=\(escape(vms))")
    }
    /// Pushes samples in Prometheus text format for an application.
    public func pushSamples(app: String, exposition: String) async throws -> IngestResult {
        try await send(.POST, "/v1/apps/\(escape(app))/samples", body: Data(exposition.utf8), contentType: "text/plain")
    }
    /// A metric's stored points, or with `objective` that objective's indicator per judged window.
    public func series(
        app: String, metric: String? = nil, objective: String? = nil, from: String? = nil, to: String? = nil
    ) async throws -> SeriesResponse {
        let query = [
            metric.map { "metric=\(escape($0))" }, objective.map { "objective=\(escape($0))" },
            from.map { "from=\(escape($0))" }, to.map { "to=\(escape($0))" },
        ].compactMap { $0 }
        return try await get("/v1/apps/\(escape(app))/series?" + query.joined(separator: "&"))
    }

    /// What the cluster recorded over the last `since` (seconds or a duration, default 24h) in
    /// steps of `step` (a multiple of the recording step, default it).
    public func history(since: String? = nil, step: String? = nil) async throws -> ClusterHistory {
        let query = [since.map { "since=\(escape($0))" }, step.map { "step=\(escape($0))" }].compactMap { $0 }
        return try await get("/v1/history" + (query.isEmpty ? "" : "?" + query.joined(separator: "&")))
    }

    public func events(after seq: Int = 0) async throws -> [ClusterEvent] {
        let (_, data) = try await raw(.GET, "/v1/events?follow=false&after=\(seq)")
        let decoder = VireoJSON.decoder()
        return try String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap { line in
            guard line.hasPrefix("data: ") else { return nil }
            return try decoder.decode(ClusterEvent.self, from: Data(line.dropFirst(6).utf8))
        }
    }
    /// A VM's serial console output as the controller keeps it (its last 256 KiB): the last
    /// `tail` lines, or what came after `after` (a `position` returned before). `position` is
    /// where the returned text ends.
    public func vmLogs(_ reference: String, tail: Int? = nil, after: UInt64? = nil) async throws -> (
        text: String, position: UInt64
    ) {
        var query: [String] = []
        if let tail { query.append("tail=\(tail)") }
        if let after { query.append("after=\(after)") }
        let path = "/v1/vms/\(escape(reference))/logs" + (query.isEmpty ? "" : "?" + query.joined(separator: "&"))
        let (_, headers, data) = try await exchange(.GET, path)
        let position = headers.first(name: "Vireo-Log-Position").flatMap { UInt64($0) } ?? 0
        return (String(decoding: data, as: UTF8.self), position)
    }
    public func metrics() async throws -> String {
        String(decoding: try await raw(.GET, "/metrics").1, as: UTF8.self)
    }

    // MARK: Transport

    func get<T: Decodable>(_ path: String) async throws -> T { try await send(.GET, path) }

    /// `timeout`: this request's, instead of the client's.
    func send<T: Decodable>(
        _ method: HTTPMethod, _ path: String, body: Data? = nil, contentType: String = "application/json",
        timeout: TimeAmount? = nil
    ) async throws -> T {
        let (_, _, data) = try await exchange(method, path, body: body, contentType: contentType, timeout: timeout)
        do {
            return try VireoJSON.decoder().decode(T.self, from: data)
        } catch {
            throw VireoError(.internal, "unexpected response from \(server)\(path): \(error)")
        }
    }

    /// Sends a request; returns status and body for 2xx, throws the envelope's error otherwise.
    public func raw(_ method: HTTPMethod, _ path: String, body: Data? = nil, contentType: String = "application/json")
        async throws -> (Int, Data)
    {
        let (status, _, data) = try await exchange(method, path, body: body, contentType: contentType)
        return (status, data)
    }

    /// `raw`, with the response headers: from the controller that answered last, else from the
    /// next one of `servers` that can be reached and leads.
    func exchange(
        _ method: HTTPMethod, _ path: String, body: Data? = nil, contentType: String = "application/json",
        timeout: TimeAmount? = nil
    ) async throws -> (Int, HTTPHeaders, Data) {
        let first = answering.index.withLock { $0 }
        var lastError: VireoError?
        for offset in servers.indices {
            let index = (first + offset) % servers.count
            do {
                let answer = try await exchange(
                    servers[index], method, path, body: body, contentType: contentType, timeout: timeout)
                if index != first { answering.index.withLock { $0 = index } }
                return answer
            } catch let error as VireoError where servers.count > 1 && Self.tryNext(error) {
                lastError = error
            }
        }
        throw lastError ?? VireoError(.unavailable, "no controller URL given")
    }

    /// Another controller may answer: this one could not be reached, or stands by.
    private static func tryNext(_ error: VireoError) -> Bool {
        error.code == .unavailable
            && (error.message.hasPrefix("cannot reach the controller") || error.message.contains("is a standby"))
    }

    /// One request to `server`, following a standby's redirect to the leader (307 or 308, at most
    /// `maxRedirects` of them) with the token: never from https to http, where it would cross
    /// the network in the clear.
    private func exchange(
        _ server: String, _ method: HTTPMethod, _ path: String, body: Data?, contentType: String, timeout: TimeAmount?
    ) async throws -> (Int, HTTPHeaders, Data) {
        var (url, origin) = (server + path, server)
        for _ in 0...Self.maxRedirects {
            let (status, headers, data) = try await send(
                url, origin: origin, method, body: body, contentType: contentType, timeout: timeout)
            if status == 307 || status == 308, let location = headers.first(name: "Location") {
                guard let next = Self.redirect(from: url, to: location) else {
                    throw VireoError(
                        .unavailable,
                        "the controller at \(server) redirects to \(location), which is not https like it: not followed")
                }
                url = next
                origin = Self.origin(of: next)
                continue
            }
            guard (200..<300).contains(status) else {
                if let envelope = try? VireoJSON.decoder().decode(ErrorEnvelope.self, from: data) {
                    throw VireoError(envelope.error.code, envelope.error.message)
                }
                throw VireoError(.unknown, "HTTP \(status) from \(url)")
            }
            return (status, headers, data)
        }
        throw VireoError(.unavailable, "the controller at \(server) redirected more than \(Self.maxRedirects) times")
    }

    static let maxRedirects = 3

    /// Where a redirect from `url` to `location` (absolute, or relative to it) leads; nil if it
    /// leaves https.
    static func redirect(from url: String, to location: String) -> String? {
        guard let base = URL(string: url), let target = URL(string: location, relativeTo: base)?.absoluteURL,
            let scheme = target.scheme?.lowercased(),
            scheme == "https" || (scheme == "http" && base.scheme?.lowercased() == "http")
        else { return nil }
        return target.absoluteString
    }

    /// `scheme://host:port` of `url`, for messages.
    static func origin(of url: String) -> String {
        guard let components = URLComponents(string: url), let scheme = components.scheme, let host = components.host
        else { return url }
        let bracketed = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        return "\(scheme)://\(bracketed)" + (components.port.map { ":\($0)" } ?? "")
    }

    private func send(
        _ url: String, origin: String, _ method: HTTPMethod, body: Data?, contentType: String, timeout: TimeAmount?
    ) async throws -> (Int, HTTPHeaders, Data) {
        var request = HTTPClientRequest(url: url)
        request.method = method
        // A standby serves reads from a snapshot up to a second old; this client reads what it
        // has just changed, so it reads from the leader (a standby redirects it there).
        request.headers.add(name: "Vireo-Consistency", value: "leader")
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        if let body {
            request.headers.add(name: "Content-Type", value: contentType)
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        do {
            let response = try await http.execute(request, timeout: timeout ?? self.timeout)
            let buffer = try await response.body.collect(upTo: 256 << 20)
            return (Int(response.status.code), response.headers, Data(buffer.readableBytesView))
        } catch {
            throw VireoError(.unavailable, "cannot reach the controller at \(origin): \(Self.describe(error))")
        }
    }

    static func describe(_ error: any Error) -> String {
        let text = String(describing: error)
        if text.contains("connectionRefused") || text.contains("Connection refused") { return "connection refused" }
        if text.contains("deadlineExceeded") || text.contains("readTimeout") { return "timed out" }
        if text.contains("CERTIFICATE_VERIFY_FAILED") {
            return "its TLS certificate is not trusted (pass --ca-cert with the certificate of the authority that issued it)"
        }
        if text.contains("remoteConnectionClosed") {
            return "it closed the connection (if it serves https, use an https:// URL)"
        }
        return text
    }

    private func escape(_ component: String) -> String {
        component.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(["/", "?", "&", "#", "=", "+"]))
            ?? component
    }
}

extension VireoClient {
    /// `POST /v1/agent/certificate`: a client certificate for the agent's host, with the join token.
    public func agentCertificate(_ request: AgentCertificateRequest) async throws -> AgentCertificate {
        try await send(.POST, "/v1/agent/certificate", body: try VireoJSON.encoder().encode(request))
    }
}

extension VireoClient: ControllerLink {
    public func register(_ registration: AgentRegistration) async throws -> AgentRegistrationResponse {
        try await send(.POST, "/v1/agent/register", body: try VireoJSON.encoder().encode(registration))
    }
    public func heartbeat(_ heartbeat: AgentHeartbeat) async throws -> DesiredHostState {
        try await send(.POST, "/v1/agent/heartbeat", body: try VireoJSON.encoder().encode(heartbeat))
    }
    public func deliver(_ samples: AgentSamples) async throws {
        let _: IngestResult = try await send(.POST, "/v1/agent/samples", body: try VireoJSON.encoder().encode(samples))
    }
    public func watch(host: HostID, after known: Int, timeout: Duration) async throws -> Int {
        let waitMs = min(max(0, Int(timeout / .milliseconds(1))), AgentWatch.maximumWaitMs)
        let answer: AgentWatch = try await send(
            .GET, "/v1/agent/watch?host=\(escape(host.rawValue))&after=\(known)&waitMs=\(waitMs)",
            timeout: .milliseconds(Int64(waitMs)) + self.timeout)
        return answer.generation
    }
}

/// The context verbs over HTTP: against the controller (every host) or an agent's local API.
extension VireoClient: ContextService {
    public func listContexts() async throws -> ContextList { try await get("/v1/contexts") }

    public func context(_ name: String, host: String?) async throws -> Context {
        try await get("/v1/contexts/\(escape(name))\(hostQuery(host))")
    }

    public func openContext(_ request: ContextOpenRequest) async throws -> Context {
        let spec = request.spec
        var body: [String: JSONValue] = [
            "name": .string(spec.name), "kind": .string(spec.kind.rawValue), "image": .string(spec.image),
            "cpus": .number(Double(spec.cpus)), "memory": .string("\(spec.memoryMiB)MiB"),
            "network": .string(spec.network.description), "wait": .bool(request.wait),
        ]
        if let display = spec.display { body["display"] = .string(display.rawValue) }
        if let host = request.host { body["host"] = .string(host) }
        return try await send(.POST, "/v1/contexts", body: try VireoJSON.encoder().encode(JSONValue.object(body)))
    }

    public func resetContext(_ name: String, host: String?, force: Bool) async throws -> Context {
        try await send(
            .POST, "/v1/contexts/\(escape(name))/reset\(hostQuery(host))",
            body: try VireoJSON.encoder().encode(JSONValue.object(["force": .bool(force)])))
    }

    public func keepContext(_ name: String, host: String?) async throws -> Context {
        try await send(.POST, "/v1/contexts/\(escape(name))/keep\(hostQuery(host))")
    }

    public func closeContext(_ name: String, host: String?) async throws -> Context {
        try await send(.DELETE, "/v1/contexts/\(escape(name))\(hostQuery(host))")
    }

    public func contextLogs(_ name: String, host: String?, tail: Int?) async throws -> String {
        let query = [host.map { "host=\(escape($0))" }, tail.map { "tail=\($0)" }].compactMap { $0 }
        let path = "/v1/contexts/\(escape(name))/logs" + (query.isEmpty ? "" : "?" + query.joined(separator: "&"))
        return String(decoding: try await exchange(.GET, path).2, as: UTF8.self)
    }

    private func hostQuery(_ host: String?) -> String { host.map { "?host=\(escape($0))" } ?? "" }
}
