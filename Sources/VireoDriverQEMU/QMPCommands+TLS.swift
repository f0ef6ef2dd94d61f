import Foundation
import VireoProcess

/// The objects an encrypted, authenticated migration needs: QEMU's x509 credentials (read from a
/// directory when the object is added) and the list of peers the destination lets in.
extension QMP {
    /// Which side of a TLS connection a `tls-creds-x509` object is for: it decides which files
    /// QEMU reads from its directory.
    public typealias TLSEndpoint = QEMUTLSFiles.Endpoint

    /// Adds a `tls-creds-x509` object `id` from the files in `directory` (`ca-cert.pem` and the
    /// endpoint's certificate and key, read now). `verifyPeer`: a server asks the client for a
    /// certificate signed by the same authority and refuses the connection without one.
    public struct ObjectAddTLSCredentials: QMPCommand {
        public static let name = "object-add"
        public struct Arguments: Encodable, Sendable, Equatable {
            public var qomType = "tls-creds-x509"
            public var id: String
            public var dir: String
            public var endpoint: TLSEndpoint
            public var verifyPeer: Bool
            enum CodingKeys: String, CodingKey {
                case id, dir, endpoint
                case qomType = "qom-type"
                case verifyPeer = "verify-peer"
            }
        }
        public var arguments: Arguments
        public init(id: String, directory: String, endpoint: TLSEndpoint, verifyPeer: Bool = true) {
            arguments = Arguments(id: id, dir: directory, endpoint: endpoint, verifyPeer: verifyPeer)
        }
    }

    /// Adds an `authz-simple` object `id` that admits exactly one peer: the one whose certificate's
    /// distinguished name is `identity` (as GnuTLS prints it).
    public struct ObjectAddAuthzSimple: QMPCommand {
        public static let name = "object-add"
        public struct Arguments: Encodable, Sendable, Equatable {
            public var qomType = "authz-simple"
            public var id: String
            public var identity: String
            enum CodingKeys: String, CodingKey {
                case id, identity
                case qomType = "qom-type"
            }
        }
        public var arguments: Arguments
        public init(id: String, identity: String) { arguments = Arguments(id: id, identity: identity) }
    }

    /// Removes object `id` (it must be unused: clear the migration parameters that name it first).
    public struct ObjectDel: QMPCommand {
        public static let name = "object-del"
        public struct Arguments: Encodable, Sendable, Equatable {
            public var id: String
        }
        public var arguments: Arguments
        public init(id: String) { arguments = Arguments(id: id) }
    }
}
