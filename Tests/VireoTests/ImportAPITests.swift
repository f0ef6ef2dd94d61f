import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing
import VireoAPI
import VireoController
import VireoHTTP
import VireoModel

@Suite("HTTP API: importing VMs")
struct ImportAPITests {
    static let first = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
    static let second = "6695eb01-f6a4-8304-79aa-97f2502e193f"

    /// A control plane with a simulated host `h1` and a libvirt host `lv`.
    static func plane() async throws -> TestControlPlane {
        let plane = try await TestControlPlane.make(hosts: ["h1"])
        _ = try await plane.controller.register(
            AgentRegistration(
                name: "lv",
                fingerprint: HostFingerprint(
                    cpus: 4, memoryMiB: 8192, driver: "libvirt", capabilities: [.serialConsole],
                    attributes: ["uri": "qemu:///system", "state-directory": "/var/lib/vireo/vms"])))
        return plane
    }

    static func body(host: String = "lv", _ vms: [(id: String, name: String, state: String)]) -> String {
        let items = vms.map {
            #"{"id":"\#($0.id)","name":"\#($0.name)","cpus":2,"memory":"512MiB","state":"\#($0.state)"}"#
        }
        return #"{"host":"\#(host)","vms":[\#(items.joined(separator: ","))]}"#
    }

    @Test("imported VMs keep their ids, are pinned to the host, running or stopped as they were, all in one write")
    func imports() async throws {
        let plane = try await Self.plane()
        let checker = ResponseChecker(openAPI: try OpenAPITests())
        try await plane.test { client in
            let response = try await client.request(
                .post, "/v1/vms/import",
                body: Self.body([(Self.first, "legacy-web", "running"), (Self.second, "legacy-db", "stopped")]))
            #expect(response.status == 201, "\(response.body)")
            checker.check(
                method: .post, route: "/v1/vms/import", status: 201, contentType: "application/json", body: response.body)
            let result = try decodeJSON(VMImportResult.self, response.body)
            #expect(result.items.map(\.id.rawValue) == [Self.first, Self.second])
            #expect(result.items.map(\.host) == ["lv", "lv"])
            #expect(result.items.map(\.state) == [.scheduled, .stopped])
            #expect(result.items.map(\.image) == ["imported", "imported"])
            #expect(result.items.allSatisfy { $0.cpus == 2 && $0.memoryMiB == 512 })
            let shown = try decodeJSON(VMView.self, try await client.request(.get, "/v1/vms/\(Self.first)").body)
            #expect(shown.name == "legacy-web")
        }
        #expect(checker.failures == [])
        let stored = try await plane.store.load().vms.sorted { $0.name < $1.name }
        #expect(stored.map(\.name) == ["legacy-db", "legacy-web"])
        #expect(stored.map(\.intent) == [.stopped, .running])
        #expect(stored.allSatisfy { $0.spec.host == "lv" && $0.hostID != nil })

        // The agent reports the running one: it is running, not started again.
        let lv = try await plane.controller.host("lv").id
        let desired = try await plane.controller.heartbeat(
            AgentHeartbeat(
                hostID: lv,
                instances: [
                    InstanceReport(id: VMID(Self.first), state: .running, generation: 1),
                    InstanceReport(id: VMID(Self.second), state: .stopped, generation: 1),
                ]))
        #expect(desired.vms.map(\.image) == ["imported", "imported"])
        #expect(try await plane.controller.vm("legacy-web").state == .running)
        #expect(try await plane.controller.vm("legacy-db").state == .stopped)
    }

