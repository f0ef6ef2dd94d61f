import Crypto
import Foundation
import SwiftASN1
import VireoModel
import X509

/// The certificate authority of a controller's live migrations.
///
/// Each live migration gets a fresh key and certificate for each of its two hosts, signed by this
/// authority; the destination's QEMU accepts only a peer that presents the source's certificate of
/// that same migration (and the source only a destination with the matching one), so nothing else
/// — not another migration's host, not the right address without the credentials — can feed a
/// waiting destination. The authority's own key (P-256) stays with the controller: on disk in its
/// data directory (`ca-key.pem`, mode 0600, and `ca-cert.pem`), or in memory only.
public struct MigrationAuthority: Sendable {
    /// How long an issued certificate is valid: a migration that has not begun within it fails its
    /// handshake. Starts a few minutes back so that hosts with slightly slow clocks accept it.
    public static let validity: Duration = .seconds(3600)
    public static let clockSkew: Duration = .seconds(300)
    /// How long the authority's own certificate is valid (ten years).
    static let authorityValidity: TimeInterval = 10 * 365 * 86_400

    private let key: P256.Signing.PrivateKey
    /// The authority's self-signed certificate.
    public let certificate: Certificate
    /// `certificate` as PEM: what both ends of a migration trust.
    public let certificatePEM: String

    /// The common name of an authority's own certificate, unless it is given another.
    public static let defaultName = "Vireo migration authority"

    /// A new authority held in memory only (benchmarks, tests), its certificate named `name`.
    public init(name: String = MigrationAuthority.defaultName) throws {
        try self.init(key: P256.Signing.PrivateKey(), name: name, now: Date())
    }

    private init(key: P256.Signing.PrivateKey, name commonName: String, now: Date) throws {
        let name = try DistinguishedName {
            OrganizationName("Vireo")
            CommonName(commonName)
        }
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(),
            publicKey: Certificate.PublicKey(key.publicKey),
            notValidBefore: now - Self.clockSkew.seconds, notValidAfter: now + Self.authorityValidity,
            issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: Certificate.PublicKey(key.publicKey))
            },
            issuerPrivateKey: Certificate.PrivateKey(key))
        self.init(key: key, certificate: certificate)
    }

    private init(key: P256.Signing.PrivateKey, certificate: Certificate) {
        self.key = key
        self.certificate = certificate
        self.certificatePEM = (try? certificate.serializeAsPEM().pemString) ?? ""
    }

    /// The authority kept in `directory`: loaded if `ca-key.pem` and `ca-cert.pem` are there,
    /// otherwise created and written (the directory is made if needed; the key file is 0600).
    public init(directory: String) throws {
        let keyPath = directory + "/ca-key.pem"
        let certificatePath = directory + "/ca-cert.pem"
        let files = FileManager.default
        if files.fileExists(atPath: keyPath) || files.fileExists(atPath: certificatePath) {
            do {
                let key = try P256.Signing.PrivateKey(pemRepresentation: String(contentsOfFile: keyPath, encoding: .utf8))
                let certificate = try Certificate(pemEncoded: String(contentsOfFile: certificatePath, encoding: .utf8))
                guard certificate.publicKey == Certificate.PublicKey(key.publicKey) else {
                    throw VireoError(.failedPrecondition, "the certificate is not the key's")
                }
                self.init(key: key, certificate: certificate)
            } catch {
                throw VireoError(
                    .failedPrecondition,
                    "cannot load the migration authority from \(directory) (ca-key.pem, ca-cert.pem): \(error); "
                        + "remove both files to make a new one (running migrations then fail)")
            }
            return
        }
        try self.init(key: P256.Signing.PrivateKey(), name: Self.defaultName, now: Date())
        try files.createDirectory(atPath: directory, withIntermediateDirectories: true)
        // The key is written to a private file first and moved into place: never readable by others.
        let temporary = keyPath + ".new"
        guard
            files.createFile(
                atPath: temporary, contents: Data(key.pemRepresentation.utf8), attributes: [.posixPermissions: 0o600])
        else { throw VireoError(.internal, "cannot write \(temporary)") }
        try files.moveItem(atPath: temporary, toPath: keyPath)
        try Data(certificatePEM.utf8).write(to: URL(fileURLWithPath: certificatePath), options: .atomic)
    }

    /// The name a migration host's certificate carries, as QEMU's `authz-simple` sees it: GnuTLS
    /// writes the subject's parts in the certificate's order (checked with QEMU 7.2).
    public static func peerName(migration: MigrationID, role: MigrationRole) -> String {
        "O=Vireo,CN=\(commonName(migration: migration, role: role))"
    }

    static func commonName(migration: MigrationID, role: MigrationRole) -> String {
        "vireo-migration-\(migration.rawValue)-\(role.rawValue)"
    }

    /// Fresh credentials for one end of `migration`: a new key, a certificate for it valid for an
    /// hour, and the name the other end must present. The destination's certificate names
    /// `address` (where it listens, an IP address or a host name) so that the source's check of
    /// the host it connects to passes.
    public func issue(migration: MigrationID, role: MigrationRole, address: String?, now: Date = Date()) throws
        -> MigrationCredentials
    {
        let hostKey = P256.Signing.PrivateKey()
        let subject = try DistinguishedName {
            OrganizationName("Vireo")
            CommonName(Self.commonName(migration: migration, role: role))
        }
        let names = address.map { [Self.generalName(for: $0)] } ?? []
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(),
            publicKey: Certificate.PublicKey(hostKey.publicKey),
            notValidBefore: now - Self.clockSkew.seconds, notValidAfter: now + Self.validity.seconds,
            issuer: self.certificate.subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth, .clientAuth])
                if !names.isEmpty { SubjectAlternativeNames(names) }
            },
            issuerPrivateKey: Certificate.PrivateKey(key))
        let other: MigrationRole = role == .source ? .destination : .source
        return MigrationCredentials(
            caCertificate: certificatePEM, certificate: try certificate.serializeAsPEM().pemString,
            privateKey: hostKey.pemRepresentation, peer: Self.peerName(migration: migration, role: other))
    }

    /// An IP address as the 4 or 16 bytes X.509 wants; anything else as a DNS name.
    static func generalName(for address: String) -> GeneralName {
        var v4 = in_addr()
        if inet_pton(AF_INET, address, &v4) == 1 {
            return .ipAddress(ASN1OctetString(contentBytes: withUnsafeBytes(of: &v4) { ArraySlice($0) }))
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, address, &v6) == 1 {
            return .ipAddress(ASN1OctetString(contentBytes: withUnsafeBytes(of: &v6) { ArraySlice($0) }))
        }
        return .dnsName(address)
    }
}

extension Duration {
    fileprivate var seconds: TimeInterval { TimeInterval(components.seconds) }
}
