import Foundation
import Hummingbird
import VireoAPI
import VireoController
import VireoModel

extension VireoServer {
    /// `GET /v1/events`: server-sent events of state changes. `Last-Event-ID` (or `?after=`)
    /// resumes after a sequence number; `?follow=false` returns the remembered events and ends.
    func addEventRoutes(_ router: Router<VireoRequestContext>) {
        let events = controller.events
        router.get("/v1/events") { request, _ in
            let query = request.uri.queryParameters
            let afterText = request.headers.first { $0.name.canonicalName == "last-event-id" }?.value ?? query.get("after")
            let after = try intParameter(afterText, name: "after", range: 0...Int.max)
            let follow = query.get("follow").map { $0 != "false" && $0 != "0" } ?? true
            let headers: HTTPFields = [.contentType: "text/event-stream", .cacheControl: "no-cache"]
            guard follow else {
                let buffers = events.events(after: after ?? 0).map(Self.frame)
                return Response(status: .ok, headers: headers, body: ResponseBody(contentsOf: buffers))
            }
            let stream = Self.withKeepalive(events.subscribe(after: after))
            return Response(
                status: .ok, headers: headers,
                body: ResponseBody { writer in
                    for await item in stream {
                        try await writer.write(item)
                    }
                    try await writer.finish(nil)
                })
        }
    }

    static func frame(_ event: ClusterEvent) -> ByteBuffer {
        let data = (try? VireoJSON.encoder().encode(event)) ?? Data("{}".utf8)
        var buffer = ByteBuffer()
        buffer.writeString("id: \(event.seq)\nevent: \(event.kind.rawValue)\ndata: ")
        buffer.writeBytes(data)
        buffer.writeString("\n\n")
        return buffer
    }

    /// Interleaves a comment line every 15 s so a dead client is noticed and its subscription
    /// ends even when nothing happens.
    static func withKeepalive(_ events: AsyncStream<ClusterEvent>) -> AsyncStream<ByteBuffer> {
        AsyncStream { continuation in
            let forward = Task {
                for await event in events { continuation.yield(frame(event)) }
                continuation.finish()
            }
            let keepalive = Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(15))
                    continuation.yield(ByteBuffer(string: ": keepalive\n\n"))
                }
            }
            continuation.onTermination = { _ in
                forward.cancel()
                keepalive.cancel()
            }
        }
    }
}
