import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization
import VireoModel
import X509

/// The encrypted channel of a live migration's memory stream, between the two hosts' agents.
///
/// Each QEMU talks to a unix socket on its own host, private to the VM; between the hosts the
/// bytes travel over TLS 1.3 with the migration's credentials, both ends authenticated: the
/// destination admits only a peer presenting this migration's source certificate, and the source
/// sends only to a peer presenting this migration's destination certificate.
///
/// Why not QEMU's own TLS (`tls-creds-x509` on the migration): QEMU 7.2 hands GnuTLS every piece of
/// a write separately, so each page and each page header becomes its own TLS record and its own
/// `send` — about 200,000 of each for 512 MiB. That more than quadrupled a paused move's downtime
/// (651 ms against 138 ms plain, docs/benchmarks.md); here QEMU writes plainly to a local socket
/// and the tunnel seals 16 KiB records.
public enum MigrationTunnel {
    /// How long a peer may take from connecting to a completed handshake.
    public static let handshakeTimeout: TimeAmount = .seconds(10)

    static func configuration(_ credentials: MigrationCredentials, server: Bool) throws -> NIOSSLContext {
        let certificates = try NIOSSLCertificate.fromPEMBytes(Array(credentials.certificate.utf8))
        let key = try NIOSSLPrivateKey(bytes: Array(credentials.privateKey.utf8), format: .pem)
        let authorities = try NIOSSLCertificate.fromPEMBytes(Array(credentials.caCertificate.utf8))
        let chain = certificates.map { NIOSSLCertificateSource.certificate($0) }
        var configuration =
            server
            ? TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
            : TLSConfiguration.makeClientConfiguration()
        if !server {
            configuration.certificateChain = chain
            configuration.privateKey = .privateKey(key)
        }
        configuration.trustRoots = .certificates(authorities)
        configuration.minimumTLSVersion = .tlsv13
        // A server checks (and requires) the client's certificate; a client also checks that the
        // server's names the address it connected to.
        configuration.certificateVerification = server ? .noHostnameVerification : .fullVerification
        return try NIOSSLContext(configuration: configuration)
    }

    /// The name of the peer of a TLS channel whose handshake has completed, as in
    /// `MigrationCredentials.peer`.
    static func peerName(of channel: any Channel) throws -> String {
        let handler = try channel.pipeline.syncOperations.handler(type: NIOSSLHandler.self)
        guard let certificate = handler.peerCertificate else {
            throw VireoError(.unauthorized, "the peer presented no certificate")
        }
        return peerName(of: try Certificate(derEncoded: try certificate.toDERBytes()))
    }

    /// The name `certificate` gives its holder, written as `MigrationCredentials.peer` is (and as
    /// GnuTLS writes it): the subject's parts in the certificate's order, e.g.
    /// `O=Vireo,CN=vireo-migration-<id>-source`.
    public static func peerName(of certificate: Certificate) -> String {
        certificate.subject.map { String(describing: $0) }.joined(separator: ",")
    }
}

/// The destination's end: listens on the migration address for this one migration, and hands the
/// stream of the first peer that proves to be its source to QEMU's incoming socket. Any other
/// connection is refused before a byte of it reaches QEMU; once the source is in, the listener
/// closes.
public final class IncomingMigrationTunnel: Sendable {
    /// The TCP port it listens on.
    public let port: Int
    private let shared: Shared

    final class Shared: Sendable {
        struct State {
            var listener: (any Channel)?
            var admitted: (any Channel)?
            var delivery: (any Channel)?
            var refusals: [String] = []
            var closed = false
        }
        let state = Mutex(State())
        let logger: Logger
        init(logger: Logger) { self.logger = logger }

        /// Kept: the latest refusals (a peer may try many times; the log has them all).
        static let refusalsKept = 64

