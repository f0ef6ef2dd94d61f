import Foundation
import VireoModel

/// A migration's credentials as QEMU's `tls-creds-x509` objects read them — for QEMU itself, and
/// for `qemu-nbd` and `qemu-img`, which take the same objects on their command lines: a directory
/// holding the authority's certificate and this end's certificate and key.
public enum QEMUTLSFiles {
    /// Which side of a TLS connection the files are for: it decides their names
    /// (`server-cert.pem`/`server-key.pem` or `client-…`).
    public enum Endpoint: String, Encodable, Sendable, Equatable {
        case server
        case client
    }

    /// `ca-cert.pem` and `server-cert.pem`/`server-key.pem` (or `client-…`) in a new directory of
    /// mode 0700 whose files are 0600, all owned by the owner of `owner` (a path).
    public static func write(
        _ credentials: MigrationCredentials, endpoint: Endpoint, into directory: String, ownedLike owner: String
    ) throws {
        let fm = FileManager.default
        var info = stat()
        guard stat(owner, &info) == 0 else {
            throw VireoError(.internal, "cannot read the owner of \(owner): \(String(cString: strerror(errno)))")
        }
        try? fm.removeItem(atPath: directory)
        try fm.createDirectory(atPath: directory, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        for (name, text) in files(credentials, endpoint: endpoint) {
            let path = directory + "/" + name
            guard fm.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600])
            else { throw VireoError(.internal, "cannot write \(path)") }
            guard chown(path, info.st_uid, info.st_gid) == 0 else {
                throw VireoError(.internal, "cannot hand \(path) to uid \(info.st_uid): \(String(cString: strerror(errno)))")
            }
        }
        guard chown(directory, info.st_uid, info.st_gid) == 0 else {
            throw VireoError(.internal, "cannot hand \(directory) to uid \(info.st_uid): \(String(cString: strerror(errno)))")
        }
    }

    /// Puts this end's files into `directory`, an existing one that others share — libvirtd's
    /// `migrate_tls_x509_cert_dir`, from which the QEMU it starts for a migration loads them — and
    /// leaves the other end's files there alone. Each file is written aside and renamed into
    /// place, so that QEMU never reads half of one; the files take the directory's owner and
    /// group, the key readable to that group only (0640): libvirt runs QEMU as its own user, whose
    /// group the operator gives the directory.
    public static func install(_ credentials: MigrationCredentials, endpoint: Endpoint, in directory: String) throws {
        var info = stat()
        guard stat(directory, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else {
            throw VireoError(
                .failedPrecondition, "\(directory) is no directory: \(String(cString: strerror(errno == 0 ? ENOTDIR : errno)))")
        }
        for (name, text) in files(credentials, endpoint: endpoint).sorted(by: { $0.key < $1.key }) {
            let path = directory + "/" + name
            let aside = directory + "/." + name + ".vireo-new"
            let mode: Int = name.hasSuffix("-key.pem") ? 0o640 : 0o644
            guard FileManager.default.createFile(atPath: aside, contents: Data(text.utf8), attributes: [.posixPermissions: mode])
            else { throw VireoError(.internal, "cannot write \(aside)") }
            guard chown(aside, info.st_uid, info.st_gid) == 0, rename(aside, path) == 0 else {
                let reason = String(cString: strerror(errno))
                unlink(aside)
                throw VireoError(.internal, "cannot put \(path) in place: \(reason)")
            }
        }
    }

    /// File name to contents, as QEMU's `tls-creds-x509` looks for them.
    static func files(_ credentials: MigrationCredentials, endpoint: Endpoint) -> [String: String] {
        var contents = [
            "ca-cert.pem": credentials.caCertificate,
            "\(endpoint.rawValue)-cert.pem": credentials.certificate,
            "\(endpoint.rawValue)-key.pem": credentials.privateKey,
        ]
        // Without them a server's QEMU generates Diffie-Hellman parameters when the object is
        // added: 40-420 ms here (QEMU 7.2), against 2 ms with the file.
        if endpoint == .server { contents["dh-params.pem"] = Self.diffieHellmanParameters }
        return contents
    }

    /// The ffdhe2048 group of RFC 7919 (a published constant, PKCS #3 PEM), for the rare peer
    /// that negotiates finite-field Diffie-Hellman.
    public static let diffieHellmanParameters = """
        -----BEGIN DH PARAMETERS-----
        MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
        +8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
        87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
        YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
        7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
        ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
        -----END DH PARAMETERS-----
        """
}
