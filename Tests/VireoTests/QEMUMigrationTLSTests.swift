import Foundation
import NIOCore
import NIOPosix
import Testing
import VireoDriver
import VireoModel
import VireoProcess
import VireoSecurity
import VireoTunnel

@testable import VireoDriverQEMU

extension RealQEMU {
    /// The migration channel secured with per-migration certificates, against real QEMU 7.2 on
    /// loopback: the memory stream through the agents' TLS tunnel, a copied disk over QEMU's own
    /// TLS. A connection that is not this migration's source (no TLS, an unknown issuer, or a
    /// certificate of another migration) is refused by the tunnel; the destination's QEMU never
    /// hears of it, stays `inmigrate`, and the legitimate source can still complete the migration.
    @Suite("QEMU live migration over TLS (real QEMU)")
    struct QEMUMigrationTLSTests {
        let tick: @Sendable () async -> Void = { try? await Task.sleep(for: .milliseconds(250)) }
        let plain = QEMUMigrationTests()

        /// Both ends' credentials for one migration to 127.0.0.1.
        func credentials(_ authority: MigrationAuthority = MigrationAuthority(), _ migration: MigrationID = .generate())
            throws -> (source: MigrationCredentials, destination: MigrationCredentials)
        {
            let pair = try authority.issue(migration: migration, listener: .destination, address: "127.0.0.1")
            return (pair.source, pair.destination)
        }

        /// The destination's QEMU is still waiting: state `starting`, QEMU `inmigrate`.
        func expectWaiting(_ destination: QEMUDriver, _ id: VMID, _ comment: Comment) async throws {
            #expect(try await destination.status().first?.state == .starting, comment)
            let qmp = try #require(await destination.instances[id]?.qmp, comment)
            #expect(try await qmp.execute(QMP.QueryStatus()).status == .inmigrate, comment)
        }

