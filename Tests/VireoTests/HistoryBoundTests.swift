import Foundation
import Testing
import VireoModel

@testable import VireoController

/// Memory does not grow with the cluster's age: finished migrations and plans beyond the newest
/// are only in the store.
@Suite("Bounded history in memory")
struct HistoryBoundTests {
    @Test("finished migrations beyond the newest are dropped; open ones and each VM's last move stay")
    func migrations() {
        var book = MigrationBook()
        let vms = (0..<10).map { _ in VMID.generate() }
        let (h1, h2) = (HostID.generate(), HostID.generate())
        let t0 = Date(timeIntervalSince1970: 1_700_000_000)
        var open = Migration(vmID: vms[0], vmName: "v0", source: h1, destination: h2, reason: "open", requestedAt: t0)
        open.state = .running
        book.put(open, vmExists: true)
        for i in 0..<5_000 {
            var m = Migration(
                vmID: vms[i % 10], vmName: "v\(i % 10)", source: h1, destination: h2, reason: "\(i)",
                requestedAt: t0.addingTimeInterval(Double(i + 1)))
            m.state = .completed
            m.destinationSettled = true
            book.put(m, vmExists: true)
        }
        #expect(book.all.count <= MigrationBook.recentCapacity + MigrationBook.recentCapacity / 4 + 1)
        #expect(book.active(of: vms[0])?.reason == "open")
        #expect(vms.enumerated().allSatisfy { i, vm in book.lastCompleted[vm]?.reason == "\(4_990 + i)" })
        #expect(book.all.contains { $0.reason == "4999" })
        #expect(!book.all.contains { $0.reason == "0" })
    }

    @Test("finished plans beyond the newest are dropped; each application's last move is remembered")
    func plans() {
        var book = PlanBook()
        let t0 = Date(timeIntervalSince1970: 1_700_000_000)
        let prediction = Plan.Prediction(
            sourceLoadBefore: 1, sourceLoadAfter: 0.5, destinationLoadBefore: 0, destinationLoadAfter: 0.5,
            migrationSeconds: 1, downtimeMs: 50, transferredMiB: 64)
        for i in 0..<1_000 {
            var action = Plan.Action(
                vm: "v", vmID: VMID.generate(), from: "h1", to: "h2",
                reason: .hostOverThreshold(host: "h1", load: 0.9, threshold: 0.8),
                application: i == 10 ? "shop" : nil, objective: nil, explanation: "", predicted: prediction)
            action.migration = MigrationID.generate()
            action.endedAt = t0.addingTimeInterval(Double(i))
            book.put(
                Plan(
                    id: "p\(i)", policy: "slo", trigger: .automatic, state: .completed,
                    createdAt: t0.addingTimeInterval(Double(i)),
                    actions: [action], considered: [], notes: []))
        }
        #expect(book.newestFirst.count <= PlanBook.recentCapacity + PlanBook.recentCapacity / 4)
        #expect(book.newestFirst.first?.id == "p999")
        #expect(book["p10"] == nil)
        #expect(book.lastActed(now: t0)["shop"] == t0.addingTimeInterval(10))
    }
}
