import Crypto
import Foundation
import Synchronization
import VireoAPI
import VireoModel

/// The API tokens by the SHA-256 of their secrets, so a request's token is checked with one hash
/// and one lookup, without the controller's actor. Changed only after the store has the change.
final class AccessBook: Sendable {
    private let byHash: Mutex<[String: AccessToken]>

    init(_ tokens: [AccessToken]) {
        byHash = Mutex(Dictionary(tokens.map { ($0.secretHash, $0) }, uniquingKeysWith: { a, _ in a }))
    }

    func token(secret: String) -> AccessToken? {
        let hash = Self.hash(secret)
        return byHash.withLock { $0[hash] }
    }

    func put(_ token: AccessToken) { byHash.withLock { $0[token.secretHash] = token } }

    /// Lowercase hex SHA-256.
    static func hash(_ secret: String) -> String {
        SHA256.hash(data: Data(secret.utf8)).map { String(format: "%02x", $0) }.joined()
    }
}

extension Controller {
    /// Rotates one of the cluster's secrets in the store (`ClusterStore.rotateSecret`), keeping a
    /// digest of the value it replaces.
    public nonisolated func rotateSecret(_ name: String, from expected: String, to value: String) async throws {
        try await store.rotateSecret(name, from: expected, to: value, supersededDigest: AccessBook.hash(expected))
    }

    /// The digest `rotateSecret` keeps of a value a secret had (lowercase hex SHA-256).
    public static func secretDigest(_ value: String) -> String { AccessBook.hash(value) }

    /// The cluster's secret `name` as stored; nil if it has none. Only reads.
    public nonisolated func secret(_ name: String) async throws -> String? { try await store.secret(name) }

    /// The cluster's secret `name` as stored, or `proposed`, stored now, if it has none.
    public nonisolated func secret(_ name: String, proposing proposed: String) async throws -> String {
        try await store.secret(name, proposing: proposed)
    }

    /// The token whose secret this is, if it is active (not expired, not revoked).
    public nonisolated func authenticate(secret: String) -> AccessToken? {
        guard let token = accessBook.token(secret: secret), token.status(at: now()) == .active else { return nil }
        return token
    }

    /// Makes a token; its secret is in the answer and nowhere else.
    public nonisolated func createToken(_ request: TokenRequest) async throws -> TokenCreated {
        let secret = AccessToken.newSecret()
        let token = AccessToken(
            name: request.name, role: request.role, apps: request.apps, createdAt: now(), expiresAt: request.expiresAt,
            secretHash: AccessBook.hash(secret))
        try await store.insertToken(token)
        accessBook.put(token)
        logger.info("token created", metadata: ["token": "\(token.name)", "role": "\(token.role.rawValue)"])
        return TokenCreated(token: TokenView(token, now: now()), secret: secret)
    }

    public nonisolated func listTokens() async throws -> TokenList {
        let now = now()
        return TokenList(items: try await store.tokens().map { TokenView($0, now: now) })
    }

    /// Revokes a token: refused from now on. Revoking a revoked token changes nothing.
    public nonisolated func revokeToken(_ name: String) async throws -> TokenView {
        guard var token = try await store.tokens().first(where: { $0.name == name }) else {
            throw VireoError.notFound("token", name)
        }
        if token.revokedAt == nil {
            token.revokedAt = now()
            try await store.updateToken(token)
            accessBook.put(token)
            logger.info("token revoked", metadata: ["token": "\(token.name)"])
        }
        return TokenView(token, now: now())
    }

    /// Refuses from now on every agent certificate issued to `host` so far: a host whose key may
    /// have left it (a stolen disk, a host given away) can no longer speak for it with that
    /// certificate, and cannot renew it. The host gets a new one only by joining again with the
    /// join token. `host` need not be registered (a removed host's certificate is still valid
    /// until it expires); the answer says whether it is.
    public nonisolated func revokeCertificates(host reference: String) async throws -> CertificateRevocation {
        let registered = await registeredName(ofHost: reference)
        let host = registered ?? reference
        try ResourceName.validate(host, field: "host")
        let cutoff = try await store.revokeCertificates(host: host, before: now())
        certificateCutoffs.withLock { $0[host] = cutoff }
        logger.notice("agent certificates revoked", metadata: ["host": "\(host)", "before": "\(cutoff)"])
        return CertificateRevocation(host: host, revokedBefore: cutoff, registered: registered != nil)
    }

    /// The name of the registered host of this name or ID.
    func registeredName(ofHost reference: String) -> String? {
        (model.state.host(named: reference) ?? model.state.hosts[HostID(reference)])?.name
    }

    /// Whether a certificate the cluster authority issued to `host` at `issuedAt` is revoked.
    public nonisolated func isRevoked(agentHost host: String, issuedAt: Date) -> Bool {
        guard let cutoff = certificateCutoffs.withLock({ $0[host] }) else { return false }
        return issuedAt <= cutoff
    }

    /// When a certificate issued to `host` now says it was issued: now, or just after the host's
    /// cutoff when that is not yet a second past (certificates count in whole seconds), so that a
    /// host that joins again at once is not refused its new certificate.
    public nonisolated func certificateIssueTime(host: String) -> Date {
        let now = now()
        guard let cutoff = certificateCutoffs.withLock({ $0[host] }) else { return now }
        return max(now, cutoff.addingTimeInterval(1))
    }

    /// Appends to the audit trail. A store that refuses is logged with the entry: the request
    /// it records has already happened.
    public nonisolated func recordAudit(_ entry: AuditEntry) async {
        do {
            _ = try await store.appendAudit(entry)
        } catch {
            logger.error(
                "audit entry not stored",
                metadata: [
                    "error": "\(error)", "who": "\(entry.who)", "method": "\(entry.method)", "path": "\(entry.path)",
                    "status": "\(entry.status)", "request": "\(entry.requestId)",
                ])
        }
    }

    /// Deletes audit entries older than the retention (`ControllerSettings.auditRetention`).
    @discardableResult
    public nonisolated func pruneAudit() async throws -> Int {
        let pruned = try await store.pruneAudit(before: now().addingTimeInterval(-settings.auditRetention.seconds))
        if pruned > 0 { logger.info("audit entries past their retention deleted", metadata: ["count": "\(pruned)"]) }
        return pruned
    }

    public nonisolated func auditTrail(since: Date?, limit: Int) async throws -> AuditList {
        AuditList(items: try await store.audit(since: since, limit: limit))
    }

    /// The application of a VM (by name or ID): `.some(nil)` if it is in none, nil if there is no
    /// such VM.
    public func application(ofVM reference: String) -> String?? {
        guard let vm = try? model.lookupVM(reference) else { return nil }
        return .some(vm.spec.app)
    }

    /// The application of each VM of these names that exists.
    public func applications(ofVMsNamed names: [String]) -> [String: String?] {
        var apps: [String: String?] = [:]
        for name in names {
            if let vm = try? model.lookupVM(name) { apps[name] = .some(vm.spec.app) }
        }
        return apps
    }
}
