import Foundation
import Hummingbird
import HummingbirdTesting
import Testing
import VireoAPI
import VireoAgent
import VireoDriverSimulated
import VireoHTTP
import VireoModel

/// `/openapi.json` must describe the real API: the same routes, and responses whose bodies match
/// the documented schemas exactly (no property missing, none undocumented).
@Suite("OpenAPI document")
struct OpenAPITests {
    let document: JSONValue

    init() throws {
        document = try decodeJSON(JSONValue.self, OpenAPIDocument.json)
    }

    @Test("documents exactly the routes the server has")
    func routes() async throws {
        let plane = try await TestControlPlane.make()
        let served = Set(plane.server.router().routes.map { "\($0.method.rawValue) \($0.path)" })
        var documented: Set<String> = []
        for (path, item) in document["paths"]?.objectValue ?? [:] {
            for method in (item.objectValue ?? [:]).keys where method != "parameters" {
                documented.insert("\(method.uppercased()) \(path)")
            }
        }
        #expect(!served.isEmpty)
        #expect(served.subtracting(documented).sorted() == [], "served but not documented")
        #expect(documented.subtracting(served).sorted() == [], "documented but not served")
    }

    @Test("every reference resolves and every object schema says what else it allows")
    func wellFormed() throws {
        #expect(document["openapi"] == .string("3.1.0"))
        var problems: [String] = []
        func walk(_ value: JSONValue, _ at: String) {
            switch value {
            case .object(let object):
                if case .string(let ref)? = object["$ref"], resolve(ref) == nil { problems.append("\(at): \(ref)") }
                if object["type"] == .string("object"), object["properties"] != nil, object["additionalProperties"] == nil {
                    problems.append("\(at): object without additionalProperties")
                }
                for (key, child) in object { walk(child, at + "/" + key) }
            case .array(let array):
                for (index, child) in array.enumerated() { walk(child, "\(at)/\(index)") }
            default: break
            }
        }
        walk(document, "#")
        #expect(problems == [])
    }

