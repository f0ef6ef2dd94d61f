import Foundation
import Hummingbird
import VireoAPI
import VireoController
import VireoModel

extension VireoServer {
    /// Tokens and the audit trail, for admin only (`AccessPolicy`).
    func addAccessRoutes(_ router: Router<VireoRequestContext>) {
        let controller = self.controller
        router.get("/v1/tokens") { _, _ in try json(try await controller.listTokens()) }
        router.post("/v1/tokens") { request, _ in
            let token = try TokenRequest.fromAPIBody(try await readJSONBody(request), now: controller.now())
            return try json(try await controller.createToken(token), status: .created)
        }
        router.delete("/v1/tokens/{token}") { _, context in
            try json(try await controller.revokeToken(context.parameters.require("token")))
        }
        let tokens = self.tokens
        router.post("/v1/tokens/join/rotate") { _, context in
            guard let tokens else {
                throw VireoError(
                    .failedPrecondition,
                    "this controller listens on loopback only: it has no join token (its agents need none)")
            }
            let secret = try await tokens.rotateJoin(controller: controller)
            let now = controller.now()
            context.logger.notice("the join token was rotated")
            let view = TokenView(AccessToken(name: "join", role: .agent, createdAt: now, secretHash: ""), now: now)
            return try json(TokenCreated(token: view, secret: secret))
        }
        router.get("/v1/audit") { request, _ in
            let query = request.uri.queryParameters
            let since = try timeParameter(query.get("since"), name: "since", now: controller.now())
            let limit = try intParameter(query.get("limit"), name: "limit", range: 1...10_000) ?? 100
            return try json(try await controller.auditTrail(since: since, limit: limit))
        }
    }
}
