import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import ServiceLifecycle
import Testing
import VireoAPI
import VireoController
import VireoHTTP
import VireoModel
import VireoTelemetry

@Suite("HTTP API")
struct APITests {
    @Test("a created VM is placed, listed and shown")
    func createListShow() async throws {
        let plane = try await TestControlPlane.make(hosts: ["h1", "h2"])
        try await plane.test { client in
            let created = try await client.request(
                .post, "/v1/vms", body: #"{"name":"web-1","image":"tiny","cpus":2,"memory":"256MiB"}"#)
            #expect(created.status == 201)
            let vm = try decodeJSON(VMView.self, created.body)
            #expect(vm.state == .scheduled)
            #expect(vm.cpus == 2 && vm.memoryMiB == 256)
            #expect(vm.host == "h1")
            #expect(vm.placement?.verdicts.count == 2)

            let page = try decodeJSON(VMPage.self, try await client.request(.get, "/v1/vms").body)
            #expect(page.items.map(\.name) == ["web-1"])
            #expect(page.next == nil)

            let byID = try decodeJSON(VMView.self, try await client.request(.get, "/v1/vms/\(vm.id)").body)
            #expect(byID.name == "web-1")
            let hosts = try decodeJSON(HostList.self, try await client.request(.get, "/v1/hosts").body)
            #expect(hosts.items.first { $0.name == "h1" }?.allocatedCPUs == 2)
        }
    }

    @Test("an unknown VM is 404 with the envelope; an unknown path too")
    func notFound() async throws {
        let plane = try await TestControlPlane.make()
        try await plane.test { client in
            let response = try await client.request(.get, "/v1/vms/nope")
            #expect(response.status == 404)
            #expect(expectEnvelope(response.body, code: .notFound).contains("nope"))
            let start = try await client.request(.post, "/v1/vms/nope/start")
            #expect(start.status == 404)
            let path = try await client.request(.get, "/v2/nothing")
            #expect(path.status == 404)
            expectEnvelope(path.body, code: .notFound)
        }
    }

    @Test("a duplicate name is 409 and the stored VM is unchanged")
    func duplicate() async throws {
        let plane = try await TestControlPlane.make()
        try await plane.test { client in
            try await client.request(.post, "/v1/vms", body: #"{"name":"a","image":"tiny","cpus":1}"#)
            let second = try await client.request(.post, "/v1/vms", body: #"{"name":"a","image":"tiny","cpus":4}"#)
            #expect(second.status == 409)
            expectEnvelope(second.body, code: .conflict)
            let vm = try decodeJSON(VMView.self, try await client.request(.get, "/v1/vms/a").body)
            #expect(vm.cpus == 1)
        }
        #expect(try await plane.store.load().vms.map(\.spec.cpus) == [1])
    }

    static let invalidBodies: [(body: String, mentions: [String])] = [
        (#"{"name":"a","image":"tiny","cpus":0}"#, ["cpus", "0"]),
        (#"{"name":"a","image":"tiny","cpus":-3}"#, ["cpus", "-3"]),
        (#"{"name":"a","image":"tiny","cpus":1.5}"#, ["cpus", "1.5"]),
        (#"{"name":"a","image":"tiny","cpus":"two"}"#, ["cpus", "two"]),
        (#"{"name":"a","image":"tiny","memory":"5x"}"#, ["memory", "5x"]),
        (#"{"name":"a","image":"tiny","memory":"1000"}"#, ["memory", "1000"]),
        (#"{"name":"a","image":"tiny","memory":"32MiB"}"#, ["memory", "32MiB"]),
        (#"{"name":"a","image":"windows"}"#, ["image", "windows"]),
        (#"{"name":"Bad_Name","image":"tiny"}"#, ["name", "Bad_Name"]),
        (#"{"name":"a","image":"tiny","colour":"blue"}"#, ["colour"]),
        (#"{"image":"tiny"}"#, ["name", "required"]),
        (#"{"name":"a","image":"tiny","host":"Not A Host"}"#, ["host", "Not A Host"]),
        (#"["name"]"#, ["body", "object"]),
        (#"{"name":"a","#, ["JSON"]),
        ("", ["body"]),
    ]

    @Test("invalid specs are 400 naming the field and value, and nothing is stored", arguments: invalidBodies)
    func invalidSpecs(body: String, mentions: [String]) async throws {
        let plane = try await TestControlPlane.make()
        try await plane.test { client in
            try await client.request(.post, "/v1/vms", body: #"{"name":"keep","image":"tiny"}"#)
            let response = try await client.request(.post, "/v1/vms", body: body)
            #expect(response.status == 400)
            let message = expectEnvelope(response.body, code: .invalidArgument)
            for word in mentions { #expect(message.contains(word), "\(message)") }
        }
        #expect(try await plane.store.load().vms.map(\.name) == ["keep"])
    }

    @Test("bad query parameters are 400 naming the parameter")
    func badQuery() async throws {
        let plane = try await TestControlPlane.make()
        try await plane.test { client in
            let response = try await client.request(.get, "/v1/vms?limit=0")
            #expect(response.status == 400)
            #expect(expectEnvelope(response.body, code: .invalidArgument).contains("limit"))
        }
    }

    @Test("pages follow each other in name order without gaps or repeats")
    func pagination() async throws {
        let plane = try await TestControlPlane.make()
        for i in 0..<250 {
            _ = try await plane.controller.createVM(
                VMSpec(name: String(format: "vm-%03d", 249 - i), image: "tiny", cpus: 1, memoryMiB: 80))
        }
        try await plane.test { client in
            var names: [String] = []
            var cursor: String?
            repeat {
                let uri = "/v1/vms?limit=100" + (cursor.map { "&after=\($0)" } ?? "")
                let page = try decodeJSON(VMPage.self, try await client.request(.get, uri).body)
                names += page.items.map(\.name)
                cursor = page.next
            } while cursor != nil
            #expect(names == (0..<250).map { String(format: "vm-%03d", $0) })
        }
    }

    @Test("a cached listing is never stale: a change is visible in the next request")
    func listingCache() async throws {
        let plane = try await TestControlPlane.make()
        try await plane.test { client in
            #expect(try decodeJSON(VMPage.self, try await client.request(.get, "/v1/vms").body).items.isEmpty)
            try await client.request(.post, "/v1/vms", body: #"{"name":"a","image":"tiny"}"#)
            #expect(try decodeJSON(VMPage.self, try await client.request(.get, "/v1/vms").body).items.count == 1)
            try await client.request(.post, "/v1/vms/a/stop")
            #expect(try decodeJSON(VMPage.self, try await client.request(.get, "/v1/vms").body).items.first?.intent == .stopped)
        }
    }

    @Test("apply creates, then reports unchanged; a bad document rejects the whole manifest")
    func apply() async throws {
        let plane = try await TestControlPlane.make()
        let manifest = """
            apiVersion: vireo/v1
            kind: VirtualMachine
            metadata: { name: a }
            spec: { image: tiny, cpus: 1, memory: 128MiB }
            ---
            apiVersion: vireo/v1
            kind: VirtualMachine
            metadata: { name: b }
            spec: { image: web, cpus: 2, memory: 256MiB }
            """
        try await plane.test { client in
            let first = try decodeJSON(ApplyResult.self, try await client.request(.post, "/v1/apply", body: manifest).body)
            #expect(first.items.map(\.action) == [.created, .created])
            let second = try decodeJSON(ApplyResult.self, try await client.request(.post, "/v1/apply", body: manifest).body)
            #expect(second.items.map(\.action) == [.unchanged, .unchanged])

            let bad = manifest.replacingOccurrences(of: "name: a", with: "name: c")
                .replacingOccurrences(of: "cpus: 2", with: "cpus: 0")
            let rejected = try await client.request(.post, "/v1/apply", body: bad)
            #expect(rejected.status == 400)
            #expect(expectEnvelope(rejected.body, code: .invalidArgument).contains("document 2: spec.cpus"))

            let changed = manifest.replacingOccurrences(of: "memory: 128MiB", with: "memory: 512MiB")
            let conflict = try await client.request(.post, "/v1/apply", body: changed)
            #expect(conflict.status == 409)
            #expect(expectEnvelope(conflict.body, code: .conflict).contains("memory 128MiB → 512MiB"))
        }
        #expect(try await plane.store.load().vms.map(\.name).sorted() == ["a", "b"])
    }

    static let invalidManifests: [(manifest: String, mentions: [String])] = [
        ("apiVersion: vireo/v1\nkind: Pod\nmetadata: {name: a}\nspec: {}", ["kind", "Pod"]),
        ("apiVersion: v2\nkind: VirtualMachine\nmetadata: {name: a}\nspec: {image: tiny}", ["apiVersion", "v2"]),
        ("apiVersion: vireo/v1\nkind: VirtualMachine\nmetadata: {name: a}\nspec: {image: tiny, colour: red}", ["spec.colour"]),
        (
            "apiVersion: vireo/v1\nkind: VirtualMachine\nmetadata: {name: a}\nspec: {image: tiny, memory: 5x}",
            ["spec.memory", "5x"]
        ),
        ("apiVersion: vireo/v1\nkind: VirtualMachine\nmetadata: {name: A}\nspec: {image: tiny}", ["metadata.name", "A"]),
        ("apiVersion: vireo/v1\nkind: VirtualMachine\nspec: {image: tiny}", ["metadata"]),
        ("apiVersion: vireo/v1\nkind: VirtualMachine\nmetadata: {name: a}\nspec: {image: tiny}\nextra: 1", ["extra"]),
        ("key: [unclosed", ["YAML"]),
        ("", ["no documents"]),
        (
            "apiVersion: vireo/v1\nkind: VirtualMachine\nmetadata: {name: a}\nspec: {image: tiny}\n---\napiVersion: vireo/v1\nkind: VirtualMachine\nmetadata: {name: a}\nspec: {image: tiny}",
            ["twice"]
        ),
    ]

    @Test("invalid manifests are 400 naming the path and value", arguments: invalidManifests)
    func invalidManifest(manifest: String, mentions: [String]) async throws {
        let plane = try await TestControlPlane.make()
        try await plane.test { client in
            let response = try await client.request(.post, "/v1/apply", body: manifest)
            #expect(response.status == 400)
            let message = expectEnvelope(response.body, code: .invalidArgument)
            for word in mentions { #expect(message.contains(word), "\(message)") }
        }
        #expect(try await plane.store.load().vms.isEmpty)
    }

    @Test("oversized bodies are refused with 413")
    func oversized() async throws {
        let plane = try await TestControlPlane.make()
        try await plane.test { client in
            let response = try await client.request(.post, "/v1/apply", body: String(repeating: "a", count: 2 << 20))
            #expect(response.status == 413)
            expectEnvelope(response.body, code: .payloadTooLarge)
        }
    }

    @Test("/metrics has request counts and durations in seconds, VMs and hosts by state")
    func metrics() async throws {
        let plane = try await TestControlPlane.make(hosts: ["h1", "h2"])
        try await plane.test { client in
            try await client.request(.post, "/v1/vms", body: #"{"name":"a","image":"tiny"}"#)
            try await client.request(.get, "/v1/vms/missing")
            let text = try await client.request(.get, "/metrics").body
            #expect(text.contains(#"vireo_http_requests_total{method="POST",route="/v1/vms",status="201"} 1"#))
            #expect(text.contains(#"vireo_http_requests_total{method="GET",route="/v1/vms/{vm}",status="404"} 1"#))
            #expect(text.contains("vireo_http_request_duration_seconds_bucket"))
            #expect(text.contains(#"vireo_vms{state="scheduled"} 1"#))
            #expect(text.contains(#"vireo_vms{state="running"} 0"#))
            #expect(text.contains(#"vireo_hosts{state="ready"} 2"#))
            // swift-prometheus's output, read back by Vireo's own exposition parser.
            let families = try PrometheusText.parse(text)
            let durations = try #require(families.first { $0.name == "vireo_http_request_duration_seconds" })
            #expect(durations.type == .histogram)
            let create = try #require(durations.histogram(matching: ["route": "/v1/vms", "method": "POST"]))
            #expect(create.count == 1)
        }
    }

    @Test("events are served as server-sent events and resume after a sequence number")
    func events() async throws {
        let plane = try await TestControlPlane.make()
        _ = try await plane.controller.createVM(VMSpec(name: "a", image: "tiny", cpus: 1, memoryMiB: 128))
        try await plane.test { client in
            let all = try await client.request(.get, "/v1/events?follow=false")
            #expect(all.status == 200)
            #expect(all.body.contains("event: host.registered"))
            #expect(all.body.contains("event: vm.created"))
            let lastID = all.body.split(separator: "\n").last { $0.hasPrefix("id: ") }.map { Int($0.dropFirst(4))! } ?? 0
            let later = try await client.request(.get, "/v1/events?follow=false&after=\(lastID)")
            #expect(later.body.isEmpty)
        }
        let stream = plane.controller.events.subscribe()
        _ = try await plane.controller.stopVM("a")
        var iterator = stream.makeAsyncIterator()
        let event = await iterator.next()
        #expect(event?.kind == .vmState)
        #expect(event?.to == "stopping")
    }

    @Test("at graceful shutdown the controller's loops end every event stream, so a console left open lets the server stop")
    func eventStreamsEndAtShutdown() async throws {
        let plane = try await TestControlPlane.make()
        let group = ServiceGroup(
            services: [ControllerLoops(controller: plane.controller)], logger: Logger(label: "test"))
        let running = Task { try await group.run() }
        let open = plane.controller.events.subscribe()
        let ended = Task {
            for await _ in open {}
            return true
        }
        await group.triggerGracefulShutdown()
        try await running.value
        #expect(await ended.value)
        // One that subscribes afterwards gets what is remembered, then the end.
        var late: [ClusterEvent] = []
        for await event in plane.controller.events.subscribe(after: 0) { late.append(event) }
        #expect(!late.isEmpty && late == plane.controller.events.events(after: 0))
    }

    @Test("concurrent creates of one name: exactly one wins, the rest are 409")
    func concurrentCreates() async throws {
        let plane = try await TestControlPlane.make()
        try await plane.test { client in
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for i in 0..<20 {
                    group.addTask {
                        try await client.request(.post, "/v1/vms", body: #"{"name":"same","image":"tiny","cpus":\#(i % 4 + 1)}"#)
                            .status
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(statuses.filter { $0 == 201 }.count == 1)
            #expect(statuses.filter { $0 == 409 }.count == 19)
        }
    }

    @Test("concurrent actions on one VM are serialised: memory and store agree afterwards")
    func concurrentActions() async throws {
        let plane = try await TestControlPlane.make()
        _ = try await plane.controller.createVM(VMSpec(name: "a", image: "tiny", cpus: 1, memoryMiB: 128))
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<40 {
                group.addTask {
                    _ = try await i % 2 == 0 ? plane.controller.stopVM("a") : plane.controller.startVM("a")
                }
            }
            try await group.waitForAll()
        }
        let view = try await plane.controller.vm("a")
        let stored = try #require(try await plane.store.load().vms.first)
        #expect(stored.generation == view.generation)
        #expect(stored.state == view.state)
        #expect(stored.intent == view.intent)
        #expect(view.generation > 1)
    }
}