    @Test("responses of every route match the documented status and schema")
    func responsesMatch() async throws {
        let plane = try await TestControlPlane.make(hosts: ["h1", "h2"])
        let checker = ResponseChecker(openAPI: self)
        try await plane.test { client in
            func call(
                _ method: HTTPRequest.Method, _ uri: String, route: String, body: String? = nil, token: String? = nil,
                expect status: Int
            ) async throws -> String {
                let response = try await client.execute(
                    uri: uri, method: method, headers: token.map { [.authorization: "Bearer \($0)"] } ?? [:],
                    body: body.map { ByteBuffer(string: $0) }
                ) { (Int($0.status.code), $0.headers[.contentType] ?? "", String(buffer: $0.body)) }
                #expect(response.0 == status, "\(method) \(uri): \(response.2.prefix(300))")
                checker.check(method: method, route: route, status: response.0, contentType: response.1, body: response.2)
                return response.2
            }
            _ = try await call(.get, "/healthz", route: "/healthz", expect: 200)
            _ = try await call(.get, "/openapi.json", route: "/openapi.json", expect: 200)
            _ = try await call(
                .post, "/v1/vms", route: "/v1/vms", body: #"{"name":"a","image":"tiny","cpus":2,"memory":"256MiB","app":"shop"}"#,
                expect: 201)
            // Pinned to h2: h1's verdict is a filter reason. Too big for any host: pending, every host filtered.
            _ = try await call(.post, "/v1/vms", route: "/v1/vms", body: #"{"name":"b","image":"tiny","host":"h2"}"#, expect: 201)
            _ = try await call(
                .post, "/v1/vms", route: "/v1/vms", body: #"{"name":"huge","image":"tiny","memory":"64GiB"}"#, expect: 201)
            _ = try await call(
                .post, "/v1/vms", route: "/v1/vms", body: #"{"name":"many","image":"tiny","cpus":40}"#, expect: 201)
            _ = try await call(.post, "/v1/vms", route: "/v1/vms", body: #"{"name":"a","image":"tiny"}"#, expect: 409)
            _ = try await call(.post, "/v1/vms", route: "/v1/vms", body: #"{"name":"c","image":"tiny","cpus":0}"#, expect: 400)
            _ = try await call(.get, "/v1/vms", route: "/v1/vms", expect: 200)
            _ = try await call(.get, "/v1/vms?limit=1", route: "/v1/vms", expect: 200)
            _ = try await call(.get, "/v1/vms?limit=0", route: "/v1/vms", expect: 400)
            for name in ["a", "b", "huge", "many"] {
                _ = try await call(.get, "/v1/vms/\(name)", route: "/v1/vms/{vm}", expect: 200)
            }
            _ = try await call(.get, "/v1/vms/nope", route: "/v1/vms/{vm}", expect: 404)
            _ = try await call(.post, "/v1/vms/a/stop", route: "/v1/vms/{vm}/stop", expect: 202)
            _ = try await call(.post, "/v1/vms/a/start", route: "/v1/vms/{vm}/start", expect: 202)
            _ = try await call(.post, "/v1/vms/nope/start", route: "/v1/vms/{vm}/start", expect: 404)
            _ = try await call(.post, "/v1/vms/nope/stop", route: "/v1/vms/{vm}/stop", expect: 404)
            _ = try await call(.delete, "/v1/vms/b", route: "/v1/vms/{vm}", expect: 202)
            _ = try await call(.post, "/v1/vms/b/start", route: "/v1/vms/{vm}/start", expect: 409)
            _ = try await call(.delete, "/v1/vms/nope", route: "/v1/vms/{vm}", expect: 404)
            let manifest = "apiVersion: vireo/v1\nkind: VirtualMachine\nmetadata: {name: m}\nspec: {image: tiny}\n"
            _ = try await call(.post, "/v1/apply", route: "/v1/apply", body: manifest, expect: 200)
            _ = try await call(.post, "/v1/apply", route: "/v1/apply", body: manifest, expect: 200)
            _ = try await call(.post, "/v1/apply", route: "/v1/apply", body: "kind: Nope", expect: 400)
            _ = try await call(.get, "/v1/hosts", route: "/v1/hosts", expect: 200)
            _ = try await call(.get, "/v1/hosts/h1", route: "/v1/hosts/{host}", expect: 200)
            _ = try await call(.get, "/v1/hosts/nope", route: "/v1/hosts/{host}", expect: 404)
            let registration =
                #"{"name":"h3","address":"127.0.0.1","fingerprint":{"cpus":4,"memoryMiB":4096,"driver":"simulated","capabilities":["pause"],"attributes":{"rack":"r1"}}}"#
            let registered = try await call(
                .post, "/v1/agent/register", route: "/v1/agent/register", body: registration, expect: 200)
            let hostID = try decodeJSON(AgentRegistrationResponse.self, registered).hostID
            _ = try await call(
                .post, "/v1/agent/heartbeat", route: "/v1/agent/heartbeat", body: #"{"hostID":"\#(hostID)","instances":[]}"#,
                expect: 200)
            _ = try await call(.post, "/v1/agent/heartbeat", route: "/v1/agent/heartbeat", body: #"{"hostID":1}"#, expect: 400)
            // An agent on h1 reports VM "a" running at an address, with console output.
            let h1 = try await plane.controller.host("h1").id
            let a = try await plane.controller.vm("a")
            let report =
                #"{"hostID":"\#(h1)","instances":[{"id":"\#(a.id)","state":"running","generation":\#(a.generation),"address":"127.0.0.1:40419"}],"console":[{"id":"\#(a.id)","chunk":{"offset":0,"next":6,"text":"hello\n"}}]}"#
            let desired = try await call(.post, "/v1/agent/heartbeat", route: "/v1/agent/heartbeat", body: report, expect: 200)
            #expect(desired.contains(#""consoleOffset":6"#))
            #expect(try await call(.get, "/v1/vms/a", route: "/v1/vms/{vm}", expect: 200).contains("127.0.0.1:40419"))
            #expect(try await call(.get, "/v1/vms/a/logs", route: "/v1/vms/{vm}/logs", expect: 200) == "hello\n")
            _ = try await call(.get, "/v1/vms/a/logs?tail=1&after=0", route: "/v1/vms/{vm}/logs", expect: 200)
            _ = try await call(.get, "/v1/vms/m/logs", route: "/v1/vms/{vm}/logs", expect: 200)
            _ = try await call(.get, "/v1/vms/a/logs?tail=x", route: "/v1/vms/{vm}/logs", expect: 400)
            _ = try await call(.get, "/v1/vms/nope/logs", route: "/v1/vms/{vm}/logs", expect: 404)
            // Migration: a's host h1 runs it (as just reported); the simulated hosts can migrate.
            let migrated = try await call(
                .post, "/v1/vms/a/migrate", route: "/v1/vms/{vm}/migrate", body: #"{"to":"h2"}"#, expect: 202)
            let migrationID = try decodeJSON(MigrationView.self, migrated).id
            _ = try await call(.post, "/v1/vms/a/migrate", route: "/v1/vms/{vm}/migrate", body: #"{"to":"h2"}"#, expect: 409)
            _ = try await call(.post, "/v1/vms/a/stop", route: "/v1/vms/{vm}/stop", expect: 409)
            _ = try await call(.post, "/v1/vms/many/migrate", route: "/v1/vms/{vm}/migrate", body: #"{"to":"h2"}"#, expect: 412)
            _ = try await call(.post, "/v1/vms/a/migrate", route: "/v1/vms/{vm}/migrate", body: #"{"to":"nope"}"#, expect: 404)
            _ = try await call(.post, "/v1/vms/a/migrate", route: "/v1/vms/{vm}/migrate", body: #"{"host":"h2"}"#, expect: 400)
            _ = try await call(.get, "/v1/migrations", route: "/v1/migrations", expect: 200)
            _ = try await call(.get, "/v1/migrations?vm=a&limit=5", route: "/v1/migrations", expect: 200)
            _ = try await call(.get, "/v1/migrations?vm=nope", route: "/v1/migrations", expect: 404)
            _ = try await call(.get, "/v1/migrations?limit=0", route: "/v1/migrations", expect: 400)
            _ = try await call(.get, "/v1/migrations/\(migrationID)", route: "/v1/migrations/{migration}", expect: 200)
            _ = try await call(.get, "/v1/migrations/nope", route: "/v1/migrations/{migration}", expect: 404)
            _ = try await call(.post, "/v1/plans", route: "/v1/plans", expect: 200)
            _ = try await call(.post, "/v1/plans", route: "/v1/plans", body: #"{"policy":"threshold-0.5"}"#, expect: 200)
            _ = try await call(.post, "/v1/plans", route: "/v1/plans", body: #"{"policy":"nope"}"#, expect: 400)
            let executed = try await call(.post, "/v1/plans", route: "/v1/plans", body: #"{"execute":true}"#, expect: 201)
            let planID = try decodeJSON(Plan.self, executed).id
            _ = try await call(.get, "/v1/plans", route: "/v1/plans", expect: 200)
            _ = try await call(.get, "/v1/plans?limit=0", route: "/v1/plans", expect: 400)
            _ = try await call(.get, "/v1/plans/\(planID)", route: "/v1/plans/{plan}", expect: 200)
            _ = try await call(.get, "/v1/plans/nope", route: "/v1/plans/{plan}", expect: 404)
            _ = try await call(.get, "/v1/rebalance", route: "/v1/rebalance", expect: 200)
            _ = try await call(
                .put, "/v1/rebalance", route: "/v1/rebalance", body: #"{"policy":"threshold","intervalSeconds":5}"#, expect: 200)
            _ = try await call(.put, "/v1/rebalance", route: "/v1/rebalance", body: #"{"policy":"often"}"#, expect: 400)
            _ = try await call(.put, "/v1/rebalance", route: "/v1/rebalance", body: #"{"policy":"off"}"#, expect: 200)
            // The destination's heartbeat carries its order, and its report is taken.
            let h2 = try await plane.controller.host("h2").id
            let order = try await call(
                .post, "/v1/agent/heartbeat", route: "/v1/agent/heartbeat",
                body:
                    #"{"hostID":"\#(h2)","instances":[],"migrations":[{"id":"\#(migrationID)","state":"ready","incomingURI":"tcp:127.0.0.1:1"}]}"#,
                expect: 200)
            #expect(order.contains(#""role":"destination""#))
            // Applications: apply (created, updated), push samples, evaluate, read, series, delete.
            _ = try await call(.post, "/v1/apply", route: "/v1/apply", body: shopManifest, expect: 200)
            _ = try await call(
                .post, "/v1/apply", route: "/v1/apply", body: shopManifest.replacingOccurrences(of: "max: 100", with: "max: 90"),
                expect: 200)
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            for (i, latency) in [0.02, 0.02, 0.2].enumerated() {
                _ = try await call(
                    .post, "/v1/apps/shop/samples", route: "/v1/apps/{app}/samples",
                    body: shopExposition(
                        requests: 10 * (i + 1), latency: latency, queue: 2, at: now - 30_000 + Int64(i) * 10_000),
                    expect: 202)
            }
            await plane.controller.evaluateSLOs()
            _ = try await call(.post, "/v1/apps/shop/samples", route: "/v1/apps/{app}/samples", body: "x{", expect: 400)
            _ = try await call(.post, "/v1/apps/nope/samples", route: "/v1/apps/{app}/samples", body: "x 1", expect: 404)
            _ = try await call(
                .post, "/v1/agent/samples", route: "/v1/agent/samples",
                body:
                    #"{"hostID":"\#(h1)","items":[{"app":"shop","vm":"shop-1","time":"2026-12-01T12:00:00Z","exposition":"queue_depth 4\n","error":"probe: timed out"}]}"#,
                expect: 202)
            _ = try await call(.post, "/v1/agent/samples", route: "/v1/agent/samples", body: #"{"hostID":"\#(h1)"}"#, expect: 400)
            _ = try await call(.get, "/v1/apps", route: "/v1/apps", expect: 200)
            _ = try await call(.get, "/v1/apps/shop", route: "/v1/apps/{app}", expect: 200)
            _ = try await call(.get, "/v1/apps/nope", route: "/v1/apps/{app}", expect: 404)
            _ = try await call(
                .get, "/v1/apps/shop/series?metric=queue_depth&from=-1h", route: "/v1/apps/{app}/series", expect: 200)
            _ = try await call(.get, "/v1/apps/shop/series?metric=x{", route: "/v1/apps/{app}/series", expect: 400)
            _ = try await call(.get, "/v1/apps/nope/series?metric=x", route: "/v1/apps/{app}/series", expect: 404)
            _ = try await call(.delete, "/v1/apps/shop", route: "/v1/apps/{app}", expect: 400)
            _ = try await call(.delete, "/v1/apps/shop?vms=keep", route: "/v1/apps/{app}", expect: 200)
            _ = try await call(.delete, "/v1/apps/shop?vms=keep", route: "/v1/apps/{app}", expect: 404)
            _ = try await call(.get, "/v1/events?follow=false", route: "/v1/events", expect: 200)
            _ = try await call(.get, "/v1/events?after=-1", route: "/v1/events", expect: 400)
            _ = try await call(.get, "/metrics", route: "/metrics", expect: 200)
            try await plane.controller.recordUsageIfDue()
            _ = try await call(.get, "/v1/history", route: "/v1/history", expect: 200)
            _ = try await call(.get, "/v1/history?since=1h&step=120", route: "/v1/history", expect: 200)
            _ = try await call(.get, "/v1/history?since=soon", route: "/v1/history", expect: 400)
            _ = try await call(.get, "/v1/history?step=7", route: "/v1/history", expect: 400)
            // Contexts: a host whose agent keeps them answers the verbs the controller passes on.
            let desk = SimulatedDriver(configuration: .init(bootDelay: .milliseconds(20)))
            let contexts = try ContextManager(
                settings: .init(directory: temporaryDirectory(), hostName: "desk"), driver: desk)
            let agent = Agent(
                settings: .init(name: "desk", heartbeatInterval: .milliseconds(50)), driver: desk, link: plane.controller,
                contexts: contexts)
            let running = Task { try await agent.run() }
            defer { running.cancel() }
            try await eventually("desk registered") { (try? await plane.controller.host("desk"))?.state == .ready }
            let contextBody = #"{"name":"browser","kind":"disposable","host":"desk","wait":true}"#
            _ = try await call(.post, "/v1/contexts", route: "/v1/contexts", body: contextBody, expect: 201)
            _ = try await call(.post, "/v1/contexts", route: "/v1/contexts", body: contextBody, expect: 409)
            _ = try await call(
                .post, "/v1/contexts", route: "/v1/contexts", body: #"{"name":"x","kind":"disposable","host":"h1"}"#,
                expect: 501)
            _ = try await call(.post, "/v1/contexts", route: "/v1/contexts", body: #"{"name":"x"}"#, expect: 400)
            _ = try await call(.get, "/v1/contexts", route: "/v1/contexts", expect: 200)
            _ = try await call(.get, "/v1/contexts/browser", route: "/v1/contexts/{context}", expect: 200)
            _ = try await call(.get, "/v1/contexts/browser?host=h1", route: "/v1/contexts/{context}", expect: 404)
            _ = try await call(.get, "/v1/contexts/nope", route: "/v1/contexts/{context}", expect: 404)
            _ = try await call(.post, "/v1/contexts/browser/reset", route: "/v1/contexts/{context}/reset", expect: 200)
            _ = try await call(
                .post, "/v1/contexts/browser/reset", route: "/v1/contexts/{context}/reset", body: #"{"force":1}"#, expect: 400)
            _ = try await call(.post, "/v1/contexts/nope/reset", route: "/v1/contexts/{context}/reset", expect: 404)
            _ = try await call(.post, "/v1/contexts/browser/keep", route: "/v1/contexts/{context}/keep", expect: 200)
            #expect(
                try await call(.get, "/v1/contexts/browser/logs?tail=5", route: "/v1/contexts/{context}/logs", expect: 200)
                    .contains("snapshot"))
            _ = try await call(.get, "/v1/contexts/nope/logs", route: "/v1/contexts/{context}/logs", expect: 404)
            _ = try await call(.delete, "/v1/contexts/browser", route: "/v1/contexts/{context}", expect: 200)
            _ = try await call(.delete, "/v1/contexts/browser", route: "/v1/contexts/{context}", expect: 404)
            _ = try await call(.get, "/v1/events?follow=false", route: "/v1/events", expect: 200)
            let made = try await call(
                .post, "/v1/tokens", route: "/v1/tokens", body: #"{"name":"shop-team","role":"owner","apps":["shop"]}"#,
                expect: 201)
            let secret = try decodeJSON(TokenCreated.self, made).secret
            _ = try await call(
                .post, "/v1/tokens", route: "/v1/tokens",
                body: #"{"name":"brief","role":"viewer","expiresAt":"2999-01-01T00:00:00Z"}"#,
                expect: 201)
            _ = try await call(.post, "/v1/tokens", route: "/v1/tokens", body: #"{"name":"brief","role":"viewer"}"#, expect: 409)
            _ = try await call(.post, "/v1/tokens", route: "/v1/tokens", body: #"{"name":"x","role":"root"}"#, expect: 400)
            _ = try await call(.get, "/v1/tokens", route: "/v1/tokens", expect: 200)
            _ = try await call(.delete, "/v1/tokens/brief", route: "/v1/tokens/{token}", expect: 200)
            _ = try await call(.delete, "/v1/tokens/nope", route: "/v1/tokens/{token}", expect: 404)
            _ = try await call(.get, "/v1/tokens", route: "/v1/tokens", token: secret, expect: 403)
            _ = try await call(.post, "/v1/vms/a/stop", route: "/v1/vms/{vm}/stop", token: secret, expect: 403)
            _ = try await call(.get, "/v1/vms", route: "/v1/vms", token: "wrong", expect: 401)
            _ = try await call(.get, "/v1/audit?limit=5", route: "/v1/audit", expect: 200)
            _ = try await call(.get, "/v1/audit?since=-1h", route: "/v1/audit", expect: 200)
            _ = try await call(.get, "/v1/audit?limit=0", route: "/v1/audit", expect: 400)
        }
        #expect(checker.checked.count > 30)
        #expect(checker.failures == [])

        // Beyond loopback: 401 with the envelope, as documented.
        let guarded = try await TestControlPlane.make(tokens: AccessTokens(admin: "a", join: "j"))
        try await guarded.test { client in
            let response = try await client.request(.get, "/v1/vms")
            #expect(response.status == 401)
            checker.check(
                method: .get, route: "/v1/vms", status: response.status, contentType: "application/json", body: response.body)
        }
        #expect(checker.failures == [])
    }

    func resolve(_ ref: String) -> JSONValue? {
        guard ref.hasPrefix("#/") else { return nil }
        var node: JSONValue? = document
        for part in ref.dropFirst(2).split(separator: "/") { node = node?[String(part)] }
        return node
    }
}

/// Checks observed responses against the document; collects what did not match.
final class ResponseChecker: @unchecked Sendable {
    let openAPI: OpenAPITests
    private let lock = NSLock()
    private(set) var failures: [String] = []
    private(set) var checked: [String] = []

    init(openAPI: OpenAPITests) { self.openAPI = openAPI }

    func check(method: HTTPRequest.Method, route: String, status: Int, contentType: String, body: String) {
        let what = "\(method.rawValue) \(route) \(status)"
        var problems: [String] = []
        defer {
            lock.withLock {
                checked.append(what)
                failures += problems.map { "\(what): \($0)" }
            }
        }
        guard var response = openAPI.document["paths"]?[route]?[method.rawValue.lowercased()]?["responses"]?[String(status)]
        else {
            problems.append("status not documented")
            return
        }
        if case .string(let ref)? = response["$ref"], let resolved = openAPI.resolve(ref) { response = resolved }
        let mediaType = String(contentType.split(separator: ";").first ?? "")
        guard let media = response["content"]?[mediaType] else {
            problems.append("content type '\(contentType)' not documented")
            return
        }
        switch mediaType {
        case "application/json":
            guard let value = try? decodeJSON(JSONValue.self, body), let schema = media["schema"] else {
                problems.append("not JSON, or no schema")
                return
            }
            problems += validate(value, against: schema, at: "$")
        case "text/event-stream":
            guard let schema = media["x-data-schema"] else { return problems.append("no data schema") }
            let lines = body.split(separator: "\n").filter { $0.hasPrefix("data: ") }
            if lines.isEmpty { problems.append("no events to check") }
            for line in lines {
                guard let value = try? decodeJSON(JSONValue.self, String(line.dropFirst(6))) else {
                    problems.append("event data is not JSON: \(line)")
                    continue
                }
                problems += validate(value, against: schema, at: "$")
            }
        default:
            if media["schema"]?["type"] != .string("string") { problems.append("text body but schema is not a string") }
        }
    }

    /// The subset of JSON Schema the document uses: $ref, type, enum, required, properties,
    /// additionalProperties, items, minItems, maxItems, oneOf, allOf, not, if/then/else, const, minimum,
    /// maximum, exclusiveMinimum, exclusiveMaximum, multipleOf, minLength, maxLength, pattern.
    func validate(_ value: JSONValue, against schema: JSONValue, at path: String) -> [String] {
        if case .string(let ref)? = schema["$ref"] {
            guard let target = openAPI.resolve(ref) else { return ["\(path): unresolved \(ref)"] }
            return validate(value, against: target, at: path)
        }
        if case .array(let all)? = schema["allOf"] {
            let problems = all.flatMap { validate(value, against: $0, at: path) }
            if !problems.isEmpty { return problems }
        }
        if let excluded = schema["not"], validate(value, against: excluded, at: path).isEmpty {
            return ["\(path): \(value) matches what is excluded: \(excluded)"]
        }
        if let condition = schema["if"] {
            let branch = validate(value, against: condition, at: path).isEmpty ? schema["then"] : schema["else"]
            if let branch {
                let problems = validate(value, against: branch, at: path)
                if !problems.isEmpty { return problems }
            }
        }
        if let constant = schema["const"], value != constant { return ["\(path): \(value) is not \(constant)"] }
        if case .string(let text) = value {
            let length = text.count
            if case .number(let min)? = schema["minLength"], Double(length) < min { return ["\(path): shorter than \(min)"] }
            if case .number(let max)? = schema["maxLength"], Double(length) > max { return ["\(path): longer than \(max)"] }
            if case .string(let pattern)? = schema["pattern"],
                text.range(of: pattern, options: .regularExpression) == nil
            {
                return ["\(path): '\(text)' does not match \(pattern)"]
            }
        }
        if case .array(let items) = value, case .number(let min)? = schema["minItems"], Double(items.count) < min {
            return ["\(path): fewer than \(min) items"]
        }
        if case .array(let items) = value, case .number(let max)? = schema["maxItems"], Double(items.count) > max {
            return ["\(path): more than \(max) items"]
        }
        if case .array(let options)? = schema["oneOf"] {
            let matching = options.filter { validate(value, against: $0, at: path).isEmpty }.count
            if matching != 1 { return ["\(path): matches \(matching) of the oneOf schemas: \(value)"] }
        }
        if case .array(let allowed)? = schema["enum"], !allowed.contains(value) {
            return ["\(path): \(value) is not one of \(allowed)"]
        }
        var problems: [String] = []
        if case .string(let type)? = schema["type"] {
            switch (type, value) {
            case ("string", .string), ("boolean", .bool), ("array", .array), ("object", .object): break
            case ("number", .number(let n)), ("integer", .number(let n)):
                if type == "integer" && n != n.rounded() { problems.append("\(path): \(n) is not an integer") }
                if case .number(let min)? = schema["minimum"], n < min { problems.append("\(path): \(n) < \(min)") }
                if case .number(let max)? = schema["maximum"], n > max { problems.append("\(path): \(n) > \(max)") }
                if case .number(let min)? = schema["exclusiveMinimum"], n <= min { problems.append("\(path): \(n) ≤ \(min)") }
                if case .number(let max)? = schema["exclusiveMaximum"], n >= max { problems.append("\(path): \(n) ≥ \(max)") }
                if case .number(let step)? = schema["multipleOf"], n.truncatingRemainder(dividingBy: step) != 0 {
                    problems.append("\(path): \(n) is not a multiple of \(step)")
                }
            default: return ["\(path): expected \(type), got \(value)"]
            }
        }
        if case .object(let object) = value {
            if case .array(let required)? = schema["required"] {
                for case .string(let key) in required where object[key] == nil { problems.append("\(path): missing '\(key)'") }
            }
            let properties = schema["properties"]?.objectValue ?? [:]
            for (key, child) in object {
                if let property = properties[key] {
                    problems += validate(child, against: property, at: "\(path).\(key)")
                } else if let additional = schema["additionalProperties"] {
                    if additional == .bool(false) {
                        problems.append("\(path): undocumented property '\(key)'")
                    } else if additional != .bool(true) {
                        problems += validate(child, against: additional, at: "\(path).\(key)")
                    }
                }
            }
        }
        if case .array(let items) = value, let itemSchema = schema["items"] {
            for (index, item) in items.enumerated() { problems += validate(item, against: itemSchema, at: "\(path)[\(index)]") }
        }
        return problems
    }
}
