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

    @Test("with a move's credentials the export is TLS-only and admits only that move's destination")
    func encrypted() async throws {
        let root = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let source = root + "/source"
        try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
        let disk = try await disk(in: source)
        let authority = try MigrationAuthority()
        let move = MigrationID.generate()
        // The source serves the disk: its certificate names the address the destination connects to.
        let served = try authority.issue(migration: move, role: .source, address: "127.0.0.1")
        let reader = try authority.issue(migration: move, role: .destination, address: nil)
        // `served.peer` is the destination's name: the export's only admitted reader.
        #expect(served.peer == MigrationAuthority.peerName(migration: move, role: .destination))
        let uri = try await DiskTransfer.export(
            disk: disk, on: "127.0.0.1", port: { try LoopbackPort.free() }, in: source, credentials: served)
        defer { DiskTransfer.stopExport(in: source) }
        #expect(!FileManager.default.fileExists(atPath: source + "/nbd-tls"), "the key files went once qemu-nbd ran")

        // Without TLS, with another authority's certificate, and with one of ours for another
        // move: no copy.
        let foreign = try MigrationAuthority(name: "Rogue authority").issue(
            migration: move, role: .destination, address: nil)
        let rogues: [(String, MigrationCredentials?)] = [
            ("no TLS", nil),
            (
                "another authority's certificate",
                // Trusting both authorities (qemu-img checks its own certificate too), so that the
                // export is the one that refuses it.
                MigrationCredentials(
                    caCertificate: authority.certificatePEM + foreign.caCertificate, certificate: foreign.certificate,
                    privateKey: foreign.privateKey, peer: reader.peer)
            ),
            ("another move's certificate", try authority.issue(migration: .generate(), role: .destination, address: nil)),
        ]
        for (index, (what, credentials)) in rogues.enumerated() {
            let copy = root + "/rogue-\(index).qcow2"
            let error = await #expect(throws: VireoError.self, "\(what)") {
                try await DiskTransfer.copy(from: uri, to: copy, credentials: credentials)
            }
            print("copy with \(what): \(error?.message ?? "no error")")
            #expect(!FileManager.default.fileExists(atPath: copy), "\(what): no partial copy stays")
        }

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
