import Crypto
import Foundation
import SwiftASN1
import VireoModel
import X509

/// The certificate authority of a cluster's API (`vireo controller --tls-auto`): it issues the
/// controller's own server certificate at each start, and to each agent that joins with the join
/// token a client certificate naming its host. Agents trust only this authority's certificate
/// (`--ca-cert`), and the controller admits to `/v1/agent/` only certificates it issued.
///
/// Kept in `<data-dir>/tls/` (`ca-key.pem`, mode 0600, and `ca-cert.pem`). Controllers sharing
/// one PostgreSQL database share the first one's authority: the database keeps it, and each later
/// controller writes it into its own `tls/` (`vireo controller`).
public struct ClusterAuthority: Sendable {
    /// How long an agent's certificate is valid; an agent asks for a new one when less than
    /// `renewWithin` of it is left.
    public static let agentValidity: Duration = .seconds(365 * 86_400)
    public static let renewWithin: TimeInterval = 30 * 86_400
    /// How long the controller's server certificate is valid (a new one is issued at each start).
    public static let serverValidity: Duration = .seconds(365 * 86_400)
    /// What an agent's certificate's common name starts with; the host's name follows.
    public static let agentPrefix = "vireo-agent-"
    public static let defaultName = "Vireo cluster authority"

    let authority: CertificateAuthority
    public var certificate: Certificate { authority.certificate }
    public var certificatePEM: String { authority.certificatePEM }

    /// A new authority held in memory only (tests).
    public init(name: String = ClusterAuthority.defaultName) throws {
        authority = try CertificateAuthority(name: name)
    }

    /// The authority kept in `directory`, made there on first use.
    public init(directory: String) throws {
        authority = try CertificateAuthority(
            directory: directory, name: Self.defaultName,
            consequence: "agents then need new certificates: remove their tls/ directories and restart them with the join token")
    }

    /// A fresh key and a server certificate for `names` (IP addresses or DNS names), both PEM.
    public func serverCredentials(names: [String], now: Date = Date()) throws -> (certificate: String, privateKey: String) {
        let key = P256.Signing.PrivateKey()
        let certificate = try authority.sign(
            Certificate.PublicKey(key.publicKey), commonName: "vireo-controller", names: names, use: .server,
            validity: Self.serverValidity, now: now)
        return (try certificate.serializeAsPEM().pemString, key.pemRepresentation)
    }

    /// A client certificate (PEM) for host `host`, for the key of `request` (a PEM certificate
    /// signing request, whose signature proves its sender holds that key). What the request asks
    /// to be named is ignored: the certificate names `host`. A request that cannot be read or
    /// whose signature does not verify is refused, naming `csr`.
    public func signAgent(request: String, host: String, now: Date = Date()) throws(VireoError) -> (
        certificate: String, expiresAt: Date
    ) {
        let csr: CertificateSigningRequest
        do {
            csr = try CertificateSigningRequest(pemEncoded: request)
        } catch {
            throw VireoError.invalid(
                field: "csr", value: "(\(request.utf8.count) bytes)", "is not a PEM certificate signing request")
        }
        guard csr.publicKey.isValidSignature(csr.signature, for: csr) else {
            throw VireoError.invalid(field: "csr", value: "(\(request.utf8.count) bytes)", "its signature does not verify")
        }
        do {
            let certificate = try authority.sign(
                csr.publicKey, commonName: Self.agentPrefix + host, use: .client, validity: Self.agentValidity, now: now)
            return (try certificate.serializeAsPEM().pemString, certificate.notValidAfter)
        } catch {
            throw VireoError(.internal, "cannot issue a certificate for host '\(host)': \(error)")
        }
    }

    /// The host an agent's certificate names, from its DER bytes; nil for any other certificate
    /// (the TLS handshake has already checked that this authority issued it, for a client).
    public static func agentHost(certificateDER bytes: [UInt8]) -> String? {
        agentCertificate(der: bytes)?.host
    }

