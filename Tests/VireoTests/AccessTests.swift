import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing
import VireoAPI
import VireoController
import VireoHTTP
import VireoModel
import VireoProcess
import VireoStore

@Suite("Access policy")
struct AccessPolicyTests {
    let viewer = Caller(name: "v", role: .viewer)
    let op = Caller(name: "o", role: .operator)
    let owner = Caller(name: "shop-team", role: .owner, apps: ["shop"])
    let agent = Caller(name: "a", role: .agent)
    let admin = Caller(name: "root", role: .admin)

    func allowed(_ caller: Caller, _ method: String, _ path: String) -> Bool {
        AccessPolicy.decide(caller, method: method, path: path) == .allow
    }

    @Test("each role's reach, decided from method and path")
    func table() {
        let reads = ["/v1/vms", "/v1/vms/a", "/v1/hosts", "/v1/apps/shop", "/v1/history", "/v1/events", "/metrics"]
        for path in reads {
            for caller in [viewer, op, owner, admin] { #expect(allowed(caller, "GET", path), "\(caller.role) GET \(path)") }
            #expect(!allowed(agent, "GET", path), "an agent reads nothing but its own paths")
        }
        for path in ["/v1/tokens", "/v1/audit"] {
            #expect(allowed(admin, "GET", path))
            for caller in [viewer, op, owner, agent] { #expect(!allowed(caller, "GET", path), "\(caller.role) \(path)") }
        }
        #expect(!allowed(op, "POST", "/v1/tokens"))
        for path in ["/v1/agent/heartbeat", "/v1/agent/register"] {
            #expect(allowed(agent, "POST", path) && allowed(admin, "POST", path))
            for caller in [viewer, op, owner] { #expect(!allowed(caller, "POST", path)) }
        }
        for (method, path) in [
            ("POST", "/v1/vms"), ("DELETE", "/v1/vms/a"), ("POST", "/v1/vms/a/stop"), ("POST", "/v1/vms/a/migrate"),
            ("POST", "/v1/contexts"), ("POST", "/v1/contexts/web/reset"), ("POST", "/v1/vms/import"),
        ] {
            #expect(allowed(op, method, path), "operator \(method) \(path)")
            #expect(!allowed(viewer, method, path), "viewer \(method) \(path)")
        }
        for (method, path) in [("DELETE", "/v1/apps/shop"), ("PUT", "/v1/rebalance"), ("POST", "/v1/apps/shop/packs/web")] {
            #expect(!allowed(op, method, path), "an operator does not change applications or settings: \(method) \(path)")
        }
        #expect(allowed(op, "POST", "/v1/apps/shop/samples"))
        // A context's display is its keyboard and mouse.
        #expect(allowed(op, "GET", "/v1/contexts/web/display"))
        #expect(!allowed(viewer, "GET", "/v1/contexts/web/display"))
        #expect(!allowed(owner, "GET", "/v1/contexts/web/display"))
        // What the body decides.
        for caller in [viewer, op, owner] {
            #expect(AccessPolicy.decide(caller, method: "POST", path: "/v1/plans") == .checkBody)
        }
        #expect(AccessPolicy.decide(op, method: "POST", path: "/v1/apply") == .checkBody)
        #expect(AccessPolicy.decide(owner, method: "POST", path: "/v1/vms") == .checkBody)
        #expect(AccessPolicy.decide(owner, method: "POST", path: "/v1/vms/import") == .checkBody)
        #expect(AccessPolicy.decide(owner, method: "POST", path: "/v1/vms/web-1/stop") == .ownerOfVM("web-1"))
        // An owner's applications.
        #expect(allowed(owner, "DELETE", "/v1/apps/shop"))
        #expect(allowed(owner, "POST", "/v1/apps/shop/packs/web"))
        #expect(!allowed(owner, "DELETE", "/v1/apps/blog"))
        #expect(!allowed(owner, "POST", "/v1/contexts"))
        #expect(!allowed(owner, "PUT", "/v1/rebalance"))
        #expect(
            AccessPolicy.decideOwnerOfVM(owner, method: "POST", path: "/v1/vms/x/stop", app: "shop") == .allow)
        #expect(AccessPolicy.decideOwnerOfVM(owner, method: "POST", path: "/v1/vms/x/stop", app: "blog") != .allow)
        #expect(AccessPolicy.decideOwnerOfVM(owner, method: "POST", path: "/v1/vms/x/stop", app: nil) != .allow)
        if case .deny(let reason) = AccessPolicy.decide(viewer, method: "POST", path: "/v1/vms") {
            #expect(reason.contains("token 'v' (viewer)") && reason.contains("POST /v1/vms") && reason.contains("only reads"))
        } else {
            Issue.record("a viewer's POST is not refused")
        }
    }

    @Test("what a body changes: an owner only in its applications, an operator not applications, a viewer nothing")
    func bodies() throws {
        #expect(throws: Never.self) { try AccessPolicy.permit(owner, [.vm(app: "shop"), .app("shop")]) }
        for change: AccessPolicy.Change in [.vm(app: "blog"), .vm(app: nil), .app("blog"), .context, .executePlan] {
            let error = #expect(throws: VireoError.self) { try AccessPolicy.permit(owner, [change]) }
            #expect(error?.code == .forbidden)
        }
        #expect(throws: Never.self) { try AccessPolicy.permit(op, [.vm(app: "blog"), .vm(app: nil), .context, .executePlan]) }
        #expect(throws: VireoError.self) { try AccessPolicy.permit(op, [.app("shop")]) }
        #expect(throws: VireoError.self) { try AccessPolicy.permit(viewer, [.executePlan]) }
        #expect(throws: Never.self) { try AccessPolicy.permit(admin, [.app("x"), .context, .executePlan]) }
        // Naming another application's VM in an owner's manifest moves it out of that application.
        let manifest = try ManifestParser.parse(
            "apiVersion: vireo/v1\nkind: VirtualMachine\nmetadata: {name: db}\nspec: {image: tiny, app: shop}\n")
        let changes = AccessPolicy.changes(of: manifest) { $0 == "db" ? .some("blog") : nil }
        #expect(changes == [.vm(app: "shop"), .vm(app: "blog")])
        #expect(throws: VireoError.self) { try AccessPolicy.permit(owner, changes) }
    }
}

@Suite("Tokens, roles and the audit trail")
struct AccessAPITests {
    static func bearer(_ secret: String) -> HTTPFields { [.authorization: "Bearer \(secret)"] }

    /// Makes a token as the loopback admin; returns its secret.
    static func token(_ client: any TestClientProtocol, _ body: String) async throws -> String {
        let made = try await client.request(.post, "/v1/tokens", body: body)
        #expect(made.status == 201, "\(made.body)")
        return try decodeJSON(TokenCreated.self, made.body).secret
    }

    @Test("a token is held to its role on loopback too; refusals are 403 with the envelope and change nothing")
    func roles() async throws {
        let plane = try await TestControlPlane.make()
        try await plane.test { client in
            let viewer = try await Self.token(client, #"{"name":"dash","role":"viewer"}"#)
            let op = try await Self.token(client, #"{"name":"ci","role":"operator"}"#)
            let owner = try await Self.token(client, #"{"name":"shop-team","role":"owner","apps":["shop"]}"#)
            #expect(try await client.request(.get, "/v1/vms", headers: Self.bearer(viewer)).status == 200)
            var refused = try await client.request(
                .post, "/v1/vms", body: #"{"name":"a","image":"tiny"}"#, headers: Self.bearer(viewer))
            #expect(refused.status == 403)
            #expect(expectEnvelope(refused.body, code: .forbidden).contains("token 'dash' (viewer)"))
            #expect(try await client.request(.get, "/v1/tokens", headers: Self.bearer(viewer)).status == 403)
            #expect(try await client.request(.get, "/v1/audit", headers: Self.bearer(op)).status == 403)

            // The operator runs VMs but does not change applications or settings.
            #expect(
                try await client.request(.post, "/v1/vms", body: #"{"name":"a","image":"tiny"}"#, headers: Self.bearer(op))
                    .status == 201)
            #expect(try await client.request(.post, "/v1/vms/a/stop", headers: Self.bearer(op)).status == 202)
            let app = "apiVersion: vireo/v1\nkind: Application\nmetadata: {name: shop}\nspec: {}\n"
            refused = try await client.request(.post, "/v1/apply", body: app, headers: Self.bearer(op))
            #expect(refused.status == 403)
            #expect(expectEnvelope(refused.body, code: .forbidden).contains("change application 'shop'"))
            #expect(
                try await client.request(.put, "/v1/rebalance", body: #"{"policy":"slo"}"#, headers: Self.bearer(op)).status
                    == 403)

            // The owner makes its application and VMs in it, and touches nothing else.
            #expect(try await client.request(.post, "/v1/apply", body: app, headers: Self.bearer(owner)).status == 200)
            #expect(
                try await client.request(
                    .post, "/v1/vms", body: #"{"name":"web","image":"tiny","app":"shop"}"#, headers: Self.bearer(owner)
                ).status == 201)
            refused = try await client.request(
                .post, "/v1/vms", body: #"{"name":"other","image":"tiny"}"#, headers: Self.bearer(owner))
            #expect(refused.status == 403)
            #expect(expectEnvelope(refused.body, code: .forbidden).contains("outside an application"))
            #expect(try await client.request(.post, "/v1/vms/web/stop", headers: Self.bearer(owner)).status == 202)
            #expect(try await client.request(.post, "/v1/vms/a/start", headers: Self.bearer(owner)).status == 403)
            #expect(try await client.request(.delete, "/v1/vms/a", headers: Self.bearer(owner)).status == 403)
            // Taking the operator's VM into its application by naming it in a manifest is refused.
            let takeover = "apiVersion: vireo/v1\nkind: VirtualMachine\nmetadata: {name: a}\nspec: {image: tiny, app: shop}\n"
            #expect(try await client.request(.post, "/v1/apply", body: takeover, headers: Self.bearer(owner)).status == 403)
            #expect(try await plane.controller.vm("a").app == nil, "nothing changed")
            #expect(try await plane.controller.vm("a").intent == .stopped, "the owner's start was refused")
            #expect(plane.controller.listVMs().items.map(\.name).sorted() == ["a", "web"])

            // Plans: a dry run is a question anyone may ask; executing one is an operator's.
            #expect(try await client.request(.post, "/v1/plans", body: "{}", headers: Self.bearer(viewer)).status == 200)
            #expect(
                try await client.request(.post, "/v1/plans", body: #"{"execute":true}"#, headers: Self.bearer(viewer)).status
                    == 403)
            #expect(
                try await client.request(.post, "/v1/plans", body: #"{"execute":true}"#, headers: Self.bearer(op)).status == 201)
        }
    }

    @Test("unknown, revoked and expired tokens are refused with 401; the store keeps only the secret's SHA-256")
    func lifetime() async throws {
        let clock = ManualClock()
        let plane = try await TestControlPlane.make(now: { clock.now })
        try await plane.test { client in
            #expect(try await client.request(.get, "/v1/vms", headers: Self.bearer("nope")).status == 401)
            let expiry = clock.now.addingTimeInterval(3_600).formatted(.iso8601)
            let brief = try await Self.token(client, #"{"name":"brief","role":"viewer","expiresAt":"\#(expiry)"}"#)
            let kept = try await Self.token(client, #"{"name":"kept","role":"viewer"}"#)
            #expect(try await client.request(.get, "/v1/vms", headers: Self.bearer(brief)).status == 200)
            clock.advance(3_601)
            let expired = try await client.request(.get, "/v1/vms", headers: Self.bearer(brief))
            #expect(expired.status == 401)
            expectEnvelope(expired.body, code: .unauthorized)
            #expect(try await client.request(.get, "/v1/vms", headers: Self.bearer(kept)).status == 200)
            let revoked = try await client.request(.delete, "/v1/tokens/kept")
            #expect(revoked.status == 200)
            #expect(try decodeJSON(TokenView.self, revoked.body).status == .revoked)
            #expect(try await client.request(.get, "/v1/vms", headers: Self.bearer(kept)).status == 401)
            #expect(try await client.request(.delete, "/v1/tokens/nope").status == 404)

            let list = try decodeJSON(TokenList.self, try await client.request(.get, "/v1/tokens").body)
            #expect(list.items.map(\.name) == ["brief", "kept"])
            #expect(list.items.map(\.status) == [.expired, .revoked])
            let listed = try await client.request(.get, "/v1/tokens").body
            #expect(!listed.contains(kept) && !listed.contains("secretHash"), "never the secret or its hash")
            let stored = try await plane.store.tokens().first { $0.name == "kept" }
            let hash = SHA256.hash(data: Data(kept.utf8)).map { String(format: "%02x", $0) }.joined()
            #expect(stored?.secretHash == hash)
        }
    }

    @Test("a bad token request is refused naming the field, and nothing stored changes")
    func badRequests() async throws {
        let clock = ManualClock()
        let plane = try await TestControlPlane.make(now: { clock.now })
        try await plane.test { client in
            _ = try await Self.token(client, #"{"name":"ci","role":"operator"}"#)
            let before = try await plane.store.tokens()
            let past = clock.now.addingTimeInterval(-1).formatted(.iso8601)
            for (body, field, status) in [
                (#"{"name":"x","role":"root"}"#, "role", 400),
                (#"{"name":"x"}"#, "role", 400),
                (#"{"name":"X!","role":"viewer"}"#, "name", 400),
                (#"{"name":"admin","role":"viewer"}"#, "name", 400),
                (#"{"name":"x","role":"owner"}"#, "apps", 400),
                (#"{"name":"x","role":"viewer","apps":["shop"]}"#, "apps", 400),
                (#"{"name":"x","role":"owner","apps":["Shop"]}"#, "apps[0]", 400),
                (#"{"name":"x","role":"viewer","expiresAt":"soon"}"#, "expiresAt", 400),
                (#"{"name":"x","role":"viewer","expiresAt":"\#(past)"}"#, "expiresAt", 400),
                (#"{"name":"x","role":"viewer","admin":true}"#, "admin", 400),
                (#"{"name":"ci","role":"viewer"}"#, "ci", 409),
            ] {
                let answer = try await client.request(.post, "/v1/tokens", body: body)
                #expect(answer.status == status, "\(body)")
                let message = expectEnvelope(answer.body, code: status == 409 ? .conflict : .invalidArgument)
                #expect(message.contains(field), "\(body): \(message)")
            }
            #expect(try await plane.store.tokens() == before)
        }
    }

    @Test(
        "the join and admin tokens are rotated by admin only: the old one is refused from then on, the new one is in its file (0600), audited; no other token is; a controller on loopback only has none: 412"
    )
    func rotateJoin() async throws {
        let directory = temporaryDirectory()
        let tokens = try AccessTokens.loadOrCreate(in: directory).tokens
        let old = tokens.join
        let plane = try await TestControlPlane.make(tokens: tokens)
        try await plane.test { client in
            let admin = Self.bearer(tokens.admin)
            let h1 = try await plane.controller.host("h1").id
            let heartbeat = #"{"hostID":"\#(h1)","instances":[]}"#
            #expect(
                try await client.request(.post, "/v1/agent/heartbeat", body: heartbeat, headers: Self.bearer(old)).status == 200)
            let made = try await client.request(.post, "/v1/tokens", body: #"{"name":"ci","role":"operator"}"#, headers: admin)
            let op = try decodeJSON(TokenCreated.self, made.body).secret
            #expect(try await client.request(.post, "/v1/tokens/join/rotate", headers: Self.bearer(op)).status == 403)
            #expect(try await client.request(.post, "/v1/tokens/join/rotate", headers: Self.bearer(old)).status == 403)
            #expect(tokens.join == old, "a refusal changes nothing")

            let rotated = try await client.request(.post, "/v1/tokens/join/rotate", headers: admin)
            #expect(rotated.status == 200, "\(rotated.body)")
            let answer = try decodeJSON(TokenCreated.self, rotated.body)
            #expect(answer.token.name == "join" && answer.token.role == .agent)
            let fresh = answer.secret
            #expect(fresh != old && fresh.count == 64)
            #expect(
                try await client.request(.post, "/v1/agent/heartbeat", body: heartbeat, headers: Self.bearer(old)).status == 401)
            #expect(
                try await client.request(.post, "/v1/agent/heartbeat", body: heartbeat, headers: Self.bearer(fresh)).status == 200
            )
            // Joins that expire or are revoked one by one: tokens of the agent role, untouched by a rotation.
            let rack = try await client.request(
                .post, "/v1/tokens", body: #"{"name":"rack-7","role":"agent","expiresAt":"2099-01-01T00:00:00Z"}"#, headers: admin
            )
            let rackSecret = try decodeJSON(TokenCreated.self, rack.body).secret
            #expect(
                try await client.request(.post, "/v1/agent/heartbeat", body: heartbeat, headers: Self.bearer(rackSecret)).status
                    == 200)
            let path = directory + "/join.token"
            #expect(try String(contentsOfFile: path, encoding: .utf8) == fresh + "\n")
            #expect(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int == 0o600)
            #expect(try AccessTokens.loadOrCreate(in: directory).tokens.join == fresh, "kept across a restart")

            let trail = try decodeJSON(AuditList.self, try await client.request(.get, "/v1/audit", headers: admin).body).items
            #expect(
                trail.filter { $0.path == "/v1/tokens/join/rotate" }.map { "\($0.who) \($0.status)" } == [
                    "ci 403", "join 403", "admin 200",
                ])

            // Only the controller's own two.
            let other = try await client.request(.post, "/v1/tokens/ci/rotate", headers: admin)
            #expect(other.status == 400)
            #expect(expectEnvelope(other.body, code: .invalidArgument).contains("'ci'"))

            // The admin token: the answer carries the new one, the old one is refused at once.
            let oldAdmin = tokens.admin
            let rotatedAdmin = try await client.request(.post, "/v1/tokens/admin/rotate", headers: admin)
            #expect(rotatedAdmin.status == 200)
            let newAdmin = try decodeJSON(TokenCreated.self, rotatedAdmin.body)
            #expect(newAdmin.token.role == .admin && newAdmin.secret != oldAdmin)
            #expect(try await client.request(.get, "/v1/tokens", headers: Self.bearer(oldAdmin)).status == 401)
            #expect(try await client.request(.get, "/v1/tokens", headers: Self.bearer(newAdmin.secret)).status == 200)
            #expect(try String(contentsOfFile: directory + "/admin.token", encoding: .utf8) == newAdmin.secret + "\n")
            #expect(tokens.join == fresh, "the join token untouched")
        }
        let loopback = try await TestControlPlane.make()
        try await loopback.test { client in
            let refused = try await client.request(.post, "/v1/tokens/join/rotate")
            #expect(refused.status == 412)
            #expect(expectEnvelope(refused.body, code: .failedPrecondition).contains("loopback"))
        }
    }

    @Test("a controller without its own certificate authority has no agent certificates to revoke: 412, nothing stored")
    func revokeWithoutAuthority() async throws {
        let plane = try await TestControlPlane.make()
        try await plane.test { client in
            let refused = try await client.request(.post, "/v1/hosts/h1/revoke")
            #expect(refused.status == 412)
            #expect(expectEnvelope(refused.body, code: .failedPrecondition).contains("--tls-auto"))
        }
        #expect(try await plane.store.certificateCutoffs().isEmpty)
    }

    @Test("every request that changes state is audited — who, role, what, status, request ID — refusals too; reads are not")
    func audit() async throws {
        let plane = try await TestControlPlane.make()
        try await plane.test { client in
            let viewer = try await Self.token(client, #"{"name":"dash","role":"viewer"}"#)
            let created = try await client.execute(
                uri: "/v1/vms", method: .post, body: ByteBuffer(string: #"{"name":"a","image":"tiny"}"#)
            ) { $0 }
            #expect(created.status == .created)
            let refused = try await client.request(.post, "/v1/vms/a/stop", headers: Self.bearer(viewer))
            let refusedID = try decodeJSON(ErrorEnvelope.self, refused.body).error.requestId
            #expect(try await client.request(.post, "/v1/vms", body: #"{"name":"a","image":"tiny"}"#).status == 409)
            #expect(try await client.request(.get, "/v1/vms", headers: Self.bearer(viewer)).status == 200)
            let h1 = try await plane.controller.host("h1").id
            #expect(
                try await client.request(.post, "/v1/agent/heartbeat", body: #"{"hostID":"\#(h1)","instances":[]}"#).status
                    == 200)

            let trail = try decodeJSON(AuditList.self, try await client.request(.get, "/v1/audit").body).items
            #expect(
                trail.map { "\($0.who) \($0.role.rawValue) \($0.method) \($0.path) \($0.status)" } == [
                    "loopback admin POST /v1/tokens 201",
                    "loopback admin POST /v1/vms 201",
                    "dash viewer POST /v1/vms/a/stop 403",
                    "loopback admin POST /v1/vms 409",
                ])
            #expect(trail[2].requestId == refusedID, "the request ID the refusal carried")
            #expect(trail[2].error?.contains("only reads") == true)
            #expect(trail[3].error?.contains("already exists") == true)
            #expect(trail[1].error == nil)
            #expect(zip(trail, trail.dropFirst()).allSatisfy { $0.seq < $1.seq && $0.at <= $1.at })
            let newest = try decodeJSON(AuditList.self, try await client.request(.get, "/v1/audit?limit=1").body).items
            #expect(newest == [trail[3]])
            #expect(try await client.request(.get, "/v1/audit?since=yesterday").status == 400)
            #expect(
                try decodeJSON(AuditList.self, try await client.request(.get, "/v1/audit?since=-1h").body).items.count == 4)
        }
    }

    @Test("the audit trail keeps its retention: older entries go, newer ones stay")
    func retention() async throws {
        let clock = ManualClock()
        var settings = ControllerSettings.fast
        settings.auditRetention = .seconds(86_400)
        let plane = try await TestControlPlane.make(settings: settings, now: { clock.now })
        try await plane.test { client in
            #expect(try await client.request(.post, "/v1/vms", body: #"{"name":"old","image":"tiny"}"#).status == 201)
            clock.advance(86_400 - 60)
            #expect(try await client.request(.post, "/v1/vms", body: #"{"name":"new","image":"tiny"}"#).status == 201)
            clock.advance(120)
            #expect(try await plane.controller.pruneAudit() == 1)
            let trail = try decodeJSON(AuditList.self, try await client.request(.get, "/v1/audit").body).items
            #expect(trail.map(\.path) == ["/v1/vms"] && trail.count == 1)
            #expect(trail.first?.at == clock.now.addingTimeInterval(-120), "the newer create")
        }
    }

    @Test("tokens outlive a controller restart, and a revoked one stays revoked")
    func restart() async throws {
        let path = temporaryDirectory() + "/vireo.db"
        var secrets: [String] = []
        do {
            let plane = try await TestControlPlane.make(store: try SQLiteStore(path: path))
            secrets.append(try await plane.controller.createToken(TokenRequest(name: "ci", role: .operator)).secret)
            secrets.append(try await plane.controller.createToken(TokenRequest(name: "old", role: .viewer)).secret)
            _ = try await plane.controller.revokeToken("old")
        }
        let plane = try await TestControlPlane.make(hosts: [], store: try SQLiteStore(path: path))
        try await plane.test { [secrets] (client: any TestClientProtocol) async throws in
            #expect(try await client.request(.get, "/v1/vms", headers: Self.bearer(secrets[0])).status == 200)
            #expect(try await client.request(.get, "/v1/vms", headers: Self.bearer(secrets[1])).status == 401)
            #expect(try await client.request(.post, "/v1/tokens", body: #"{"name":"old","role":"viewer"}"#).status == 409)
        }
    }
}

@Suite("Methods a path does not have")
struct MethodNotAllowedTests {
    @Test("a known path asked with another method answers 405 with Allow, before any token is checked, and is not audited")
    func allow() async throws {
        let plane = try await TestControlPlane.make()
        try await plane.test { client in
            for (method, path, allow) in [
                (HTTPRequest.Method.delete, "/v1/hosts", "GET"), (.post, "/v1/vms/a", "DELETE, GET"),
                (.get, "/v1/vms/a/stop", "POST"), (.put, "/v1/vms", "GET, POST"), (.post, "/console/novnc/core/rfb.js", "GET"),
                (.patch, "/v1/tokens/ci", "DELETE"),
            ] {
                let answer = try await client.execute(uri: path, method: method, headers: [.authorization: "Bearer wrong"]) {
                    ($0.status.code, $0.headers[.allow], String(buffer: $0.body))
                }
                #expect(answer.0 == 405, "\(method) \(path)")
                #expect(answer.1 == allow, "\(method) \(path)")
                #expect(expectEnvelope(answer.2, code: .methodNotAllowed).contains(allow))
            }
            #expect(try await client.request(.get, "/v1/nope").status == 404)
            #expect(try await client.request(.post, "/v1/vms/a/nope").status == 404)
            let trail = try await plane.store.audit(since: nil, limit: 100)
            #expect(trail.map { "\($0.method) \($0.path) \($0.status)" } == ["POST /v1/vms/a/nope 404"], "only the unknown path")
        }
    }
}

@Suite("Metrics exposition")
struct MetricsExpositionTests {
    @Test(
        "/metrics passes promtool check metrics, with requests, VMs, hosts and an application's objectives in it",
        .enabled(
            if: FileManager.default.isExecutableFile(atPath: "/usr/bin/promtool"),
            "needs promtool (Debian's prometheus package; scripts/install-deps.sh installs it)"))
    func promtool() async throws {
        let clock = ManualClock()
        let plane = try await TestControlPlane.make(hosts: ["h1", "h2"], now: { clock.now })
        try await plane.test { client in
            #expect(try await client.request(.post, "/v1/apply", body: shopManifest).status == 200)
            #expect(
                try await client.request(.post, "/v1/vms", body: #"{"name":"a","image":"tiny","app":"shop"}"#).status == 201)
            #expect(try await client.request(.get, "/v1/vms/nope").status == 404)
            for step in 1...5 {
                let text = shopExposition(requests: 20 * step, latency: 0.2, queue: 3, at: clock.ms)
                #expect(try await client.request(.post, "/v1/apps/shop/samples", body: text).status == 202)
                clock.advance(2)
                await plane.controller.evaluateSLOs()
            }
            let metrics = try await client.request(.get, "/metrics").body
            #expect(metrics.contains("vireo_slo_burn_rate{") && metrics.contains("vireo_http_requests_total{"))
            // promtool exits non-zero, with the problems on standard error, when the exposition is
            // not valid or breaks Prometheus's naming conventions; HostTool throws with them.
            let lint = try await HostTool.run("promtool", ["check", "metrics"], input: Data(metrics.utf8))
            #expect(String(decoding: lint, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) == "")
        }
    }
}
