import Crypto
import Foundation
import VireoModel
import X509

/// The certificate authority of a controller's live migrations.
///
/// Each live migration gets a fresh key and certificate for each of its two hosts, signed by this
/// authority; the destination's QEMU accepts only a peer that presents the source's certificate of
/// that same migration (and the source only a destination with the matching one), so nothing else
/// — not another migration's host, not the right address without the credentials — can feed a
/// waiting destination. The authority's own key (P-256) stays with the controller: on disk in its
/// data directory (`migration-ca/ca-key.pem`, mode 0600, and `ca-cert.pem`), or in memory only.
public struct MigrationAuthority: Sendable {
    /// How long an issued certificate is valid: a migration that has not begun within it fails its
    /// handshake. Starts a few minutes back so that hosts with slightly slow clocks accept it.
    public static let validity: Duration = .seconds(3600)

    let authority: CertificateAuthority
    /// The authority's self-signed certificate.
    public var certificate: Certificate { authority.certificate }
    /// `certificate` as PEM: what both ends of a migration trust.
    public var certificatePEM: String { authority.certificatePEM }

    /// The common name of an authority's own certificate, unless it is given another.
    public static let defaultName = "Vireo migration authority"

    /// A new authority held in memory only (benchmarks, tests), its certificate named `name`.
    public init(name: String = MigrationAuthority.defaultName) throws {
        authority = try CertificateAuthority(name: name)
    }

    /// The authority kept in `directory`: loaded if `ca-key.pem` and `ca-cert.pem` are there,
    /// otherwise created and written (the directory is made if needed; the key file is 0600).
    public init(directory: String) throws {
        authority = try CertificateAuthority(
            directory: directory, name: Self.defaultName, consequence: "running migrations then fail")
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
        let certificate = try authority.sign(
            Certificate.PublicKey(hostKey.publicKey), commonName: Self.commonName(migration: migration, role: role),
            names: address.map { [$0] } ?? [], use: .both, validity: Self.validity, now: now)
        let other: MigrationRole = role == .source ? .destination : .source
        return MigrationCredentials(
            caCertificate: certificatePEM, certificate: try certificate.serializeAsPEM().pemString,
            privateKey: hostKey.pemRepresentation, peer: Self.peerName(migration: migration, role: other))
    }
}
