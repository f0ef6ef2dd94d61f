import Testing
import VireoModel

@testable import VireoController

@Suite("Usage step meter")
struct UsageStepMeterTests {
    let vm = VMID("vm-a")
    let host = HostID("host-a")
    var facts: UsageStepMeter.VMFacts { .init(name: "a", app: "shop", cpus: 2, memoryMiB: 512, host: host) }

    @Test("a step counts from the last reading of the step before; a whole step unheard forgets where it counted from")
    func steps() {
        var meter = UsageStepMeter()
        meter.take(vm: vm, facts: facts, cpuSeconds: 0, residentBytes: 100 << 20, at: 0)
        meter.take(vm: vm, facts: facts, cpuSeconds: 6, residentBytes: 300 << 20, at: 60)
        meter.take(host: host, busySeconds: 10, capacity: 4, at: 0)
        meter.take(host: host, busySeconds: 34, capacity: 4, at: 60)
        #expect(meter.vms[vm]?.cpuRate == 0.1)

        // Closing step 0: its readings stay as they ended while step 1 starts empty.
        meter.startStep()
        #expect(meter.closed.vms[vm]?.cpuRate == 0.1)
        #expect(meter.closed.vms[vm]?.residentMiB == 200)
        #expect(meter.closed.vms[vm]?.vm?.name == "a")
        #expect(meter.closed.hosts[host]?.cpuRate == 0.1)
        #expect(meter.vms[vm] == nil)
        #expect(meter.hosts[host] == nil)

        // One reading in step 1 counts from the last one of step 0; step 0's memory does not.
        meter.take(vm: vm, facts: facts, cpuSeconds: 18, residentBytes: nil, at: 120)
        #expect(meter.vms[vm]?.cpuRate == 0.2)
        #expect(meter.vms[vm]?.residentMiB == nil)
        #expect(meter.closed.vms[vm]?.cpuRate == 0.1, "the closed step is not changed by the next")

        // Step 2 passes unheard; in step 3 the VM starts counting again from its first reading.
        meter.startStep()
        meter.startStep()
        #expect(meter.closed.vms[vm] == nil)
        meter.take(vm: vm, facts: facts, cpuSeconds: 30, residentBytes: nil, at: 240)
        #expect(meter.vms[vm] != nil)
        #expect(meter.vms[vm]?.cpuRate == nil)
        meter.take(vm: vm, facts: facts, cpuSeconds: 33, residentBytes: nil, at: 270)
        #expect(meter.vms[vm]?.cpuRate == 0.1)

        meter.forget(vm: vm)
        #expect(meter.vms[vm] == nil)
    }
}