        @Test("a guest moves over TLS with shared storage: same boot, and no key file stays on either host")
        func sharedStorage() async throws {
            let (source, destination, _) = plain.pair()
            let (sourceCredentials, destinationCredentials) = try credentials()
            let vm = InstanceSpec(id: .generate(), name: "sealed", image: "web", cpus: 1, memoryMiB: 128)
            try await source.create(vm)
            do {
                try await source.start(vm.id)
                let before = try await plain.status(
                    try #require(try await settle(source, vm.id, to: .running, tick: tick).address))
                let preparing = ContinuousClock.now
                let uri = try await destination.prepareIncoming(
                    vm, guestAddress: nil, listenAddress: "127.0.0.1", storage: .shared, credentials: destinationCredentials)
                print("TLS destination prepared in \(ContinuousClock.now - preparing)")
                // QEMU has loaded the credentials: their files are gone already.
                #expect(!FileManager.default.fileExists(atPath: await destination.paths(vm.id).directory + "/tls"))
                let stats = try await source.migrate(vm.id, to: uri, credentials: sourceCredentials) { _ in }
                print(
                    "TLS migration of 128 MiB (\(TestQEMU.accelerator)): total \(stats.totalTimeMs) ms, "
                        + "downtime \(stats.downtimeMs) ms, \(stats.transferredBytes) bytes")
                #expect(stats.transferredBytes > 1 << 20)
                #expect(!FileManager.default.fileExists(atPath: await source.paths(vm.id).directory + "/tls"))
                let after = try await plain.status(try await takeOver(vm.id, from: source, to: destination, tick: tick))
                #expect(after["bootId"] == before["bootId"])

                // The arrived QEMU keeps its server credentials; a later move out of it, plain or
                // with new credentials, is not confused by them.
                let back = try credentials()
                let returnURI = try await source.prepareIncoming(
                    vm, guestAddress: nil, listenAddress: "127.0.0.1", storage: .shared, credentials: back.destination)
                _ = try await destination.migrate(vm.id, to: returnURI, credentials: back.source) { _ in }
                try await destination.release(vm.id)
                try await source.finishIncoming(vm.id)
                let home = try await plain.status(try #require(try await settle(source, vm.id, to: .running, tick: tick).address))
                #expect(home["bootId"] == before["bootId"])
                try await source.delete(vm.id)
            } catch {
                try? await source.delete(vm.id)
                try? await destination.delete(vm.id)
                throw error
            }
        }

        @Test("a guest moves over TLS with its disk copied over TLS too")
        func copyStorage() async throws {
            let (source, destination) = plain.localPair()
            let (sourceCredentials, destinationCredentials) = try credentials()
            let vm = InstanceSpec(id: .generate(), name: "sealed-copy", image: "web", cpus: 1, memoryMiB: 128)
            try await source.create(vm)
            do {
                try await source.start(vm.id)
                let address = try #require(try await settle(source, vm.id, to: .running, tick: tick).address)
                _ = try await guest(address, "/mark?value=sealed", post: true)
                let uri = try await destination.prepareIncoming(
                    vm, guestAddress: nil, listenAddress: "127.0.0.1", storage: .copy, credentials: destinationCredentials)
                let stats = try await source.migrate(vm.id, to: uri, credentials: sourceCredentials) { _ in }
                print(
                    "TLS copy-storage migration (\(TestQEMU.accelerator)): total \(stats.totalTimeMs) ms, "
                        + "downtime \(stats.downtimeMs) ms, disk \(stats.storageBytes ?? 0) bytes in \(stats.storageTimeMs ?? 0) ms"
                )
                #expect((stats.storageBytes ?? 0) >= 64 << 20)
                let arrived = try await takeOver(vm.id, from: source, to: destination, tick: tick)
                #expect(try await guest(arrived, "/mark")["disk"] == .string("sealed"))
                try await destination.delete(vm.id)
            } catch {
                try? await source.delete(vm.id)
                try? await destination.delete(vm.id)
                throw error
            }
        }

        @Test("a source without this migration's certificate cannot feed the waiting destination; the right one still can")
        func rogueSources() async throws {
            let (source, destination, _) = plain.pair()
            let (rogueHost, _) = plain.localPair()
            let (sourceCredentials, destinationCredentials) = try credentials()
            let vm = InstanceSpec(id: .generate(), name: "target", image: "web", cpus: 1, memoryMiB: 128)
            let rogue = InstanceSpec(id: .generate(), name: "rogue", image: "web", cpus: 1, memoryMiB: 128)
            try await source.create(vm)
            try await rogueHost.create(rogue)
            do {
                try await source.start(vm.id)
                try await rogueHost.start(rogue.id)
                let before = try await plain.status(
                    try #require(try await settle(source, vm.id, to: .running, tick: tick).address))
                _ = try await settle(rogueHost, rogue.id, to: .running, tick: tick)
                let uri = try await destination.prepareIncoming(
                    vm, guestAddress: nil, listenAddress: "127.0.0.1", storage: .shared, credentials: destinationCredentials)
                let destinationPID = try #require(await destination.instances[vm.id]?.pid)

                // A certificate of another authority, and a valid certificate of ours for another
                // migration. The rogue knows our destination's name and trusts this move's
                // authority (its certificate is no secret), so that the destination is the one that
                // refuses it.
                let foreign = try MigrationAuthority(name: "Rogue authority").issue(
                    migration: .generate(), listener: .destination, address: "127.0.0.1"
                ).source
                let ours = try credentials().source
                let attempts: [(String, MigrationCredentials?)] =
                    [("no TLS", nil)]
                    + [("another authority's certificate", foreign), ("another migration's certificate", ours)].map {
                        what, other in
                        (
                            what,
                            MigrationCredentials(
                                caCertificate: sourceCredentials.caCertificate, certificate: other.certificate,
                                privateKey: other.privateKey, peer: sourceCredentials.peer)
                        )
                    }
                let tunnel = try #require(await destination.instances[vm.id]?.incomingTunnel)
                for (index, (what, rogueCredentials)) in attempts.enumerated() {
                    let error = await #expect(throws: VireoError.self, "\(what)") {
                        _ = try await rogueHost.migrate(rogue.id, to: uri, credentials: rogueCredentials) { _ in }
                    }
                    print("rogue source with \(what): \(error?.message ?? "no error")")
                    #expect(error?.message.contains("keeps running here") == true, "\(what)")
                    #expect(try await rogueHost.status().first?.state == .running, "\(what): the rogue's guest runs on")
                    try await expectWaiting(destination, vm.id, "after a rogue source with \(what)")
                    #expect(await destination.instances[vm.id]?.pid == destinationPID, "\(what): same QEMU")
                    #expect(QEMUDriver.isQEMU(destinationPID, running: vm.id))
                    #expect(tunnel.refusals.count == index + 1, "\(what): refused by the destination's tunnel")
                }
                print("the destination's tunnel refused:\n" + tunnel.refusals.joined(separator: "\n"))

                // The legitimate source, after all that, completes the migration.
                let stats = try await source.migrate(vm.id, to: uri, credentials: sourceCredentials) { _ in }
                #expect(stats.transferredBytes > 1 << 20)
                let after = try await plain.status(try await takeOver(vm.id, from: source, to: destination, tick: tick))
                #expect(after["bootId"] == before["bootId"], "the destination runs the source's guest, not the rogue's")
                try await destination.delete(vm.id)
                try await rogueHost.delete(rogue.id)
            } catch {
                try? await source.delete(vm.id)
                try? await destination.delete(vm.id)
                try? await rogueHost.delete(rogue.id)
                throw error
            }
        }

        @Test("a destination that gives up on a rogue-only migration leaves no QEMU and no files")
        func abandonedDestinationIsClean() async throws {
            let (source, destination, _) = plain.pair()
            let (rogueHost, _) = plain.localPair()
            let vm = InstanceSpec(id: .generate(), name: "abandoned", image: "web", cpus: 1, memoryMiB: 128)
            let rogue = InstanceSpec(id: .generate(), name: "rogue", image: "web", cpus: 1, memoryMiB: 128)
            // The VM's shared disk, which the destination opens; it never runs on the source.
            try await source.create(vm)
            try await rogueHost.create(rogue)
            do {
                try await rogueHost.start(rogue.id)
                _ = try await settle(rogueHost, rogue.id, to: .running, tick: tick)
                let uri = try await destination.prepareIncoming(
                    vm, guestAddress: nil, listenAddress: "127.0.0.1", storage: .shared,
                    credentials: try credentials().destination)
                let pid = try #require(await destination.instances[vm.id]?.pid)
                let port = try #require(await destination.instances[vm.id]?.incomingTunnel?.port)
                await #expect(throws: VireoError.self) {
                    _ = try await rogueHost.migrate(rogue.id, to: uri, credentials: try credentials().source) { _ in }
                }
                try await expectWaiting(destination, vm.id, "after the rogue")
                try await destination.abortIncoming(vm.id)
                #expect(try await destination.status().isEmpty)
                #expect(!QEMUDriver.isQEMU(pid, running: vm.id), "the waiting QEMU is gone")
                #expect(!FileManager.default.fileExists(atPath: await destination.paths(vm.id).directory))
                await #expect(throws: (any Error).self, "the migration's port is closed") {
                    try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                        .connect(host: "127.0.0.1", port: port).get().close()
                }
                try await rogueHost.delete(rogue.id)
                try await source.delete(vm.id)
            } catch {
                try? await destination.abortIncoming(vm.id)
                try? await rogueHost.delete(rogue.id)
                try? await source.delete(vm.id)
                throw error
            }
        }
    }
}

