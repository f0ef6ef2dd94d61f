import AsyncHTTPClient
import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization
import Testing
import VireoHTTP

@Suite("Connections served in tasks of their own")
struct ConnectionTasksTests {
    /// A server whose connections `connections` serves, on a free loopback port; `slow` answers
    /// after `delay`.
    static func server(_ connections: ConnectionTasks, delay: Duration) -> (
        Application<RouterResponder<BasicRequestContext>>, port: ServedPort
    ) {
        let router = Router()
        router.get("fast") { _, _ in "fast" }
        router.get("slow") { _, _ -> String in
            try await Task.sleep(for: delay)
            return "slow"
        }
        let port = ServedPort()
        let app = Application(
            router: router,
            server: HTTPServerBuilder { responder in connections.serving(HTTP1Channel(responder: responder)) },
            configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in port.set(channel.localAddress?.port ?? 0) },
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        return (app, port)
    }

    @Test("requests are served, over one kept-alive connection the registry holds")
    func served() async throws {
        let connections = ConnectionTasks()
        let (app, port) = Self.server(connections, delay: .zero)
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: DrainingService(app, connections: connections))],
                logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })))
        let running = Task { try await group.run() }
        try await eventually("the server listens") { port.value != 0 }
        // One connection at most, so that the last request closes the one the others used.
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 1
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        for _ in 0..<20 {
            let response = try await client.get(url: "http://127.0.0.1:\(port.value)/fast").get()
            #expect(response.status == .ok)
            #expect(response.body.map { String(buffer: $0) } == "fast")
        }
        #expect(connections.count == 1, "one kept-alive connection")
        // (Its end is not awaited here: while a browser another test started holds a copy of the
        // client's socket, the server never sees the client close it.)
        try await client.shutdown()
        await group.triggerGracefulShutdown()
        try await running.value
    }

    @Test("a task leaves the registry when it ends; a drain waits for the last, and cancels those left at its timeout")
    func registry() async throws {
        let connections = ConnectionTasks()
        let gate = Gate()
        for _ in 0..<100 { connections.serve { await gate.wait() } }
        #expect(connections.count == 100)
        gate.open()
        await connections.drain(within: .seconds(60))
        #expect(connections.count == 0)
        // One that would never end by itself: cancelled at the timeout.
        connections.serve { try? await Task.sleep(for: .seconds(3600)) }
        let started = ContinuousClock.now
        await connections.drain(within: .milliseconds(100))
        #expect(connections.count == 0)
        #expect(ContinuousClock.now - started < .seconds(30))
    }

    @Test("a graceful shutdown lets a request in flight finish before the service ends")
    func drains() async throws {
        let connections = ConnectionTasks()
        let (app, port) = Self.server(connections, delay: .milliseconds(500))
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: DrainingService(app, connections: connections))],
                logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })))
        let ended = Mutex<ContinuousClock.Instant?>(nil)
        let running = Task {
            try await group.run()
            ended.withLock { $0 = .now }
        }
        try await eventually("the server listens") { port.value != 0 }
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        defer { _ = client.shutdown() }
        let slow = Task { try await client.get(url: "http://127.0.0.1:\(port.value)/slow").get() }
        try await eventually("the request is in flight") { connections.count == 1 }
        await group.triggerGracefulShutdown()
        let response = try await slow.value
        let answered = ContinuousClock.now
        #expect(response.status == .ok)
        #expect(response.body.map { String(buffer: $0) } == "slow")
        try await running.value
        #expect(connections.count == 0)
        let end = try #require(ended.withLock { $0 })
        #expect(end >= answered - .milliseconds(50), "the service ended after the answer, not before")
    }
}

/// The port a test server listens on, once it does.
final class ServedPort: Sendable {
    private let port = Mutex(0)
    var value: Int { port.withLock { $0 } }
    func set(_ value: Int) { port.withLock { $0 = value } }
}

/// Holds those who wait until it is opened.
final class Gate: Sendable {
    private let state = Mutex<(open: Bool, waiting: [CheckedContinuation<Void, Never>])>((false, []))
    func wait() async {
        await withCheckedContinuation { continuation in
            let open = state.withLock { s in
                if !s.open { s.waiting.append(continuation) }
                return s.open
            }
            if open { continuation.resume() }
        }
    }
    func open() {
        for continuation in state.withLock({ s in
            s.open = true
            defer { s.waiting = [] }
            return s.waiting
        }) { continuation.resume() }
    }
}