        func refuse(_ remote: SocketAddress?, _ reason: String) {
            let text = "\(remote.map { "\($0)" } ?? "a peer"): \(reason)"
            state.withLock { state in
                state.refusals.append(text)
                if state.refusals.count > Self.refusalsKept { state.refusals.removeFirst() }
            }
            logger.warning("refused a connection to the migration's port", metadata: ["reason": "\(text)"])
        }

        /// The first authenticated source gets in; the listener closes behind it.
        func admit(_ channel: any Channel) -> Bool {
            let listener: (any Channel)?? = state.withLock { state in
                guard state.admitted == nil, !state.closed else { return .none }
                state.admitted = channel
                return .some(state.listener)
            }
            guard case .some(let listener) = listener else { return false }
            listener?.close(promise: nil)
            return true
        }
    }

    /// Listens on `host` (a free port) for the source of the migration `credentials` are the
    /// destination's credentials of, and delivers its stream to the unix socket `socketPath`.
    public init(
        host: String, credentials: MigrationCredentials, deliveringTo socketPath: String,
        logger: Logger = Logger(label: "vireo.tunnel")
    ) async throws {
        let context = try MigrationTunnel.configuration(credentials, server: true)
        let shared = Shared(logger: logger)
        let peer = credentials.peer
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                    try channel.pipeline.syncOperations.addHandler(
                        Gate(shared: shared, peer: peer, socketPath: socketPath))
                }
            }
            .bind(host: host, port: 0).get()
        let closed = shared.state.withLock { state in
            state.listener = listener
            return state.closed || state.admitted != nil
        }
        if closed { try? await listener.close() }
        self.shared = shared
        self.port = listener.localAddress?.port ?? 0
    }

    /// Why connections were refused, in order ("ADDRESS: reason"), the latest 64.
    public var refusals: [String] { shared.state.withLock { $0.refusals } }

    /// Whether the source has connected (from then on, nobody else can).
    public var admitted: Bool { shared.state.withLock { $0.admitted != nil } }

    /// Stops listening and ends the stream, if one is flowing.
    public func close() async {
        let channels = shared.state.withLock { state in
            state.closed = true
            return [state.listener, state.admitted, state.delivery].compactMap { $0 }
        }
        for channel in channels { try? await channel.close() }
    }

    /// Holds a new connection until its handshake shows who it is; then either closes it or
    /// connects it to QEMU and gets out of the way.
    final class Gate: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = ByteBuffer
        let shared: Shared
        let peer: String
        let socketPath: String
        /// Bytes that came with the handshake's end, before QEMU's socket was connected.
        var early: [ByteBuffer] = []
        var passed = false
        var timeout: Scheduled<Void>?

        init(shared: Shared, peer: String, socketPath: String) {
            self.shared = shared
            self.peer = peer
            self.socketPath = socketPath
        }

        func channelActive(context: ChannelHandlerContext) {
            let channel = context.channel
            let shared = self.shared
            timeout = context.eventLoop.scheduleTask(in: MigrationTunnel.handshakeTimeout) {
                shared.refuse(channel.remoteAddress, "no handshake within \(MigrationTunnel.handshakeTimeout)")
                channel.close(promise: nil)
            }
            context.fireChannelActive()
        }

        func channelInactive(context: ChannelHandlerContext) {
            timeout?.cancel()
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            if !passed { shared.refuse(context.channel.remoteAddress, "TLS: \(error)") }
            context.close(promise: nil)
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            early.append(unwrapInboundIn(data))
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            guard case .handshakeCompleted = event as? TLSUserEvent else {
                context.fireUserInboundEventTriggered(event)
                return
            }
            timeout?.cancel()
            let channel = context.channel
            let name: String
            do {
                name = try MigrationTunnel.peerName(of: channel)
            } catch {
                shared.refuse(channel.remoteAddress, "\(error)")
                context.close(promise: nil)
                return
            }
            guard name == peer else {
                shared.refuse(channel.remoteAddress, "certificate of '\(name)', not of this migration's source")
                context.close(promise: nil)
                return
            }
            guard shared.admit(channel) else {
                shared.refuse(channel.remoteAddress, "the migration's source is already connected")
                context.close(promise: nil)
                return
            }
            passed = true
            try? channel.syncOptions?.setOption(.autoRead, value: false)
            deliver(context: context)
        }

        /// Connects to QEMU's socket and splices the two; the gate leaves the pipeline.
        private func deliver(context: ChannelHandlerContext) {
            let channel = context.channel
            let loop = context.eventLoop
            let (network, local) = Splice.pair()
            let localEnd = NIOLoopBound(local, eventLoop: loop)
            let shared = self.shared
            let socketPath = self.socketPath
            ClientBootstrap(group: loop)
                .channelInitializer { unix in
                    unix.eventLoop.makeCompletedFuture {
                        try unix.pipeline.syncOperations.addHandler(localEnd.value)
                    }
                }
                .connect(unixDomainSocketPath: socketPath)
                .assumeIsolated()
                .whenComplete { result in
                    switch result {
                    case .failure(let error):
                        shared.logger.error(
                            "cannot reach QEMU's incoming socket", metadata: ["path": "\(socketPath)", "error": "\(error)"])
                        channel.close(promise: nil)
                    case .success(let unix):
                        shared.state.withLock { $0.delivery = unix }
                        for buffer in self.early { unix.write(buffer, promise: nil) }
                        unix.flush()
                        self.early = []
                        do {
                            try channel.pipeline.syncOperations.addHandler(network)
                            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
                        } catch {
                            channel.close(promise: nil)
                            unix.close(promise: nil)
                            return
                        }
                        try? channel.syncOptions?.setOption(.autoRead, value: true)
                    }
                }
        }
    }
}

