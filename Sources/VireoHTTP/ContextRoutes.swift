import Foundation
import Hummingbird
import VireoAPI
import VireoModel

/// The context verbs under `/v1/contexts`, over whoever serves them: the controller (every host)
/// or an agent's local API (its own host, also while the controller is away). Same paths, bodies
/// and errors in both, so the CLI does not care which it talks to.
func addContextRoutes(_ router: Router<VireoRequestContext>, service: any ContextService) {
    router.get("/v1/contexts") { _, _ in try json(try await service.listContexts()) }
    router.post("/v1/contexts") { request, _ in
        let body = try await readJSONBody(request)
        let open = try ContextValidation.fromAPIBody(body)
        return try json(try await service.openContext(open), status: .created)
    }
    router.get("/v1/contexts/{context}") { request, context in
        try json(try await service.context(context.parameters.require("context"), host: try hostParameter(request)))
    }
    router.post("/v1/contexts/{context}/reset") { request, context in
        let body = try FieldReader(try await readJSONBody(request, emptyAs: .object([:])), path: "")
        try body.rejectUnknown(allowed: ["force"])
        return try json(
            try await service.resetContext(
                context.parameters.require("context"), host: try hostParameter(request), force: try body.bool("force") ?? false))
    }
    router.post("/v1/contexts/{context}/keep") { request, context in
        try json(try await service.keepContext(context.parameters.require("context"), host: try hostParameter(request)))
    }
    router.get("/v1/contexts/{context}/logs") { request, context in
        let tail = try intParameter(request.uri.queryParameters.get("tail"), name: "tail", range: 0...1_000_000)
        let text = try await service.contextLogs(
            context.parameters.require("context"), host: try hostParameter(request), tail: tail)
        return Response(
            status: .ok, headers: [.contentType: "text/plain; charset=utf-8", .cacheControl: "no-cache"],
            body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }
    router.delete("/v1/contexts/{context}") { request, context in
        try json(try await service.closeContext(context.parameters.require("context"), host: try hostParameter(request)))
    }
}

/// `?host=NAME`: which host's context, when the name is open on several.
private func hostParameter(_ request: Request) throws -> String? {
    guard let host = request.uri.queryParameters.get("host") else { return nil }
    try ResourceName.validate(host, field: "host")
    return host
}

/// An agent's local API: the context verbs for its own host, on loopback only, with no token —
/// for the person at the machine, also while the controller is unreachable (`--local-api`).
public enum LocalAPI {
    public static func router(contexts: any ContextService) -> Router<VireoRequestContext> {
        let router = Router(context: VireoRequestContext.self)
        router.add(middleware: ErrorEnvelopeMiddleware())
        // It listens on loopback only and has no tokens: as the controller's API on loopback.
        router.add(middleware: SameOriginMiddleware(loopbackOnly: true))
        let health = ByteBuffer(data: try! VireoJSON.encoder().encode(Health(status: "ok", version: VireoVersion.current)))
        router.get("/healthz") { _, _ in jsonResponse(health) }
        addContextRoutes(router, service: contexts)
        return router
    }
}
