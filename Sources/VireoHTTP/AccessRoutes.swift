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
        router.post("/v1/tokens/{token}/rotate") { _, context in
            let name = try context.parameters.require("token")
            guard let kind = AccessTokens.Kind(rawValue: name) else {
                throw VireoError.invalid(
                    field: "token", value: "'\(name)'",
                    "only the controller's own tokens, admin and join, are rotated; a token of the store is revoked and made again"
                )
            }
            guard let tokens else {
                throw VireoError(
                    .failedPrecondition,
                    "this controller listens on loopback only: it has no admin or join token (loopback needs none)")
            }
            let secret = try await tokens.rotate(kind, controller: controller)
            let now = controller.now()
            context.logger.notice("a token was rotated", metadata: ["token": "\(name)"])
            let role: AccessRole = kind == .admin ? .admin : .agent
            let view = TokenView(AccessToken(name: name, role: role, createdAt: now, secretHash: ""), now: now)
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