    /// The host an agent's certificate names and when it was issued (to the second: its
    /// `notValidBefore` is the issue time less `CertificateAuthority.clockSkew`), from its DER bytes.
    public static func agentCertificate(der bytes: [UInt8]) -> (host: String, issuedAt: Date)? {
        guard let certificate = try? Certificate(derEncoded: bytes), let host = agentHost(of: certificate) else { return nil }
        return (host, certificate.notValidBefore.addingTimeInterval(CertificateAuthority.clockSkew.timeInterval))
    }

    static func agentHost(of certificate: Certificate) -> String? {
        guard let usage = try? certificate.extensions.extendedKeyUsage, usage.contains(.clientAuth) else { return nil }
        for name in certificate.subject.flatMap({ $0 }) where name.type == ASN1ObjectIdentifier.RDNAttributeType.commonName {
            guard let common = String(name.value), common.hasPrefix(agentPrefix), common.count > agentPrefix.count else {
                return nil
            }
            return String(common.dropFirst(agentPrefix.count))
        }
        return nil
    }
}

/// An agent's key and certificate from the cluster authority, kept in its state directory
/// (`tls/agent-key.pem`, mode 0600, and `tls/agent-cert.pem`).
public struct AgentIdentity: Sendable, Equatable {
    public var certificate: String
    public var privateKey: String
    /// When `certificate` stops being valid.
    public var expiresAt: Date

    public init(certificate: String, privateKey: String, expiresAt: Date) {
        self.certificate = certificate
        self.privateKey = privateKey
        self.expiresAt = expiresAt
    }

    /// Whether less than `ClusterAuthority.renewWithin` is left of it at `now`.
    public func isDue(now: Date = Date()) -> Bool { expiresAt.timeIntervalSince(now) <= ClusterAuthority.renewWithin }

    /// A new key, and a certificate signing request for it naming `host` (PEM).
    public static func request(host: String) throws -> (privateKey: String, request: String) {
        let key = P256.Signing.PrivateKey()
        let subject = try DistinguishedName {
            OrganizationName("Vireo")
            CommonName(ClusterAuthority.agentPrefix + host)
        }
        let csr = try CertificateSigningRequest(
            version: .v1, subject: subject, privateKey: Certificate.PrivateKey(key), attributes: .init(),
            signatureAlgorithm: .ecdsaWithSHA256)
        return (key.pemRepresentation, try csr.serializeAsPEM().pemString)
    }

    static func keyPath(_ directory: String) -> String { directory + "/agent-key.pem" }
    static func certificatePath(_ directory: String) -> String { directory + "/agent-cert.pem" }

    /// The identity kept in `directory`, if it is there, names `host`, was issued by the authority
    /// whose certificate is `authorityPEM`, and is valid at `now`.
    public static func load(from directory: String, host: String, authorityPEM: String, now: Date = Date()) -> AgentIdentity? {
        guard let key = try? String(contentsOfFile: keyPath(directory), encoding: .utf8),
            let pem = try? String(contentsOfFile: certificatePath(directory), encoding: .utf8),
            let certificate = try? Certificate(pemEncoded: pem),
            let authority = try? Certificate(pemEncoded: authorityPEM),
            certificate.issuer == authority.subject,
            authority.publicKey.isValidSignature(certificate.signature, for: certificate),
            ClusterAuthority.agentHost(of: certificate) == host,
            let privateKey = try? P256.Signing.PrivateKey(pemRepresentation: key),
            certificate.publicKey == Certificate.PublicKey(privateKey.publicKey),
            certificate.notValidBefore <= now, now < certificate.notValidAfter
        else { return nil }
        return AgentIdentity(certificate: pem, privateKey: key, expiresAt: certificate.notValidAfter)
    }

    /// Keeps this identity in `directory` (made if needed; the key file is 0600).
    public func save(in directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try CertificateAuthority.writePrivate(privateKey, to: Self.keyPath(directory))
        try Data(certificate.utf8).write(to: URL(fileURLWithPath: Self.certificatePath(directory)), options: .atomic)
    }
}
