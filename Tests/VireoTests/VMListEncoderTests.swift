import Foundation
import NIOCore
import Testing
import VireoAPI
import VireoModel

@testable import VireoController
@testable import VireoHTTP

@Suite("VM list encoding")
struct VMListEncoderTests {
    @Test("a page made of kept VM fragments is byte for byte what the JSON encoder makes, as VMs change")
    func sameBytes() async throws {
        let plane = try await TestControlPlane.make(hosts: ["h1", "h2"])
        for i in 0..<7 {
            _ = try await plane.controller.createVM(
                VMSpec(name: "vm-\(i)", image: "tiny", cpus: 1, memoryMiB: 128, app: i.isMultiple(of: 2) ? "shop" : nil))
        }
        let encoder = VMListEncoder()
        func check(_ page: VMPage) throws {
            let made = try encoder.encode(page)
            #expect(Array(made.readableBytesView) == Array(try VireoJSON.encoder().encode(page)))
            let decoded = try VireoJSON.decoder().decode(VMPage.self, from: Data(made.readableBytesView))
            #expect(decoded.items.map(\.name) == page.items.map(\.name) && decoded.next == page.next)
        }
        try check(plane.controller.listVMs(after: nil, limit: 100))
        try check(plane.controller.listVMs(after: nil, limit: 3))  // with a next cursor
        try check(plane.controller.listVMs(after: "vm-6", limit: 3))  // empty
        // One VM changes: its fragment is made again, the others' are kept.
        _ = try await plane.controller.stopVM("vm-3")
        _ = try await plane.controller.deleteVM("vm-5")
        try check(plane.controller.listVMs(after: nil, limit: 100))
        #expect(try plane.controller.listVMs(after: nil, limit: 100).items.first { $0.name == "vm-3" }?.intent == .stopped)
        // Past its capacity the encoder starts again, and still encodes right.
        let small = VMListEncoder(capacity: 2)
        let page = plane.controller.listVMs(after: nil, limit: 100)
        for _ in 0..<2 {
            #expect(Array(try small.encode(page).readableBytesView) == Array(try VireoJSON.encoder().encode(page)))
        }
    }
}

@Suite("VM listing without the actor")
struct VMListIndexTests {
    @Test(
        "the writer's listing shows exactly what the model lists, page by page, through creates, runs, stops, moves and deletes")
    func sameAsModel() async throws {
        let cluster = try await LocalCluster.start(hosts: ["h1", "h2"])
        defer { cluster.stop() }
        let controller = cluster.controller
        func expectSame(_ what: String) async {
            var cursor: String?
            var pages = 0
            repeat {
                let (index, model) = await controller.bothListings(after: cursor, limit: 7)
                #expect(index == model, "\(what): page \(pages)")
                cursor = model.next
                pages += 1
            } while cursor != nil && pages < 100
        }
        for i in 0..<20 {
            _ = try await controller.createVM(
                VMSpec(name: "vm-\(String(format: "%02d", 19 - i))", image: "tiny", cpus: 1, memoryMiB: 80))
        }
        await expectSame("created")
        try await eventually("all running") { controller.listVMs(limit: 100).items.allSatisfy { $0.state == .running } }
        await expectSame("running")
        for name in ["vm-03", "vm-07"] { _ = try await controller.stopVM(name) }
        for name in ["vm-00", "vm-19", "vm-10"] { _ = try await controller.deleteVM(name) }
        let moving = controller.listVMs(limit: 100).items.first { $0.state == .running }!
        _ = try await controller.migrateVM(moving.name, to: moving.host == "h1" ? "h2" : "h1")
        try await eventually("settled") {
            let items = controller.listVMs(limit: 100).items
            return items.count == 17 && items.filter { $0.state == .stopped }.count == 2
                && items.first { $0.name == moving.name }?.host != moving.host
        }
        await expectSame("after stops, deletes and a move")
        #expect(controller.listVMs(after: "vm-18", limit: 10) == VMPage(items: [], next: nil))
    }
}

