import Foundation
import Hummingbird
import HummingbirdAuth
import NIOCore
import NIOSSL
import Synchronization
import VireoAPI
import VireoController
import VireoModel
import VireoSecurity

/// The controller's own two tokens, in files of its data directory, made when it first listens
/// beyond loopback: `admin` may do everything; `join` lets an agent register and heartbeat,
/// nothing else (with `--tls-auto`, only get its host's certificate, which it then speaks with).
/// Tokens of other roles are made with `vireo token create` and kept in the store. Both can be
/// rotated (`rotate`).
public final class AccessTokens: Sendable {
    /// One of the two.
    public enum Kind: String, Sendable, CaseIterable {
        case admin, join
        /// Its file in the data directory.
        var file: String { "\(rawValue).token" }
        /// Its name among the store's secrets (shared by controllers on one database).
        public var secretName: String { "\(rawValue)-token" }
    }

    private let secrets: Mutex<[Kind: String]>
    /// The data directory whose files hold them; nil: in memory only.
    let directory: String?
    /// Controllers on one database share them through its `secrets` (`ServeOptions.shareSecrets`).
    let shared: Bool

    public var admin: String { self[.admin] }
    public var join: String { self[.join] }
    public subscript(kind: Kind) -> String { secrets.withLock { $0[kind]! } }

    public init(admin: String, join: String, directory: String? = nil, shared: Bool = false) {
        self.secrets = Mutex([.admin: admin, .join: join])
        self.directory = directory
        self.shared = shared
    }

    /// How the store keeps a secret held in files: their contents, in order, as JSON.
    public static func storedValue(ofFiles contents: [String]) throws -> String {
        String(decoding: try JSONEncoder().encode(contents), as: UTF8.self)
    }

    /// The token a stored value holds.
    static func token(inStored value: String) -> String? {
        (try? JSONDecoder().decode([String].self, from: Data(value.utf8)))?.first?
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Replaces one of the tokens with a new one: when `shared`, in the store (where a controller
    /// that shares the database takes it from; the old one's digest is kept, so a data directory
    /// still holding it is known as this cluster's), then in its file (mode 0600) and here. The
    /// old one is refused from then on. Returns the new token.
    public func rotate(_ kind: Kind, controller: Controller) async throws -> String {
        let current = self[kind]
        let fresh = AccessToken.newSecret()
        if shared {
            let stored = try await controller.secret(
                kind.secretName, proposing: try Self.storedValue(ofFiles: [current + "\n"]))
            guard Self.token(inStored: stored) == current else {
                throw VireoError(
                    .conflict,
                    "the \(kind.rawValue) token in the database is not this controller's (another controller rotated it): "
                        + "nothing was rotated; restart this controller to take the cluster's")
            }
            try await controller.rotateSecret(kind.secretName, from: stored, to: try Self.storedValue(ofFiles: [fresh + "\n"]))
        }
        // The file and the memory together: two rotations at once leave them alike.
        try secrets.withLock { secrets in
            if let directory {
                try CertificateAuthority.replaceFile(
                    (directory as NSString).appendingPathComponent(kind.file), with: fresh + "\n", mode: 0o600)
            }
            secrets[kind] = fresh
        }
        return fresh
    }

    /// Takes the cluster's tokens from the store, where the leader rotates them: a standby does at
    /// each snapshot, so that a rotated admin token stops reading through it too.
    public func refresh(from controller: Controller) async throws {
        // Only reads: a standby writes nothing.
        for kind in Kind.allCases {
            guard let stored = try await controller.secret(kind.secretName), let token = Self.token(inStored: stored),
                !token.isEmpty, token != self[kind]
            else { continue }
            secrets.withLock { $0[kind] = token }
        }
    }

    /// Reads the tokens from `directory`, creating them (mode 0600) on first start.
    /// Returns the tokens and whether they were created now.
    public static func loadOrCreate(in directory: String, shared: Bool = false) throws -> (
        tokens: AccessTokens, created: Bool
    ) {
        let fm = FileManager.default
        try fm.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var created = false
        func token(_ file: String) throws -> String {
            let path = (directory as NSString).appendingPathComponent(file)
            if let text = try? String(contentsOfFile: path, encoding: .utf8) {
                let value = text.trimmingCharacters(in: .whitespacesAndNewlines)
                if !value.isEmpty { return value }
            }
            let value = AccessToken.newSecret()
            guard fm.createFile(atPath: path, contents: Data((value + "\n").utf8), attributes: [.posixPermissions: 0o600])
            else { throw VireoError(.internal, "cannot write \(path)") }
            created = true
            return value
        }
        let tokens = AccessTokens(
            admin: try token(Kind.admin.file), join: try token(Kind.join.file), directory: directory, shared: shared)
        return (tokens, created)
    }
}

/// The context of every request: Hummingbird's, and who is asking (`identity`).
public struct VireoRequestContext: AuthRequestContext, RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// Set by `CallerAuthenticator`; nil only on the public paths (and in a router without it).
    public var identity: Caller?
    /// The connection: its TLS handshake tells which agent's certificate the peer presented.
    let channel: any Channel

    public init(source: Source) {
        coreContext = .init(source: source)
        identity = nil
        channel = source.channel
    }

    /// The host named by the client certificate the peer presented, and when it was issued, if it
    /// presented one that `ClusterAuthority` issued to an agent (the handshake verified it against
    /// that authority).
    func agentCertificate() async -> (host: String, issuedAt: Date)? {
        guard let certificate = try? await channel.nioSSL_peerCertificate().get(),
            let bytes = try? certificate.toDERBytes()
        else { return nil }
        return ClusterAuthority.agentCertificate(der: bytes)
    }
}

/// What is served to anyone: health, the API's description, and the console's files.
func isPublicPath(_ path: String) -> Bool {
    path == "/healthz" || path == "/openapi.json" || ConsoleFiles.isPublic(path)
}

/// Who presents this secret: the controller's own admin or join token, or a token of the store
/// that is active. Never logs a token.
func caller(presenting secret: String, tokens: AccessTokens?, controller: Controller) -> Caller? {
    if let tokens {
        if constantTimeEqual(secret, tokens.admin) { return Caller(name: "admin", role: .admin) }
        if constantTimeEqual(secret, tokens.join) { return Caller(name: "join", role: .agent) }
    }
    return controller.authenticate(secret: secret).map(Caller.init)
}

func constantTimeEqual(_ a: String, _ b: String) -> Bool {
    let x = Array(a.utf8)
    let y = Array(b.utf8)
    guard x.count == y.count else { return false }
    var difference: UInt8 = 0
    for i in 0..<x.count { difference |= x[i] ^ y[i] }
    return difference == 0
}

/// Finds who is asking: on `/v1/agent/` of a controller that verifies agents, from the agent's
/// certificate; otherwise from the bearer token. A request that presents a token is held to that
/// token's role, on loopback too; one without a token is `loopback`, an admin, when the API
/// listens on loopback only, and nobody otherwise.
struct CallerAuthenticator: AuthenticatorMiddleware {
    typealias Context = VireoRequestContext
    let tokens: AccessTokens?
    let controller: Controller
    let loopbackOnly: Bool
    /// The API's TLS admits agents' certificates of the cluster authority.
    let agentCertificates: Bool

