import Foundation
import NIOCore
import NIOExtras
import NIOPosix
import Synchronization
import VireoModel

/// An asynchronous event QEMU sent (`STOP`, `RESUME`, `SHUTDOWN`, `MIGRATION`, ...).
public struct QMPEvent: Sendable, Equatable {
    public var name: String
    public var data: JSONValue
}

/// A QMP command that QEMU answered with an error, or a connection problem.
public struct QMPError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// QEMU's error class, e.g. `GenericError`, `CommandNotFound`.
        case command(String)
        case timeout
        case disconnected
        case protocolViolation
    }
    public var kind: Kind
    public var message: String
    public var description: String { "QMP: \(message)" }
}

/// A small client for the QEMU Machine Protocol over a unix socket.
///
/// QMP is newline-delimited JSON: a greeting, `qmp_capabilities`, then commands. Replies carry the
/// `id` we sent, and asynchronous events may arrive between a command and its reply, so every
/// line read is either routed to the waiting command by `id` or published on `events`.
public final class QMPClient: Sendable {
    private struct State {
        var nextID = 1
        /// Each waiting command's continuation, resumed with the raw line of its reply.
        var pending: [Int: CheckedContinuation<Data, any Error>] = [:]
        /// Events callers wait for, each delivered the first matching event.
        var expectations: [ObjectIdentifier: QMPEventExpectation] = [:]
        var closed = false
    }

    private let channel: any Channel
    private let state = Mutex(State())
    private let eventContinuation: AsyncStream<QMPEvent>.Continuation
    /// Events in the order QEMU sent them. Finishes when the connection closes (QEMU exited).
    public let events: AsyncStream<QMPEvent>
    /// The `QMP.version.qemu` object from the greeting.
    public let version: JSONValue

    private init(
        channel: any Channel, version: JSONValue, events: AsyncStream<QMPEvent>,
        continuation: AsyncStream<QMPEvent>.Continuation
    ) {
        self.channel = channel
        self.version = version
        self.events = events
        self.eventContinuation = continuation
    }

    /// Connects, reads the greeting and negotiates capabilities.
    public static func connect(path: String, timeout: Duration = .seconds(5)) async throws -> QMPClient {
        let (events, continuation) = AsyncStream.makeStream(of: QMPEvent.self, bufferingPolicy: .bufferingNewest(1024))
        let greeting = Greeting()
        let router = LineRouter(greeting: greeting)
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(TimeAmount(timeout))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineBasedFrameDecoder()))
                        try channel.pipeline.syncOperations.addHandler(router)
                    }
                }
                .connect(unixDomainSocketPath: path).get()
        } catch {
            throw QMPError(kind: .disconnected, message: "cannot connect to \(path): \(error)")
        }
        let version: JSONValue
        do {
            version = try await greeting.wait(on: channel.eventLoop, timeout: timeout)
        } catch {
            try? await channel.close()
            throw error
        }
        let client = QMPClient(channel: channel, version: version, events: events, continuation: continuation)
        router.client.withLock { $0 = client }
        do {
            try await client.execute(QMP.Capabilities(), timeout: timeout)
        } catch {
            await client.close()
            throw error
        }
        return client
    }

    /// Runs `command` and returns its decoded `return` value; throws `QMPError` on an error reply
    /// (`.command`), on timeout, when QEMU goes away first (`.disconnected`), or when the reply
    /// does not have the shape `C.Response` declares (`.protocolViolation`, naming the field).
    @discardableResult
    public func execute<C: QMPCommand>(_ command: C, timeout: Duration = .seconds(10)) async throws -> C.Response {
        let reply = try await send(C.name, timeout: timeout) { id in try command.request(id: id) }
        return try C.response(from: reply)
    }

    /// Writes the line `request` makes for a fresh `id` and waits for the reply line with that id.
    private func send(_ name: String, timeout: Duration, request: (Int) throws -> Data) async throws -> Data {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Data, any Error>) in
            let id: Int? = state.withLock { state in
                guard !state.closed else { return nil }
                let id = state.nextID
                state.nextID += 1
                state.pending[id] = continuation
                return id
            }
            guard let id else {
                continuation.resume(throwing: QMPError(kind: .disconnected, message: "\(name): connection closed"))
                return
            }
            guard var line = try? request(id) else {
                fail(id, QMPError(kind: .protocolViolation, message: "\(name): the arguments cannot be encoded"))
                return
            }
            line.append(0x0A)
            channel.writeAndFlush(ByteBuffer(bytes: line), promise: nil)
            channel.eventLoop.scheduleTask(in: TimeAmount(timeout)) { [weak self] in
                self?.fail(id, QMPError(kind: .timeout, message: "\(name): no reply within \(timeout)"))
            }
        }
    }

    /// Registers a wait for the first event from now on that `matches`; `wait(for:timeout:)`
    /// returns it. Register before sending the command that causes the event: QEMU may send the
    /// event before the command's reply. Events also go to `events` as usual.
    public func expectEvent(_ what: String, matching matches: @escaping @Sendable (QMPEvent) -> Bool)
        -> QMPEventExpectation
    {
        let expectation = QMPEventExpectation(what: what, matches: matches)
        let closed = state.withLock { state in
            if !state.closed { state.expectations[ObjectIdentifier(expectation)] = expectation }
            return state.closed
        }
        if closed {
            expectation.event.deliver(.failure(QMPError(kind: .disconnected, message: "\(what): connection closed")))
        }
        return expectation
    }

    /// The event `expectation` waits for; throws `.timeout` when it does not come within
    /// `timeout`, `.disconnected` when QEMU goes away first. The expectation is done afterwards.
    public func wait(for expectation: QMPEventExpectation, timeout: Duration) async throws -> QMPEvent {
        let timer = channel.eventLoop.scheduleTask(in: TimeAmount(timeout)) {
            expectation.event.deliver(
                .failure(QMPError(kind: .timeout, message: "\(expectation.what): no event within \(timeout)")))
        }
        defer {
            timer.cancel()
            cancel(expectation)
        }
        return try await expectation.event.wait()
    }

    /// Drops an expectation nobody will wait for (the command that would cause it failed).
    public func cancel(_ expectation: QMPEventExpectation) {
        _ = state.withLock { $0.expectations.removeValue(forKey: ObjectIdentifier(expectation)) }
    }

    /// Closes the connection; pending commands fail with `.disconnected`.
    public func close() async {
        try? await channel.close()
        connectionClosed()
    }

    fileprivate func fail(_ id: Int, _ error: QMPError) {
        state.withLock { $0.pending.removeValue(forKey: id) }?.resume(throwing: error)
    }

    /// Routes one line: an event to `events`, a reply (`line` as QEMU sent it) to its command.
    fileprivate func received(_ value: JSONValue, line: Data) {
        if let name = value["event"]?.stringValue {
            let event = QMPEvent(name: name, data: value["data"] ?? .null)
            let met = state.withLock { state in
                let met = state.expectations.filter { $0.value.matches(event) }
                for key in met.keys { state.expectations.removeValue(forKey: key) }
                return met.values
            }
            for expectation in met { expectation.event.deliver(.success(event)) }
            eventContinuation.yield(event)
            return
        }
        guard let id = value["id"]?.intValue,
            let continuation = state.withLock({ $0.pending.removeValue(forKey: id) })
        else { return }  // a reply to a command that already timed out
        if value["return"] != nil {
            continuation.resume(returning: line)
        } else {
            let error = value["error"]
            continuation.resume(
                throwing: QMPError(
                    kind: .command(error?["class"]?.stringValue ?? "GenericError"),
                    message: error?["desc"]?.stringValue ?? "unknown error"))
        }
    }

    fileprivate func connectionClosed() {
        let (pending, expectations) = state.withLock { state in
            state.closed = true
            defer {
                state.pending = [:]
                state.expectations = [:]
            }
            return (state.pending, state.expectations)
        }
        for continuation in pending.values {
            continuation.resume(throwing: QMPError(kind: .disconnected, message: "QEMU closed the connection"))
        }
        for expectation in expectations.values {
            expectation.event.deliver(
                .failure(QMPError(kind: .disconnected, message: "\(expectation.what): QEMU closed the connection")))
        }
        eventContinuation.finish()
    }
}