    @Test("a name or id clash is 409 naming it, an unknown host 404, a host that is not libvirt 412; nothing is recorded")
    func refusals() async throws {
        let plane = try await Self.plane()
        let checker = ResponseChecker(openAPI: try OpenAPITests())
        try await plane.test { client in
            try await client.request(.post, "/v1/vms", body: #"{"name":"taken","image":"tiny"}"#)
            _ = try await client.request(.post, "/v1/vms/import", body: Self.body([(Self.second, "legacy-db", "running")]))
            let cases: [(body: String, status: Int, code: VireoError.Code, mentions: [String])] = [
                (
                    Self.body([(Self.first, "fresh", "running"), (UUID().uuidString.lowercased(), "taken", "running")]), 409,
                    .conflict, ["'taken'"]
                ),
                (
                    Self.body([(Self.first, "fresh", "running"), (Self.second, "other", "stopped")]), 409, .conflict,
                    [Self.second]
                ),
                (Self.body(host: "nowhere", [(Self.first, "fresh", "running")]), 404, .notFound, ["nowhere"]),
                (Self.body(host: "h1", [(Self.first, "fresh", "running")]), 412, .failedPrecondition, ["h1", "simulated"]),
            ]
            for (body, status, code, mentions) in cases {
                let response = try await client.request(.post, "/v1/vms/import", body: body)
                #expect(response.status == status, "\(body): \(response.body)")
                let message = expectEnvelope(response.body, code: code)
                for mention in mentions { #expect(message.contains(mention), "\(message) should name \(mention)") }
                checker.check(
                    method: .post, route: "/v1/vms/import", status: response.status, contentType: "application/json",
                    body: response.body)
            }
        }
        #expect(checker.failures == [])
        #expect(try await plane.store.load().vms.map(\.name).sorted() == ["legacy-db", "taken"])
    }

    static let invalidBodies: [(body: String, mentions: [String])] = [
        (body(host: "lv", [("3F2504E0-4F89-11D3-9A0C-0305E82C3301", "a", "running")]), ["vms[0].id", "lowercase UUID"]),
        (body(host: "lv", [("web-1", "a", "running")]), ["vms[0].id", "web-1"]),
        (body(host: "lv", [(first, "Bad_Name", "running")]), ["vms[0].name", "Bad_Name"]),
        (body(host: "lv", [(first, "a", "paused")]), ["vms[0].state", "paused"]),
        (body(host: "lv", [(first, "a", "running"), (first, "b", "running")]), ["vms[1].id", "twice"]),
        (body(host: "lv", [(first, "a", "running"), (second, "a", "running")]), ["vms[1].name", "twice"]),
        (#"{"host":"lv","vms":[]}"#, ["vms", "at least one"]),
        (#"{"vms":[]}"#, ["host", "required"]),
        (#"{"host":"lv","vms":[{"id":"\#(first)","name":"a","cpus":0,"memory":"1GiB","state":"running"}]}"#, ["vms[0].cpus"]),
        (#"{"host":"lv","vms":[{"id":"\#(first)","name":"a","cpus":1,"state":"running"}]}"#, ["vms[0].memory", "required"]),
        (
            #"{"host":"lv","vms":[{"id":"\#(first)","name":"a","cpus":1,"memory":"1GiB","state":"running","image":"x"}]}"#,
            ["vms[0].image"]
        ),
        (#"{"host":"lv","vms":[],"dryRun":true}"#, ["dryRun"]),
    ]

    @Test("a bad body is 400 naming the field and value; nothing is recorded", arguments: 0..<invalidBodies.count)
    func invalid(_ index: Int) async throws {
        let (body, mentions) = Self.invalidBodies[index]
        let plane = try await Self.plane()
        try await plane.test { client in
            let response = try await client.request(.post, "/v1/vms/import", body: body)
            #expect(response.status == 400, "\(body): \(response.body)")
            let message = expectEnvelope(response.body, code: .invalidArgument)
            for mention in mentions { #expect(message.contains(mention), "\(message) should name \(mention)") }
        }
        #expect(try await plane.store.load().vms.isEmpty)
    }

    @Test("the imported image is no image of the catalogue: a VM cannot be created from it")
    func importedImageIsNotBuildable() async throws {
        let plane = try await Self.plane()
        try await plane.test { client in
            let response = try await client.request(.post, "/v1/vms", body: #"{"name":"a","image":"imported"}"#)
            #expect(response.status == 400)
            #expect(expectEnvelope(response.body, code: .invalidArgument).contains("imported"))
        }
        #expect(VMImportRequest.image == "imported")
    }
}
