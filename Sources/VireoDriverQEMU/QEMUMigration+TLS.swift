import Foundation
import VireoModel

/// The TLS side of a live migration: each end's credentials become a `tls-creds-x509` object in
/// its QEMU (and, on the destination, an `authz-simple` object that admits only the source of
/// this migration). QEMU reads the certificate files when the object is added; the files then go.
extension QEMUDriver {
    /// The objects' ids. The incoming ones stay in a VM that arrived (its QEMU keeps them until it
    /// exits), so an outgoing migration of the same QEMU uses other ids.
    static let incomingTLS = "vireo-tls-in"
    static let incomingAuthz = "vireo-authz-in"
    static let outgoingTLS = "vireo-tls-out"

    /// Adds this end's credentials to the VM's QEMU: writes them in QEMU's x509 layout into
    /// `<VM directory>/tls`, owned like the VM directory (QEMU may run as that directory's owner)
    /// and readable by that owner only, has QEMU load them, and removes the files again.
    /// The destination (`server`) also gets its list of one admitted peer.
    func addTLS(_ id: VMID, qmp: QMPClient, credentials: MigrationCredentials, endpoint: QMP.TLSEndpoint)
        async throws
    {
        let directory = paths(id).directory + "/tls"
        try Self.writeTLSFiles(credentials, endpoint: endpoint, into: directory, ownedLike: paths(id).directory)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        switch endpoint {
        case .server:
            try await qmp.execute(
                QMP.ObjectAddTLSCredentials(id: Self.incomingTLS, directory: directory, endpoint: .server))
            try await qmp.execute(QMP.ObjectAddAuthzSimple(id: Self.incomingAuthz, identity: credentials.peer))
        case .client:
            // Left over from a migration whose clean-up failed: QEMU refuses a second object of an id.
            await removeOutgoingTLS(qmp)
            try await qmp.execute(
                QMP.ObjectAddTLSCredentials(id: Self.outgoingTLS, directory: directory, endpoint: .client))
        }
    }

    /// Source, after its migration (completed or not): plain TCP again and the credentials gone,
    /// so that the next migration starts from nothing.
    func removeOutgoingTLS(_ qmp: QMPClient) async {
        _ = try? await qmp.execute(QMP.MigrateSetParameters(tlsCreds: "", tlsAuthz: ""))
        _ = try? await qmp.execute(QMP.ObjectDel(id: Self.outgoingTLS))
    }

    /// Destination, once the guest is here: its QEMU no longer waits for anyone.
    func removeIncomingTLS(_ qmp: QMPClient) async {
        _ = try? await qmp.execute(QMP.MigrateSetParameters(tlsCreds: "", tlsAuthz: ""))
        _ = try? await qmp.execute(QMP.ObjectDel(id: Self.incomingAuthz))
        _ = try? await qmp.execute(QMP.ObjectDel(id: Self.incomingTLS))
    }

    /// `ca-cert.pem` and `server-cert.pem`/`server-key.pem` (or `client-…`) in a new directory of
    /// mode 0700 whose files are 0600, all owned by the owner of `owner` (a path).
    static func writeTLSFiles(
        _ credentials: MigrationCredentials, endpoint: QMP.TLSEndpoint, into directory: String, ownedLike owner: String
    ) throws {
        let files = FileManager.default
        var info = stat()
        guard stat(owner, &info) == 0 else {
            throw VireoError(.internal, "cannot read the owner of \(owner): \(String(cString: strerror(errno)))")
        }
        try? files.removeItem(atPath: directory)
        try files.createDirectory(atPath: directory, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        var contents = [
            "ca-cert.pem": credentials.caCertificate,
            "\(endpoint.rawValue)-cert.pem": credentials.certificate,
            "\(endpoint.rawValue)-key.pem": credentials.privateKey,
        ]
        // Without them a server's QEMU generates Diffie-Hellman parameters when the object is
        // added: 40-420 ms here (QEMU 7.2), against 2 ms with the file.
        if endpoint == .server { contents["dh-params.pem"] = Self.diffieHellmanParameters }
        for (name, text) in contents {
            let path = directory + "/" + name
            guard files.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600])
            else { throw VireoError(.internal, "cannot write \(path)") }
            guard chown(path, info.st_uid, info.st_gid) == 0 else {
                throw VireoError(.internal, "cannot hand \(path) to uid \(info.st_uid): \(String(cString: strerror(errno)))")
            }
        }
        guard chown(directory, info.st_uid, info.st_gid) == 0 else {
            throw VireoError(.internal, "cannot hand \(directory) to uid \(info.st_uid): \(String(cString: strerror(errno)))")
        }
    }

    /// The ffdhe2048 group of RFC 7919 (a published constant, PKCS #3 PEM), for the rare peer
    /// that negotiates finite-field Diffie-Hellman.
    static let diffieHellmanParameters = """
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
