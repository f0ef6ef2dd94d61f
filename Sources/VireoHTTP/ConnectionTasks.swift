import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// Serves each connection of a server in a task of its own, instead of a child task of the
/// server's task group (Hummingbird's way), and lets the server's owner wait for them to end.
///
/// Why: the Swift 6.3 runtime finds a finished child in its parent's list of children by walking
/// the list (swiftlang/swift#87887 makes it constant). A controller holding 10,000 agents' watches
/// open has 10,000 children, and every connection that ends walks them: after a controller
/// restart, with thousands of agents reconnecting and timing out at once, 28 % of its CPU went
/// to that walk, and agents took minutes to get back in sync (docs/benchmarks.md). Here a
/// connection's task ends in the server's group at once, and the registry removes it by key.
public final class ConnectionTasks: Sendable {
    private struct State {
        var next = 0
        var tasks: [Int: Task<Void, Never>] = [:]
        var drained: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Mutex(State())

    public init() {}

    /// Connections being served.
    public var count: Int { state.withLock { $0.tasks.count } }

    /// Serves `work` in a task of its own, registered until it ends.
    public func serve(_ work: @escaping @Sendable () async -> Void) {
        state.withLock { s in
            let key = s.next
            s.next += 1
            // Registered under the lock, before it can end and deregister.
            s.tasks[key] = Task {
                await work()
                self.end(key)
            }
        }
    }

    private func end(_ key: Int) {
        let waiting = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.tasks[key] = nil
            guard s.tasks.isEmpty else { return [] }
            defer { s.drained = [] }
            return s.drained
        }
        for continuation in waiting { continuation.resume() }
    }

    /// Waits until every connection has ended (a server shutting down gracefully lets the
    /// requests in flight finish and closes idle connections); after `timeout`, cancels those
    /// left, which closes them.
    public func drain(within timeout: Duration) async {
        let deadline = Task {
            try? await Task.sleep(for: timeout)
            guard !Task.isCancelled else { return }
            for task in state.withLock({ Array($0.tasks.values) }) { task.cancel() }
        }
        await withCheckedContinuation { continuation in
            let done = state.withLock { s in
                if s.tasks.isEmpty { return true }
                s.drained.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
        deadline.cancel()
    }
}

/// A server child channel whose connections `ConnectionTasks` serves.
public struct OwnTaskChildChannel<Base: ServerChildChannel>: ServerChildChannel {
    public typealias Value = Base.Value
    let base: Base
    let connections: ConnectionTasks

    public func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        base.setup(channel: channel, logger: logger)
    }

    public func handle(value: Value, logger: Logger) async {
        connections.serve { await base.handle(value: value, logger: logger) }
    }
}

extension ConnectionTasks {
    /// `channel`, its connections served by this registry.
    public func serving(_ channel: some ServerChildChannel) -> any ServerChildChannel {
        OwnTaskChildChannel(base: channel, connections: self)
    }
}

/// An application whose connections `connections` serves: it ends once they have (or after
/// `drainTimeout`, cancelling those left), as Hummingbird's own server does for its children.
public struct DrainingService: Service {
    let service: any Service
    let connections: ConnectionTasks
    let drainTimeout: Duration

    public init(_ service: any Service, connections: ConnectionTasks, drainTimeout: Duration = .seconds(30)) {
        self.service = service
        self.connections = connections
        self.drainTimeout = drainTimeout
    }

    public func run() async throws {
        do {
            try await service.run()
        } catch {
            await connections.drain(within: .zero)
            throw error
        }
        await connections.drain(within: Task.isCancelled ? .zero : drainTimeout)
    }
}