    func authenticate(request: Request, context: Context) async throws -> Caller? {
        let path = request.uri.path
        if isPublicPath(path) { return nil }
        if agentCertificates, path.hasPrefix("/v1/agent/"), let certificate = await context.agentCertificate() {
            guard !controller.isRevoked(agentHost: certificate.host, issuedAt: certificate.issuedAt) else {
                throw VireoError(
                    .unauthorized,
                    "the certificate of host '\(certificate.host)' (issued \(certificate.issuedAt)) was revoked: "
                        + "remove the agent's tls/agent-*.pem and start it again with the join token")
            }
            return Caller(agentHost: certificate.host)
        }
        if let bearer = request.headers.bearer {
            guard let caller = caller(presenting: bearer.token, tokens: tokens, controller: controller) else {
                throw VireoError(.unauthorized, "invalid token: unknown, expired or revoked")
            }
            return caller
        }
        return loopbackOnly ? .loopback : nil
    }
}

/// Holds every request to its caller's role (`AccessPolicy`), and writes each mutating request
/// to the audit trail with its answer's status — refusals included. Agents' traffic and
/// applications' samples are not audited: they are data, not changes an operator makes.
struct AccessMiddleware: RouterMiddleware {
    typealias Context = VireoRequestContext
    let controller: Controller

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response
    {
        let path = request.uri.path
        if isPublicPath(path) { return try await next(request, context) }
        guard let caller = context.identity else {
            throw VireoError(.unauthorized, "missing bearer token; pass --token or set VIREO_TOKEN")
        }
        let method = request.method.rawValue
        guard Self.isAudited(method: method, path: path) else {
            try await authorize(caller, method: method, path: path)
            return try await next(request, context)
        }
        do {
            try await authorize(caller, method: method, path: path)
            let response = try await next(request, context)
            await audit(caller, request, context, status: Int(response.status.code), error: nil)
            return response
        } catch {
            let refusal = ErrorEnvelopeMiddleware<Context>.vireoError(from: error)
            await audit(caller, request, context, status: refusal.code.httpStatus, error: refusal.message)
            throw error
        }
    }

    func authorize(_ caller: Caller, method: String, path: String) async throws {
        var decision = AccessPolicy.decide(caller, method: method, path: path)
        if case .ownerOfVM(let vm) = decision {
            // No such VM: the route answers 404.
            guard let app = await controller.application(ofVM: vm.removingPercentEncoding ?? vm) else { return }
            decision = AccessPolicy.decideOwnerOfVM(caller, method: method, path: path, app: app)
        }
        if case .deny(let reason) = decision { throw VireoError(.forbidden, reason) }
    }

    static func isAudited(method: String, path: String) -> Bool {
        if method == "GET" || method == "HEAD" || method == "OPTIONS" { return false }
        // An agent's certificate is a credential issued: who asked for it is recorded.
        if path == "/v1/agent/certificate" { return true }
        if path.hasPrefix("/v1/agent/") { return false }
        let parts = path.split(separator: "/")
        return !(parts.count == 4 && parts[1] == "apps" && parts[3] == "samples")
    }

    private func audit(_ caller: Caller, _ request: Request, _ context: Context, status: Int, error: String?) async {
        let query = request.uri.query.map { "?\($0)" } ?? ""
        await controller.recordAudit(
            AuditEntry(
                at: controller.now(), who: caller.name, role: caller.role, method: request.method.rawValue,
                path: request.uri.path + query, status: status, requestId: context.id, error: error))
    }
}
