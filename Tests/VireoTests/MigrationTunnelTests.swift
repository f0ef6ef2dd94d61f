import Foundation
import NIOCore
import NIOPosix
import Synchronization
import Testing
import VireoModel
import VireoSecurity
import VireoTunnel

/// The migration tunnel on loopback, with stand-ins for the two QEMUs: a unix socket that echoes
/// what arrives (the destination's incoming socket) and a client that writes into the source's
/// socket and reads the echo back.
@Suite("Migration tunnel")
struct MigrationTunnelTests {
    /// The destination QEMU's stand-in: echoes every byte; counts the connections it got.
    final class EchoSocket: Sendable {
        let path: String
        let channel: any Channel
        private let connections: Counter
        /// Connections it has accepted.
        var accepted: Int { connections.count.withLock { $0 } }

        final class Counter: Sendable { let count = Mutex(0) }

        init(directory: String) async throws {
            path = directory + "/incoming"
            let connections = Counter()
            channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .childChannelInitializer { channel in
                    connections.count.withLock { $0 += 1 }
                    return channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Echo()) }
                }
                .bind(unixDomainSocketPath: path).get()
            self.connections = connections
        }

        final class Echo: ChannelInboundHandler {
            typealias InboundIn = ByteBuffer
            typealias OutboundOut = ByteBuffer
            func channelRead(context: ChannelHandlerContext, data: NIOAny) {
                context.write(data, promise: nil)
            }
            func channelReadComplete(context: ChannelHandlerContext) { context.flush() }
        }
    }

    /// Writes `bytes` into the unix socket at `path` and returns what comes back until the peer
    /// closes or as many bytes as were sent have come back.
    func roundTrip(_ bytes: [UInt8], through path: String) async throws -> [UInt8] {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(unixDomainSocketPath: path) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            try await withThrowingTaskGroup(of: [UInt8].self) { group in
                group.addTask {
                    var received: [UInt8] = []
                    for try await buffer in inbound {
                        received += buffer.readableBytesView
                        if received.count >= bytes.count { break }
                    }
                    return received
                }
                for start in stride(from: 0, to: bytes.count, by: 1 << 16) {
                    try await outbound.write(ByteBuffer(bytes: bytes[start..<min(start + (1 << 16), bytes.count)]))
                }
                let received = try await group.next() ?? []
                group.cancelAll()
                return received
            }
        }
    }

    func credentials(_ authority: MigrationAuthority = MigrationAuthority(), _ migration: MigrationID = .generate()) throws
        -> (source: MigrationCredentials, destination: MigrationCredentials)
    {
        let pair = try authority.issue(migration: migration, listener: .destination, address: "127.0.0.1")
        return (pair.source, pair.destination)
    }

    /// Waits (up to 5 s) until `tunnel` has refused `count` connections.
    func refusals(_ tunnel: IncomingMigrationTunnel, reach count: Int) async throws -> [String] {
        let deadline = ContinuousClock.now + .seconds(5)
        while tunnel.refusals.count < count, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        return tunnel.refusals
    }

    @Test("bytes cross it unchanged, both ways, and it is single-use")
    func roundTrip() async throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let qemu = try await EchoSocket(directory: directory)
        let (source, destination) = try credentials()
        let incoming = try await IncomingMigrationTunnel(
            host: "127.0.0.1", credentials: destination, deliveringTo: qemu.path)
        let outgoing = try await OutgoingMigrationTunnel(
            host: "127.0.0.1", port: incoming.port, credentials: source, listeningAt: directory + "/outgoing",
            owner: nil)
        let attributes = try FileManager.default.attributesOfItem(atPath: outgoing.socketPath)
        #expect(attributes[.posixPermissions] as? Int == 0o600, "only QEMU's user may open the source's socket")

        var generator = SystemRandomNumberGenerator()
        let words = (0..<(1 << 20)).map { _ in generator.next() as UInt64 }
        let bytes = words.withUnsafeBytes { Array($0) }  // 8 MiB
        let echoed = try await roundTrip(bytes, through: outgoing.socketPath)
        #expect(echoed.count == bytes.count)
        #expect(echoed == bytes)
        #expect(qemu.accepted == 1)
        #expect(incoming.admitted)
        #expect(incoming.refusals.isEmpty)

        // The source is in: the port is closed to everyone else, this migration's source included.
        await #expect(throws: (any Error).self) {
            _ = try await OutgoingMigrationTunnel(
                host: "127.0.0.1", port: incoming.port, credentials: source, listeningAt: directory + "/again",
                owner: nil)
        }
        await outgoing.close()
        await incoming.close()
        #expect(!FileManager.default.fileExists(atPath: outgoing.socketPath))
        try await qemu.channel.close()
    }

    @Test("anything but this migration's source is refused before a byte reaches QEMU; the source still gets in")
    func rogues() async throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let qemu = try await EchoSocket(directory: directory)
        let (source, destination) = try credentials()
        // Another move's source; the destination trusts that move's authority too, so that what
        // refuses its certificate is the check of its name (each move's authority alone already
        // refuses it: below).
        let other = try credentials().source
        var trusting = destination
        trusting.caCertificate += "\n" + other.caCertificate
        let incoming = try await IncomingMigrationTunnel(
            host: "127.0.0.1", credentials: trusting, deliveringTo: qemu.path)

        // Plain TCP, as a QEMU without TLS would send its stream.
        let plain = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: incoming.port).get()
        // The destination may have closed it before this write goes out (it waits for a TLS hello,
        // and on a busy machine judges the connection first): the write failing is a refusal too.
        try? await plain.writeAndFlush(ByteBuffer(string: "QEVM\u{0}\u{0}\u{0}\u{3}"))
        try await plain.closeFuture.get()
        #expect(try await refusals(incoming, reach: 1).count == 1)

        // A rogue that knows our destination's name and trusts this move's authority (its
        // certificate is no secret), with the certificate of the other move, and with that of a
        // third move whose authority the destination does not trust: the destination refuses both.
        let third = try credentials().source
        let rogues = [other, third].map {
            MigrationCredentials(
                caCertificate: source.caCertificate, certificate: $0.certificate, privateKey: $0.privateKey,
                peer: source.peer)
        }
        for (index, rogue) in rogues.enumerated() {
            // In TLS 1.3 the client's handshake ends before the server has judged its certificate:
            // the rogue may get as far as its own socket, but what it sends goes nowhere.
            do {
                let tunnel = try await OutgoingMigrationTunnel(
                    host: "127.0.0.1", port: incoming.port, credentials: rogue,
                    listeningAt: directory + "/rogue-\(index)", owner: nil)
                // The stream ends at once (it used to hang when the destination closed before the
                // source's end of the splice was in place).
                let started = ContinuousClock.now
                let echoed = try? await withThrowingTaskGroup(of: [UInt8]?.self) { group in
                    group.addTask { try? await roundTrip(Array("QEVM".utf8), through: tunnel.socketPath) }
                    group.addTask {
                        try await Task.sleep(for: .seconds(10))
                        return nil
                    }
                    defer { group.cancelAll() }
                    return try await group.next() ?? nil
                }
                #expect(ContinuousClock.now - started < .seconds(10), "rogue \(index): the source's socket stayed open")
                #expect(echoed?.isEmpty ?? true, "rogue \(index) got an answer")
                await tunnel.close()
            } catch {
                print("rogue \(index): \(error)")
            }
            #expect(try await refusals(incoming, reach: 2 + index).count == 2 + index)
        }
        let reasons = incoming.refusals
        print("refusals:\n" + reasons.joined(separator: "\n"))
        #expect(reasons[1].contains("not of this migration's source"), "\(reasons[1])")
        #expect(reasons[2].contains("TLS: "), "\(reasons[2])")
        #expect(qemu.accepted == 0, "no rogue reached QEMU's socket")
        #expect(!incoming.admitted)

        // After all that, the source gets in.
        let outgoing = try await OutgoingMigrationTunnel(
            host: "127.0.0.1", port: incoming.port, credentials: source, listeningAt: directory + "/outgoing",
            owner: nil)
        let bytes = Array("the real stream".utf8)
        #expect(try await roundTrip(bytes, through: outgoing.socketPath) == bytes)
        #expect(qemu.accepted == 1)
        await outgoing.close()
        await incoming.close()
        try await qemu.channel.close()
    }

    @Test("the source sends only to this migration's destination")
    func wrongDestination() async throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let qemu = try await EchoSocket(directory: directory)
        let (source, _) = try credentials()
        // A destination of ours, but prepared for another migration: its certificate is of an
        // authority the source does not trust — and, were the source to trust it, not of this
        // migration's destination.
        let other = try credentials().destination
        let incoming = try await IncomingMigrationTunnel(host: "127.0.0.1", credentials: other, deliveringTo: qemu.path)
        var trusting = source
        trusting.caCertificate += "\n" + other.caCertificate
        for (what, credentials) in [("its move's authority", source), ("the other move's authority too", trusting)] {
            let error = await #expect(throws: VireoError.self, "\(what)") {
                _ = try await OutgoingMigrationTunnel(
                    host: "127.0.0.1", port: incoming.port, credentials: credentials, listeningAt: directory + "/outgoing",
                    owner: nil)
            }
            print("a source trusting \(what), to another move's destination: \(error?.message ?? "no error")")
            if credentials == trusting {
                #expect(
                    error?.message.contains("not of this migration's destination") == true, "\(String(describing: error))")
            }
        }
        #expect(!FileManager.default.fileExists(atPath: directory + "/outgoing"))
        #expect(qemu.accepted == 0)
        await incoming.close()
        try await qemu.channel.close()
    }
}