@Suite("QEMU migration credentials on disk")
struct QEMUTLSFilesTests {
    @Test("credentials are written in QEMU's x509 layout, private to the owner of the VM's directory")
    func layoutAndOwner() throws {
        let root = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let vmDirectory = root + "/vm"
        try FileManager.default.createDirectory(atPath: vmDirectory, withIntermediateDirectories: true)
        // The VM's directory belongs to the user QEMU runs as (here: nobody).
        #expect(chown(vmDirectory, 65534, 65534) == 0)
        let credentials = try MigrationAuthority().issue(migration: .generate(), listener: .destination, address: "127.0.0.1")
            .destination
        for endpoint in [QMP.TLSEndpoint.server, .client] {
            let directory = vmDirectory + "/tls"
            try QEMUTLSFiles.write(credentials, endpoint: endpoint, into: directory, ownedLike: vmDirectory)
            let names = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
            let expected = ["ca-cert.pem", "\(endpoint.rawValue)-cert.pem", "\(endpoint.rawValue)-key.pem"]
            #expect(Set(names) == Set(expected + (endpoint == .server ? ["dh-params.pem"] : [])))
            for (path, mode) in [(directory, 0o700)] + names.map({ (directory + "/" + $0, 0o600) }) {
                let attributes = try FileManager.default.attributesOfItem(atPath: path)
                #expect(attributes[.posixPermissions] as? Int == mode, "\(path)")
                #expect(attributes[.ownerAccountID] as? UInt == 65534, "\(path)")
                #expect(attributes[.groupOwnerAccountID] as? UInt == 65534, "\(path)")
            }
            #expect(
                try String(contentsOfFile: directory + "/\(endpoint.rawValue)-key.pem", encoding: .utf8)
                    == credentials.privateKey)
        }
    }
}