/// The source's end: connected to the destination's tunnel (which proved to be this migration's
/// destination) before QEMU sends anything, and listening on a unix socket that only the VM's
/// QEMU may open; QEMU migrates to `unix:<socketPath>`.
public final class OutgoingMigrationTunnel: Sendable {
    public let socketPath: String
    private let network: any Channel
    private let listener: any Channel
    /// QEMU's connection, once it is there.
    private let local: Slot

    final class Slot: Sendable {
        let channel = Mutex<(any Channel)?>(nil)
    }

    /// Connects to the destination's tunnel at `host`:`port` with this end's `credentials`, and
    /// opens `socketPath`, owned by `owner` (QEMU's uid) with mode 0600.
    public init(
        host: String, port: Int, credentials: MigrationCredentials, listeningAt socketPath: String, owner: uid_t?
    ) async throws {
        let context = try MigrationTunnel.configuration(credentials, server: false)
        // An address is checked against the certificate's IP names; anything else is a host name.
        let hostname = (try? SocketAddress(ipAddress: host, port: 0)) == nil ? host : nil
        // Watched from the start: on loopback the handshake can be over before `connect` returns.
        let handshake = Mutex<EventLoopFuture<String>?>(nil)
        let network: any Channel
        do {
            network = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(MigrationTunnel.handshakeTimeout)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let promise = channel.eventLoop.makePromise(of: String.self)
                        handshake.withLock { $0 = promise.futureResult }
                        try channel.pipeline.syncOperations.addHandler(
                            try NIOSSLClientHandler(context: context, serverHostname: hostname))
                        try channel.pipeline.syncOperations.addHandler(HandshakeWatch(promise: promise))
                    }
                }
                .connect(host: host, port: port).get()
        } catch {
            throw VireoError(.unavailable, "cannot connect to the destination's migration port \(host):\(port): \(error)")
        }
        do {
            guard let handshake = handshake.withLock({ $0 }) else {
                throw VireoError(.internal, "the connection to \(host):\(port) has no TLS handler")
            }
            try await Self.check(network, handshake: handshake, expecting: credentials.peer, at: "\(host):\(port)")
        } catch {
            try? await network.close()
            throw error
        }
        let loop = network.eventLoop
        let local = Slot()
        let listener: any Channel
        do {
            // The network's end goes in now: it reads nothing until QEMU's end is there.
            let localBound = try await loop.submit {
                let (networkEnd, localEnd) = Splice.pair()
                try network.pipeline.syncOperations.addHandler(networkEnd)
                // Closed before its end was there: it would not see the channel go inactive.
                guard network.isActive else { throw ChannelError.ioOnClosedChannel }
                return NIOLoopBound(localEnd, eventLoop: loop)
            }.get()
            listener = try await ServerBootstrap(group: loop)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        // One connection: QEMU's.
                        let first = local.channel.withLock { current in
                            guard current == nil else { return false }
                            current = channel
                            return true
                        }
                        guard first else { throw VireoError(.conflict, "the migration's socket is taken") }
                        try channel.pipeline.syncOperations.addHandler(localBound.value)
                    }
                }
                .bind(unixDomainSocketPath: socketPath, cleanupExistingSocketFile: true).get()
            guard chmod(socketPath, 0o600) == 0, owner.map({ chown(socketPath, $0, gid_t(bitPattern: -1)) == 0 }) ?? true
            else {
                let reason = String(cString: strerror(errno))
                try? await listener.close()
                unlink(socketPath)
                throw VireoError(.internal, "cannot hand \(socketPath) to QEMU: \(reason)")
            }
        } catch let error as VireoError {
            try? await network.close()
            throw error
        } catch {
            // In TLS 1.3 the destination judges this end's certificate after the handshake has
            // ended here: a refusal shows as the connection closing.
            let active = network.isActive
            try? await network.close()
            throw active
                ? VireoError(.internal, "cannot open the migration's socket \(socketPath): \(error)")
                : VireoError(
                    .unavailable,
                    "the destination \(host):\(port) closed the connection after the handshake (it refused this host's certificate?)"
                )
        }
        self.socketPath = socketPath
        self.network = network
        self.listener = listener
        self.local = local
    }

    /// Waits for the handshake (closing the connection if it takes too long), then checks that
    /// the peer is `expected`.
    private static func check(
        _ channel: any Channel, handshake: EventLoopFuture<String>, expecting expected: String, at address: String
    ) async throws {
        let timeout = channel.eventLoop.scheduleTask(in: MigrationTunnel.handshakeTimeout) {
            channel.close(promise: nil)
        }
        defer { timeout.cancel() }
        let name: String
        do {
            name = try await handshake.get()
        } catch {
            throw VireoError(.unavailable, "TLS handshake with the destination \(address) failed: \(error)")
        }
        guard name == expected else {
            throw VireoError(
                .unauthorized,
                "the destination \(address) presented a certificate of '\(name)', not of this migration's destination")
        }
    }

    /// Ends the stream (if QEMU still sends) and removes the socket.
    public func close() async {
        let local = self.local.channel.withLock { $0 }
        for channel in [listener, network] + (local.map { [$0] } ?? []) { try? await channel.close() }
        unlink(socketPath)
    }

    /// Completes its promise with the peer's name when the handshake is done (read at once: the
    /// peer may close right after), fails it on an error or an early close.
    final class HandshakeWatch: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = ByteBuffer
        let promise: EventLoopPromise<String>
        init(promise: EventLoopPromise<String>) { self.promise = promise }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            context.fireUserInboundEventTriggered(event)
            if case .handshakeCompleted = event as? TLSUserEvent {
                promise.completeWith(Result { try MigrationTunnel.peerName(of: context.channel) })
                context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            promise.fail(error)
            context.fireErrorCaught(error)
        }

        func channelInactive(context: ChannelHandlerContext) {
            promise.fail(VireoError(.unavailable, "the destination closed the connection"))
            context.fireChannelInactive()
        }

        /// Also when the connection never came about (a promise must not be left unfulfilled).
        func handlerRemoved(context: ChannelHandlerContext) {
            promise.fail(VireoError(.unavailable, "the connection ended before its handshake"))
        }
    }
}
