import Crypto
import Foundation
import SwiftASN1
import VireoModel
import X509

/// A certificate authority of the controller's: a P-256 key and its self-signed certificate, in
/// memory only or kept in a directory (`ca-key.pem`, mode 0600, and `ca-cert.pem`), and the one
/// way it signs. `MigrationAuthority` makes one for each move (its two ends) and `ClusterAuthority`
/// (the API's certificate and agents' certificates) is one, kept in the data directory.
public struct CertificateAuthority: Sendable {
    /// How far back an issued certificate starts, so that hosts with slightly slow clocks accept it.
    public static let clockSkew: Duration = .seconds(300)
    /// How long the authority's own certificate is valid (ten years).
    static let authorityValidity: TimeInterval = 10 * 365 * 86_400

    private let key: P256.Signing.PrivateKey
    /// The authority's self-signed certificate.
    public let certificate: Certificate
    /// `certificate` as PEM: what those who trust this authority load.
    public let certificatePEM: String

    /// A new authority held in memory only, its certificate named `name` and valid for
    /// `validity` (from `clockSkew` back).
    public init(name: String, validity: Duration? = nil, now: Date = Date()) throws {
        try self.init(
            key: P256.Signing.PrivateKey(), name: name, now: now, validity: validity?.timeInterval ?? Self.authorityValidity)
    }

    private init(
        key: P256.Signing.PrivateKey, name commonName: String, now: Date, validity: TimeInterval = authorityValidity
    ) throws {
        let name = try DistinguishedName {
            OrganizationName("Vireo")
            CommonName(commonName)
        }
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(),
            publicKey: Certificate.PublicKey(key.publicKey),
            notValidBefore: now - Self.clockSkew.timeInterval, notValidAfter: now + validity,
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
    /// otherwise created as `name` and written (the directory is made if needed; the key file is
    /// 0600). `consequence` says what making a new one breaks, for the error of one that cannot load.
    public init(directory: String, name: String, consequence: String) throws {
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
                    "cannot load the certificate authority from \(directory) (ca-key.pem, ca-cert.pem): \(error); "
                        + "remove both files to make a new one (\(consequence))")
            }
            return
        }
        try self.init(key: P256.Signing.PrivateKey(), name: name, now: Date())
        try files.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try Self.writePrivate(key.pemRepresentation, to: keyPath)
        try Data(certificatePEM.utf8).write(to: URL(fileURLWithPath: certificatePath), options: .atomic)
    }

    /// Writes `text` to a file readable by its owner only: first to a private file, then moved
    /// into place, so that it is never readable by others.
    public static func writePrivate(_ text: String, to path: String) throws {
        try replaceFile(path, with: text, mode: 0o600)
    }

    /// Writes `text` to `path` with permissions `mode`: first to a file beside it made with that
    /// mode, then renamed over it (rename(2)), so that the file is never missing, half written,
    /// or readable beyond `mode`.
    public static func replaceFile(_ path: String, with text: String, mode: Int) throws {
        let temporary = path + ".new"
        try? FileManager.default.removeItem(atPath: temporary)
        guard
            FileManager.default.createFile(
                atPath: temporary, contents: Data(text.utf8), attributes: [.posixPermissions: mode])
        else { throw VireoError(.internal, "cannot write \(temporary)") }
        guard rename(temporary, path) == 0 else {
            throw VireoError(.internal, "cannot replace \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// What a certificate this authority issues is for.
    public enum Use: Sendable {
        /// A TLS server (the API).
        case server
        /// A TLS client (an agent).
        case client
        /// Either end of a connection (a migration's host).
        case both
    }

    /// A certificate for `publicKey`, signed by this authority: named `commonName` (organisation
    /// Vireo), for `names` (IP addresses or DNS names), for `use`, valid from a little before
    /// `now` for `validity`.
    public func sign(
        _ publicKey: Certificate.PublicKey, commonName: String, names: [String] = [], use: Use, validity: Duration,
        now: Date = Date()
    ) throws -> Certificate {
        let subject = try DistinguishedName {
            OrganizationName("Vireo")
            CommonName(commonName)
        }
        let generalNames = names.map(Self.generalName(for:))
        let usages: [ExtendedKeyUsage.Usage] =
            switch use {
            case .server: [.serverAuth]
            case .client: [.clientAuth]
            case .both: [.serverAuth, .clientAuth]
            }
        return try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: publicKey,
            notValidBefore: now - Self.clockSkew.timeInterval, notValidAfter: now + validity.timeInterval,
            issuer: certificate.subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage(usages)
                if !generalNames.isEmpty { SubjectAlternativeNames(generalNames) }
            },
            issuerPrivateKey: Certificate.PrivateKey(key))
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
    var timeInterval: TimeInterval { TimeInterval(components.seconds) }
}
