import Hummingbird
import Metrics
import Synchronization

/// Request counts and durations (seconds) per method, route and status, through swift-metrics
/// with an injected factory so each server reports into its own registry.
struct RequestMetricsMiddleware<Context: RequestContext>: RouterMiddleware {
    let metrics: RequestMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response
    {
        let start = ContinuousClock.now
        var status = 500
        defer {
            // Unmatched paths share one label so random URLs cannot grow the metric set.
            metrics.record(
                method: request.method.rawValue, route: context.endpointPath ?? "unmatched", status: status,
                duration: ContinuousClock.now - start)
        }
        let response = try await next(request, context)
        status = response.status.code
        return response
    }
}

/// The metric handles, made once per label set: asking the factory for them on every request
/// costs a registry lookup and label validation each time.
final class RequestMetrics: Sendable {
    private struct Handles {
        var counters: [String: Counter] = [:]
        var timers: [String: Metrics.Timer] = [:]
    }
    private let factory: any MetricsFactory
    private let handles = Mutex(Handles())

    init(factory: any MetricsFactory) { self.factory = factory }

    func record(method: String, route: String, status: Int, duration: Duration) {
        let routeKey = method + " " + route
        let counterKey = routeKey + " " + String(status)
        let (counter, timer) = handles.withLock { h in
            if h.counters[counterKey] == nil {
                h.counters[counterKey] = Counter(
                    label: "vireo_http_requests_total",
                    dimensions: [("method", method), ("route", route), ("status", String(status))], factory: factory)
            }
            if h.timers[routeKey] == nil {
                h.timers[routeKey] = Metrics.Timer(
                    label: "vireo_http_request_duration_seconds", dimensions: [("method", method), ("route", route)],
                    factory: factory)
            }
            return (h.counters[counterKey]!, h.timers[routeKey]!)
        }
        counter.increment()
        let (seconds, attoseconds) = duration.components
        timer.recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
