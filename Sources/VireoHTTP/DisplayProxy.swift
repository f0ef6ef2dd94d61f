import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import VireoAPI
import VireoModel

/// A context's display in the browser: `GET /v1/contexts/{context}/display` upgraded to a
/// WebSocket whose binary messages carry the VNC (RFB) stream of the context's display, which the
/// console shows with noVNC. The display listens on its host's loopback, so the controller bridges
/// only the displays of hosts on its own machine (`displayHosts`: the host of `vireo up`).
///
/// Browsers let any page open a WebSocket to any address, so the upgrade is refused to pages of
/// another origin, and beyond loopback it needs the token, sent as the subprotocol
/// `vireo-token.TOKEN` (a browser cannot set a header on a WebSocket).
extension VireoServer {
    /// The HTTP/1.1 server (over TLS with `tls`): the router's routes, and the display's
    /// WebSocket upgrade; each connection served by `connections` (`ConnectionTasks` says why).
    public func httpServer(tls: TLSConfiguration? = nil, connections: ConnectionTasks) -> HTTPServerBuilder {
        HTTPServerBuilder { responder in
            let http = HTTP1WebSocketUpgradeChannel(responder: responder, configuration: .init()) { request, _, logger in
                await self.displayUpgrade(request, logger: logger)
            }
            guard let tls else { return connections.serving(http) }
            return connections.serving(try TLSChannel(http, tlsConfiguration: tls))
        }
    }

    static let tokenProtocolPrefix = "vireo-token."

    func displayUpgrade(_ request: HTTPRequest, logger: Logger) async -> ShouldUpgradeResult<
        WebSocketDataHandler<HTTP1WebSocketUpgradeChannel.Context>
    > {
        guard let target = request.path, let (name, host) = Self.displayRequest(target) else { return .dontUpgrade }
        let offered = (request.headerFields[.secWebSocketProtocol] ?? "").split(separator: ",").map {
            $0.trimmingCharacters(in: .whitespaces)
        }
        do {
            // As the router holds requests: a token presented is held to its role, on loopback too.
            let presented = offered.first { $0.hasPrefix(Self.tokenProtocolPrefix) }?.dropFirst(
                Self.tokenProtocolPrefix.count)
            let caller =
                if let presented { VireoHTTP.caller(presenting: String(presented), tokens: tokens, controller: controller) } else
                { tokens == nil ? Caller.loopback : nil }
            guard let caller,
                AccessPolicy.decide(caller, method: "GET", path: target.split(separator: "?")[0].description) == .allow
            else { return .dontUpgrade }
            let port = try await displayPort(
                context: name, host: host, origin: request.headerFields[.origin], authority: request.authority)
            var headers = HTTPFields()
            if offered.contains("binary") { headers[.secWebSocketProtocol] = "binary" }
            return .upgrade(headers) { inbound, outbound, _ in
                do {
                    try await Self.bridge(inbound, outbound, toPort: port)
                } catch {
                    logger.notice("display of \(name) ended", metadata: ["error": "\(error)"])
                }
            }
        } catch {
            // The router's route answers the same request with the reason.
            return .dontUpgrade
        }
    }

    /// `/v1/contexts/NAME/display[?host=H]` → (NAME, H).
    static func displayRequest(_ target: String) -> (name: String, host: String?)? {
        let uri = URI(target)
        let path = uri.path.split(separator: "/", omittingEmptySubsequences: false)
        guard path.count == 5, path[0].isEmpty, path[1] == "v1", path[2] == "contexts", path[4] == "display",
            let name = String(path[3]).removingPercentEncoding, !name.isEmpty
        else { return nil }
        return (name, uri.queryParameters.get("host"))
    }

    /// The loopback port of the context's display, or why the controller cannot show it.
    func displayPort(context name: String, host: String?, origin: String?, authority: String?) async throws -> Int {
        if let origin, !SameOriginMiddleware<VireoRequestContext>.isOwn(origin, authority: authority) {
            throw VireoError(.forbidden, "a display is shown only to pages this server serves, not to \(origin)")
        }
        if tokens == nil, let authority, !SameOriginMiddleware<VireoRequestContext>.namesLoopback(authority) {
            throw VireoError(.forbidden, "Host \(authority) refused: a display without tokens is shown only on loopback")
        }
        let context = try await controller.context(name, host: host)
        guard context.state == .running, let display = context.display else {
            throw VireoError(
                .failedPrecondition,
                "context \(name) has no display \(context.display == nil ? "(opened without --display vnc)" : "while \(context.state.rawValue)")"
            )
        }
        guard displayHosts.contains(context.host) else {
            throw VireoError(
                .failedPrecondition,
                "context \(name)'s display is on host \(context.host)'s loopback (vnc://\(display)), which this controller does not reach: open it with a VNC viewer on \(context.host)"
            )
        }
        guard display.hasPrefix("127.0.0.1:"), let port = Int(display.dropFirst("127.0.0.1:".count)) else {
            throw VireoError(.internal, "context \(name) reports its display at \(display), not on loopback")
        }
        return port
    }

    /// Carries bytes both ways between the WebSocket and the display until either side ends.
    static func bridge(_ inbound: WebSocketInboundStream, _ outbound: WebSocketOutboundWriter, toPort port: Int) async throws {
        let display = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        try await display.executeThenClose { fromDisplay, toDisplay in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for try await frame in inbound { try await toDisplay.write(frame.data) }
                }
                group.addTask {
                    for try await bytes in fromDisplay { try await outbound.write(.binary(bytes)) }
                }
                _ = try await group.next()
                group.cancelAll()
            }
        }
    }

    func addDisplayRoutes(_ router: Router<VireoRequestContext>) {
        router.get("/v1/contexts/{context}/display") { request, context -> Response in
            _ = try await displayPort(
                context: context.parameters.require("context"), host: request.uri.queryParameters.get("host"),
                origin: request.headers[.origin], authority: request.head.authority)
            throw VireoError(
                .invalidArgument,
                "a WebSocket endpoint: open it as a WebSocket (the console does) to receive the display's VNC stream")
        }
    }
}
