import Foundation
import Synchronization
import VireoAPI

/// The stream of state changes behind `/v1/events`: a bounded history for clients that resume
/// with `Last-Event-ID`, and live delivery to every subscriber.
public final class EventLog: Sendable {
    private struct State {
        var nextSeq = 1
        var history: [ClusterEvent] = []
        var subscribers: [Int: AsyncStream<ClusterEvent>.Continuation] = [:]
        var nextSubscriber = 0
        var closed = false
    }
    private let state = Mutex(State())
    private let capacity: Int

    public init(capacity: Int = 1000) { self.capacity = capacity }

    /// Records an event and delivers it. Returns it with its sequence number.
    @discardableResult
    public func publish(
        _ kind: ClusterEvent.Kind, name: String, from: String? = nil, to: String? = nil, message: String? = nil,
        at time: Date
    ) -> ClusterEvent {
        state.withLock { s in
            let event = ClusterEvent(seq: s.nextSeq, time: time, kind: kind, name: name, from: from, to: to, message: message)
            s.nextSeq += 1
            s.history.append(event)
            if s.history.count > capacity { s.history.removeFirst(s.history.count - capacity) }
            for continuation in s.subscribers.values { continuation.yield(event) }
            return event
        }
    }

    /// Events still in the history with a sequence number above `seq`.
    public func events(after seq: Int) -> [ClusterEvent] {
        state.withLock { s in s.history.filter { $0.seq > seq } }
    }

    /// A live stream, starting with the remembered events after `seq` (if given).
    public func subscribe(after seq: Int? = nil) -> AsyncStream<ClusterEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: ClusterEvent.self, bufferingPolicy: .bufferingNewest(10_000))
        let id: Int? = state.withLock { s in
            if let seq { for event in s.history where event.seq > seq { continuation.yield(event) } }
            guard !s.closed else { return nil }
            let id = s.nextSubscriber
            s.nextSubscriber += 1
            s.subscribers[id] = continuation
            return id
        }
        guard let id else {
            continuation.finish()
            return stream
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.subscribers.removeValue(forKey: id) }
        }
        return stream
    }

    /// Ends every live stream, and those subscribed from now on after their remembered events
    /// (at shutdown, so clients that follow the stream let the server stop).
    public func close() {
        let open = state.withLock { s in
            s.closed = true
            defer { s.subscribers.removeAll() }
            return Array(s.subscribers.values)
        }
        for continuation in open { continuation.finish() }
    }
}
