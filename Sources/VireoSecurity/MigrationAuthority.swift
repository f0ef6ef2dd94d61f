import Crypto
import Foundation
import VireoModel
import X509

/// Issues the TLS credentials of migrations: for each move, an authority of that move alone.
///
/// A move's two hosts each get a fresh key and a certificate for it, signed by a certificate
/// authority (a P-256 key and its self-signed certificate) made for that one move and forgotten
/// once the two certificates are signed. Each end trusts that authority only, and checks that the
/// other presents the move's other certificate. So a certificate issued for another move — by
/// this controller, to one of the same two hosts, a minute before — is of an authority nobody
/// trusts, and nothing but the move's two ends can feed a waiting destination. That holds also
/// where the program at an end cannot check the peer's name: libvirt's migrations (libvirt sets
/// no `tls-authz`) and `qemu-img` reading a copied disk. No key outlives the issuing, so the
/// controller keeps nothing on disk that could make credentials.
public struct MigrationAuthority: Sendable {
    /// How long a move's certificates (and its authority's) are valid: a migration that has not
    /// begun within it fails its handshake. Starts a few minutes back so that hosts with slightly
    /// slow clocks accept it.
    public static let validity: Duration = .seconds(3600)

    /// The common name of each move's authority, followed by the move's ID.
    let name: String

    /// The common name of a move's authority, unless it is given another.
    public static let defaultName = "Vireo migration authority"

    /// `name` names each move's authority (`<name> <migration>`): tests make a "rogue" one.
    public init(name: String = MigrationAuthority.defaultName) {
        self.name = name
    }

    /// The name a migration host's certificate carries, as QEMU's `authz-simple` sees it: GnuTLS
    /// writes the subject's parts in the certificate's order (checked with QEMU 7.2).
    public static func peerName(migration: MigrationID, role: MigrationRole) -> String {
        "O=Vireo,CN=\(commonName(migration: migration, role: role))"
    }

    static func commonName(migration: MigrationID, role: MigrationRole) -> String {
        "vireo-migration-\(migration.rawValue)-\(role.rawValue)"
    }

    /// Fresh credentials for both ends of `migration`, from a new authority of that move: for each
    /// end a new key, a certificate for it valid for an hour, the authority's certificate, and the
    /// name the other end must present. The end that listens — `listener` — has a certificate
    /// naming `address` (where it listens, an IP address or a host name) so that the other's check
    /// of the host it connects to passes.
    public func issue(migration: MigrationID, listener: MigrationRole, address: String, now: Date = Date()) throws
        -> MigrationCredentialPair
    {
        let authority = try CertificateAuthority(name: "\(name) \(migration.rawValue)", validity: Self.validity, now: now)
        func credentials(_ role: MigrationRole) throws -> MigrationCredentials {
            let hostKey = P256.Signing.PrivateKey()
            let certificate = try authority.sign(
                Certificate.PublicKey(hostKey.publicKey), commonName: Self.commonName(migration: migration, role: role),
                names: role == listener ? [address] : [], use: .both, validity: Self.validity, now: now)
            return MigrationCredentials(
                caCertificate: authority.certificatePEM, certificate: try certificate.serializeAsPEM().pemString,
                privateKey: hostKey.pemRepresentation,
                peer: Self.peerName(migration: migration, role: role == .source ? .destination : .source))
        }
        return MigrationCredentialPair(source: try credentials(.source), destination: try credentials(.destination))
    }
}