@Suite("VM pages kept while nothing in them changes")
struct VMPageStampTests {
    @Test("a page's stamp stays current through changes elsewhere in the order, and only then")
    func currentOnlyWhileUnchanged() async throws {
        let plane = try await TestControlPlane.make(hosts: ["h1", "h2"])
        let controller = plane.controller
        for i in 0..<20 {
            _ = try await controller.createVM(
                VMSpec(name: "vm-\(String(format: "%02d", i))", image: "tiny", cpus: 1, memoryMiB: 64))
        }
        // Requests as (cursor, limit): the first page, one in the middle, the last (nothing follows
        // it), everything.
        let requests: [(String?, Int)] = [(nil, 5), ("vm-04", 5), ("vm-14", 10), (nil, 100)]
        var stamps = requests.map { controller.stampedVMPage(after: $0.0, limit: $0.1) }
        /// Which requests' stamps are still current; a current one must give the same page as now.
        func current() -> [Bool] {
            requests.indices.map { i in
                let (cursor, limit) = requests[i]
                guard let moved = controller.currentVMPage(stamps[i].stamp) else {
                    stamps[i] = controller.stampedVMPage(after: cursor, limit: limit)
                    return false
                }
                #expect(controller.listVMs(after: cursor, limit: limit) == stamps[i].page, "request \(i)")
                stamps[i].stamp = moved
                return true
            }
        }
        #expect(current() == [true, true, true, true])
        _ = try await controller.stopVM("vm-12")  // inside no page but the whole list
        #expect(current() == [true, true, true, false])
        _ = try await controller.createVM(VMSpec(name: "vm-99", image: "tiny", cpus: 1, memoryMiB: 64))  // joins the last
        #expect(current() == [true, true, false, false])
        _ = try await controller.deleteVM("vm-07")  // in the middle page
        #expect(current() == [true, false, true, false])
        _ = try await controller.createVM(VMSpec(name: "vm-015", image: "tiny", cpus: 1, memoryMiB: 64))  // into the first
        #expect(current() == [false, true, true, false])
        _ = try await controller.stopVM("vm-19")
        #expect(current() == [true, true, false, false])
        #expect(current() == [true, true, true, true])

        // Past the changes it remembers, an old stamp is no longer current even for an unchanged page.
        let old = controller.stampedVMPage(after: nil, limit: 5).stamp
        for i in 0...VMListIndex.remembered {
            _ = try await (i.isMultiple(of: 2) ? controller.startVM("vm-19") : controller.stopVM("vm-19"))
            if i == 0 { #expect(controller.currentVMPage(old) != nil) }
        }
        #expect(controller.currentVMPage(old) == nil)
        #expect(controller.listVMs(after: nil, limit: 5) == controller.stampedVMPage(after: nil, limit: 5).page)
    }

    @Test("the server's cache serves a kept page while VMs change after it, a new one once it changes, within its bytes")
    func cacheServesCurrent() async throws {
        let plane = try await TestControlPlane.make(hosts: ["h1"])
        let controller = plane.controller
        for name in ["b", "c", "d"] {
            _ = try await controller.createVM(VMSpec(name: name, image: "tiny", cpus: 1, memoryMiB: 64))
        }
        let cache = VMPageCache(capacity: 100)
        func put(_ key: String, _ text: String, _ stamp: VMPageStamp) { cache.put(key, ByteBuffer(string: text), stamp: stamp) }
        func get(_ key: String) -> String? { cache.get(key, current: controller.currentVMPage).map { String(buffer: $0) } }

        let first = controller.stampedVMPage(after: nil, limit: 2).stamp  // b, c
        put("2|", "first", first)
        #expect(get("2|") == "first")
        _ = try await controller.createVM(VMSpec(name: "e", image: "tiny", cpus: 1, memoryMiB: 64))
        #expect(get("2|") == "first")
        _ = try await controller.createVM(VMSpec(name: "a", image: "tiny", cpus: 1, memoryMiB: 64))
        #expect(get("2|") == nil)
        let second = controller.stampedVMPage(after: nil, limit: 2).stamp  // a, b
        put("2|", "second", second)
        put("2|", "first", first)  // an older page does not replace a newer one
        #expect(get("2|") == "second")
        // Past its capacity in bytes it starts again.
        put("3|", String(repeating: "x", count: 95), controller.stampedVMPage(after: nil, limit: 3).stamp)
        #expect(get("2|") == nil)
        #expect(get("3|")?.count == 95)
    }
}

extension Controller {
    /// The page of the writer's listing and the page the model itself lists, at one instant: the
    /// writer changes both within one turn on the actor, so this turn sees them between commits.
    func bothListings(after cursor: String?, limit: Int) -> (index: VMPage, model: VMPage) {
        // The model's page, made here from its VMs: every VM by name, after the cursor, as a summary.
        let all = model.state.vms.values.sorted { $0.name < $1.name }
        let rest = all.filter { cursor == nil || $0.name > cursor! }
        let page = rest.prefix(limit).map { model.view($0, withPlacement: false) }
        let next = rest.count > limit ? page.last?.name : nil
        return (listVMs(after: cursor, limit: limit), VMPage(items: Array(page), next: next))
    }
}
