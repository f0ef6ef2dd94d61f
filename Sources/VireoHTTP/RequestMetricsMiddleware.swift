import Hummingbird
import Metrics

/// Request counts and durations (seconds) per method, route and status, through swift-metrics
/// with an injected factory so each server reports into its own registry.
struct RequestMetricsMiddleware<Context: RequestContext>: RouterMiddleware {
    let factory: any MetricsFactory

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        var status = 500
        defer {
            // Unmatched paths share one label so random URLs cannot grow the metric set.
            let route = context.endpointPath ?? "unmatched"
            let method = request.method.rawValue
            Counter(
                label: "vireo_http_requests_total",
                dimensions: [("method", method), ("route", route), ("status", String(status))], factory: factory
            ).increment()
            Timer(
                label: "vireo_http_request_duration_seconds", dimensions: [("method", method), ("route", route)],
                factory: factory
            ).recordInterval(since: start)
        }
        let response = try await next(request, context)
        status = response.status.code
        return response
    }
}

extension Timer {
    func recordInterval(since start: ContinuousClock.Instant) {
        let elapsed = ContinuousClock.now - start
        let (seconds, attoseconds) = elapsed.components
        recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
