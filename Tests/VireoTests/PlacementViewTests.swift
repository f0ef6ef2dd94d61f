import Foundation
import Testing
import VireoModel
import VireoPlacement

@testable import VireoController

@Suite("The controller's kept placement view")
struct PlacementViewTests {
    @Test("kept between decisions, it always equals the view built afresh from the records")
    func keptEqualsBuilt() {
        let time = Date(timeIntervalSince1970: 1_800_000_000)
        func host(_ name: String, cpus: Int = 8, state: HostState = .ready) -> HostRecord {
            HostRecord(
                id: HostID(name + "-id"), name: name, state: state,
                fingerprint: HostFingerprint(cpus: cpus, memoryMiB: 16_384, driver: "simulated", capabilities: [.liveMigration]),
                address: nil,
                registeredAt: time, lastHeartbeatAt: time, stateChangedAt: time)
        }
        func vm(_ name: String, on host: String?, cpus: Int, intent: PowerIntent = .running) -> VirtualMachine {
            VirtualMachine(
                id: VMID(name + "-id"), spec: VMSpec(name: name, image: "tiny", cpus: cpus, memoryMiB: 256 * cpus),
                state: .running, intent: intent, hostID: host.map { HostID($0 + "-id") }, createdAt: time,
                updatedAt: time, stateChangedAt: time)
        }
        let settings = PlacementSettings.live
        var state = ClusterState()
        func check(_ step: String) {
            let kept = state.placementCluster(settings: settings)
            let built = state.builtPlacementCluster(settings: settings)
            #expect(kept.hosts == built.hosts, "\(step)")
            #expect(kept.table.reservedVCPUs == built.table.reservedVCPUs, "\(step)")
            #expect(kept.table.reservedMemoryMiB == built.table.reservedMemoryMiB, "\(step)")
        }
        for name in ["c", "a", "b"] { state.put(host(name)) }
        _ = state.keptPlacementCluster(settings: settings)
        check("three hosts")
        state.put(vm("v1", on: "a", cpus: 2), replacing: VMID("v1-id"))
        state.put(vm("v2", on: "a", cpus: 1), replacing: VMID("v2-id"))
        state.put(vm("v3", on: "c", cpus: 4), replacing: VMID("v3-id"))
        check("VMs placed")
        state.put(vm("v1", on: "a", cpus: 2, intent: .stopped), replacing: VMID("v1-id"))
        check("a VM stopped frees its share")
        state.put(vm("v3", on: "b", cpus: 4), replacing: VMID("v3-id"))
        check("a VM moved")
        state.put(nil, replacing: VMID("v2-id"))
        check("a VM deleted")
        state.setContextHold(.init(cpus: 3, memoryMiB: 1024, vms: 1), on: HostID("b-id"))
        check("contexts hold capacity")
        var heartbeat = host("b")
        heartbeat.lastHeartbeatAt = time.addingTimeInterval(10)
        state.put(heartbeat)
        check("a heartbeat changes nothing placement sees")
        state.put(host("b", state: .unreachable))
        check("a host unreachable")
        _ = state.keptPlacementCluster(settings: settings)
        state.put(host("aa", cpus: 16))
        state.put(vm("v4", on: "aa", cpus: 1), replacing: VMID("v4-id"))
        _ = state.keptPlacementCluster(settings: settings)
        check("a host joined")
        #expect(state.placementCluster(settings: settings).hosts.map(\.name) == ["a", "aa", "b", "c"])
    }
}