/// A value delivered once, possibly before anyone waits for it: the first delivery wins, later
/// ones are ignored.
private final class OneShot<Value: Sendable>: Sendable {
    private let slot = Mutex<(value: Result<Value, QMPError>?, waiter: CheckedContinuation<Value, any Error>?)>((nil, nil))

    func deliver(_ result: Result<Value, QMPError>) {
        let waiter = slot.withLock { slot -> CheckedContinuation<Value, any Error>? in
            guard slot.value == nil else { return nil }
            slot.value = result
            defer { slot.waiter = nil }
            return slot.waiter
        }
        waiter?.resume(with: result.mapError { $0 as any Error })
    }

    func wait() async throws -> Value {
        try await withCheckedThrowingContinuation { continuation in
            let ready = slot.withLock { slot -> Result<Value, QMPError>? in
                if slot.value == nil { slot.waiter = continuation }
                return slot.value
            }
            if let ready { continuation.resume(with: ready.mapError { $0 as any Error }) }
        }
    }
}

/// The greeting arrives before the client object exists; this holds it until `connect` reads it.
private final class Greeting: Sendable {
    private let value = OneShot<JSONValue>()

    func deliver(_ result: Result<JSONValue, QMPError>) { value.deliver(result) }

    func wait(on loop: any EventLoop, timeout: Duration) async throws -> JSONValue {
        loop.scheduleTask(in: TimeAmount(timeout)) {
            self.deliver(.failure(QMPError(kind: .timeout, message: "no QMP greeting within \(timeout)")))
        }
        return try await value.wait()
    }
}

/// One event a caller waits for (see `QMPClient.expectEvent(_:matching:)`).
public final class QMPEventExpectation: Sendable {
    /// What the caller waits for, in words, for error messages.
    let what: String
    let matches: @Sendable (QMPEvent) -> Bool
    fileprivate let event = OneShot<QMPEvent>()

    fileprivate init(what: String, matches: @escaping @Sendable (QMPEvent) -> Bool) {
        self.what = what
        self.matches = matches
    }
}

/// Decodes each line and hands it to the greeting (first line) or the client (the rest).
private final class LineRouter: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let greeting: Greeting
    let client = Mutex<QMPClient?>(nil)

    init(greeting: Greeting) { self.greeting = greeting }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let line = Data(unwrapInboundIn(data).readableBytesView)
        guard let value = try? JSONDecoder().decode(JSONValue.self, from: line) else {
            return  // QMP sends only JSON; a torn or foreign line is not ours to interpret
        }
        if let client = client.withLock({ $0 }) {
            client.received(value, line: line)
        } else if let qmp = value["QMP"] {
            greeting.deliver(.success(qmp["version"]?["qemu"] ?? .null))
        } else {
            greeting.deliver(.failure(QMPError(kind: .protocolViolation, message: "expected the QMP greeting")))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        greeting.deliver(.failure(QMPError(kind: .disconnected, message: "QEMU closed the connection")))
        client.withLock { $0 }?.connectionClosed()
        context.fireChannelInactive()
    }
}

extension TimeAmount {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
