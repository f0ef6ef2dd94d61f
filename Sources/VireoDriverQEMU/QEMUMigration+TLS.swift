import Foundation
import VireoModel
import VireoProcess

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
        try QEMUTLSFiles.write(credentials, endpoint: endpoint, into: directory, ownedLike: paths(id).directory)
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
}
