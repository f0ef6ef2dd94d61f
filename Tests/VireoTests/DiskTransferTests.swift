import Foundation
import Testing
import VireoDriver
import VireoModel
import VireoProcess
import VireoSecurity

/// A cold move's disk copy with Debian's `qemu-nbd` and `qemu-img` on loopback (no VM).
@Suite("Disk transfer over NBD")
struct DiskTransferTests {
    /// A 16 MiB qcow2 disk with 4 MiB of a pattern written at 1 MiB.
    func disk(in directory: String) async throws -> String {
        let path = directory + "/disk.qcow2"
        try await HostTool.run("qemu-img", ["create", "-q", "-f", "qcow2", path, "16M"])
        try await HostTool.run("qemu-io", ["-f", "qcow2", "-c", "write -P 0xab 1M 4M", path])
        return path
    }

    /// Whether the two images hold the same data (`qemu-img compare`).
    func same(_ first: String, _ second: String) async -> Bool {
        (try? await HostTool.run("qemu-img", ["compare", "-q", "-f", "qcow2", "-F", "qcow2", first, second])) != nil
    }

    @Test(
        "with a move's credentials the export is TLS-only and admits only that move's destination, which reads only that move's export"
    )
    func encrypted() async throws {
        let root = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let source = root + "/source"
        try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
        let disk = try await disk(in: source)
        let authority = MigrationAuthority()
        let move = MigrationID.generate()
        // The source serves the disk: its certificate names the address the destination connects to.
        let pair = try authority.issue(migration: move, listener: .source, address: "127.0.0.1")
        let (served, reader) = (pair.source, pair.destination)
        // `served.peer` is the destination's name: the export's only admitted reader.
        #expect(served.peer == MigrationAuthority.peerName(migration: move, role: .destination))
        let uri = try await DiskTransfer.export(
            disk: disk, on: "127.0.0.1", port: { try LoopbackPort.free() }, in: source, credentials: served)
        defer { DiskTransfer.stopExport(in: source) }
        #expect(!FileManager.default.fileExists(atPath: source + "/nbd-tls"), "the key files went once qemu-nbd ran")

        // Without TLS, and with the credentials of another move of ours: no copy. Once trusting
        // this move's authority too (qemu-img checks its own certificate as well), so that the
        // export is the one that refuses the certificate.
        let other = try authority.issue(migration: .generate(), listener: .source, address: "127.0.0.1")
        let rogues: [(String, MigrationCredentials?)] = [
            ("no TLS", nil),
            ("another move's credentials", other.destination),
            (
                "another move's certificate, trusting this move's authority too",
                MigrationCredentials(
                    caCertificate: reader.caCertificate + "\n" + other.destination.caCertificate,
                    certificate: other.destination.certificate, privateKey: other.destination.privateKey, peer: reader.peer)
            ),
        ]
        for (index, (what, credentials)) in rogues.enumerated() {
            let copy = root + "/rogue-\(index).qcow2"
            let error = await #expect(throws: VireoError.self, "\(what)") {
                try await DiskTransfer.copy(from: uri, to: copy, credentials: credentials)
            }
            print("copy with \(what): \(error?.message ?? "no error")")
            #expect(!FileManager.default.fileExists(atPath: copy), "\(what): no partial copy stays")
        }

        // An export with another move's certificate, for this address, that admits this move's
        // destination (it trusts this move's authority too): this move's destination refuses it.
        // (With one authority for every move, this certificate had passed its check.)
        let rogueSource = root + "/rogue-source"
        try FileManager.default.createDirectory(atPath: rogueSource, withIntermediateDirectories: true)
        let rogueURI = try await DiskTransfer.export(
            disk: try await self.disk(in: rogueSource), on: "127.0.0.1", port: { try LoopbackPort.free() }, in: rogueSource,
            credentials: MigrationCredentials(
                caCertificate: other.source.caCertificate + "\n" + reader.caCertificate, certificate: other.source.certificate,
                privateKey: other.source.privateKey, peer: served.peer))
        defer { DiskTransfer.stopExport(in: rogueSource) }
        let fooled = root + "/fooled.qcow2"
        let refused = await #expect(throws: VireoError.self) {
            try await DiskTransfer.copy(from: rogueURI, to: fooled, credentials: reader)
        }
        print("copy from another move's export: \(refused?.message ?? "no error")")
        #expect(!FileManager.default.fileExists(atPath: fooled))

        // This move's destination copies the disk, after all that.
        let copy = root + "/copy.qcow2"
        let bytes = try await DiskTransfer.copy(from: uri, to: copy, credentials: reader)
        #expect(bytes > 0)
        #expect(await same(disk, copy))
        #expect(!FileManager.default.fileExists(atPath: copy + ".tls"), "the destination's key files went too")
    }

    @Test("without credentials the export is plain NBD, as before")
    func plain() async throws {
        let root = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let source = root + "/source"
        try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
        let disk = try await disk(in: source)
        let uri = try await DiskTransfer.export(disk: disk, on: "127.0.0.1", port: { try LoopbackPort.free() }, in: source)
        defer { DiskTransfer.stopExport(in: source) }
        let copy = root + "/copy.qcow2"
        try await DiskTransfer.copy(from: uri, to: copy)
        #expect(await same(disk, copy))
    }
}
