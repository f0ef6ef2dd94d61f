import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import VireoAPI
import VireoModel
import VireoSecurity

/// An agent's link to controllers it reaches over https with their own certificate authority
/// (`--ca-cert`): it speaks with the client certificate that authority issued to its host, kept in
/// `directory` (`agent-key.pem`, mode 0600, and `agent-cert.pem`).
///
/// Before its first request it loads that certificate, or, when there is none (or it is not the
/// host's, not the authority's, or has less than 30 days left), asks for one with the join token
/// (`POST /v1/agent/certificate`; a key made here, which never leaves the host). A controller
/// without an authority of its own (`--tls-cert`) answers that it has none: the link then speaks
/// with the join token alone, as a plain `VireoClient`. A controller that cannot be reached fails
/// the request as any other, and the next one tries again: the agent runs offline meanwhile.
public final class CertifiedAgentLink: ControllerLink {
    let server: String
    let token: String?
    let caFile: String
    let host: String
    let directory: String
    let timeout: TimeAmount
    let logger: Logger
    private let enrollment = Enrollment()

    public init(
        server: String, token: String?, caFile: String, host: String, directory: String, timeout: TimeAmount,
        logger: Logger
    ) {
        self.server = server
        self.token = token
        self.caFile = caFile
        self.host = host
        self.directory = directory
        self.timeout = timeout
        self.logger = logger
    }

    /// The client requests go through: one with the host's certificate once it has one.
    private actor Enrollment {
        var client: VireoClient?
        /// When to make it again (renew the certificate); nil: never.
        var renewAt: Date?
        var pending: Task<(VireoClient, Date?), Error>?

        func current(_ make: @escaping @Sendable () async throws -> (VireoClient, Date?)) async throws -> VireoClient {
            if let client, renewAt.map({ $0 > Date() }) ?? true { return client }
            if let pending { return try await pending.value.0 }
            let task = Task { try await make() }
            pending = task
            defer { pending = nil }
            let (made, renewal) = try await task.value
            client = made
            renewAt = renewal
            return made
        }
    }

    /// The client to use now: made (and the certificate loaded or obtained) on first use, and
    /// again when the certificate is due for renewal.
    public func client() async throws -> VireoClient {
        try await enrollment.current { [self] in try await self.makeClient() }
    }

    private func makeClient() async throws -> (VireoClient, Date?) {
        let authorityPEM: String
        do {
            authorityPEM = try String(contentsOfFile: caFile, encoding: .utf8)
        } catch {
            throw VireoError.invalid(field: "--ca-cert", value: "'\(caFile)'", "cannot read the file: \(error)")
        }
        let kept = AgentIdentity.load(from: directory, host: host, authorityPEM: authorityPEM)
        if let kept, !kept.isDue() { return (try certified(kept), Self.renewal(of: kept)) }
        let plain = VireoClient(
            server: server, token: token, timeout: timeout, http: VireoClient.httpClient(trusting: caFile))
        // A renewal: the certificate about to expire vouches for its host. Otherwise the join token.
        let asking = try kept.map(certified) ?? plain
        let (privateKey, request) = try AgentIdentity.request(host: host)
        let answer: AgentCertificate
        do {
            answer = try await asking.agentCertificate(AgentCertificateRequest(host: host, csr: request))
        } catch let error as VireoError where error.code == .failedPrecondition && kept == nil {
            logger.notice(
                "the controller has no certificate authority of its own: joining with the join token alone",
                metadata: ["reason": "\(error.message)"])
            return (plain, nil)
        } catch {
            // A renewal that fails leaves the certificate in use while it lasts; tried again in an hour.
            guard let kept else { throw error }
            logger.warning(
                "cannot renew this host's certificate", metadata: ["error": "\(error)", "expires": "\(kept.expiresAt)"])
            return (try certified(kept), Date() + 3600)
        }
        let identity = AgentIdentity(certificate: answer.certificate, privateKey: privateKey, expiresAt: answer.expiresAt)
        try identity.save(in: directory)
        logger.notice(
            "got this host's certificate from the controller's authority",
            metadata: ["host": "\(host)", "expires": "\(answer.expiresAt)", "directory": "\(directory)"])
        return (try certified(identity), Self.renewal(of: identity))
    }

    private static func renewal(of identity: AgentIdentity) -> Date {
        identity.expiresAt - ClusterAuthority.renewWithin
    }

    private func certified(_ identity: AgentIdentity) throws -> VireoClient {
        VireoClient(
            server: server, token: token, timeout: timeout,
            http: try VireoClient.httpClient(trusting: caFile, identity: identity))
    }

    public func register(_ registration: AgentRegistration) async throws -> AgentRegistrationResponse {
        try await client().register(registration)
    }
    public func heartbeat(_ heartbeat: AgentHeartbeat) async throws -> DesiredHostState {
        try await client().heartbeat(heartbeat)
    }
    public func deliver(_ samples: AgentSamples) async throws {
        try await client().deliver(samples)
    }
    public func watch(host: HostID, after known: Int, timeout: Duration) async throws -> Int {
        try await client().watch(host: host, after: known, timeout: timeout)
    }
}
