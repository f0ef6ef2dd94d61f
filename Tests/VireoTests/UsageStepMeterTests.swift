import Testing
import VireoModel

@testable import VireoController

@Suite("Usage step meter")
struct UsageStepMeterTests {
    let vm = VMID("vm-a")
    let host = HostID("host-a")

    @Test("a step counts from the last reading of the step before; a whole step unheard forgets where it counted from")
    func steps() {
        var meter = UsageStepMeter()
        meter.take(vm: vm, on: host, cpuSeconds: 0, residentBytes: 100 << 20, at: 0)
        meter.take(vm: vm, on: host, cpuSeconds: 6, residentBytes: 300 << 20, at: 60)
        meter.take(host: host, busySeconds: 10, capacity: 4, at: 0)
        meter.take(host: host, busySeconds: 34, capacity: 4, at: 60)
        #expect(meter.cpuCores(of: vm) == 0.1)
        #expect(meter.residentMiB(of: vm) == 200)
        #expect(meter.cpuLoad(of: host) == 0.1)
        #expect(meter.wasReported(vm))

        // Step 1: nothing read yet, then one reading, counted from the last one of step 0.
        meter.startStep()
        #expect(!meter.wasReported(vm))
        #expect(meter.cpuCores(of: vm) == nil)
        #expect(meter.residentMiB(of: vm) == nil)
        #expect(meter.cpuLoad(of: host) == nil)
        meter.take(vm: vm, on: host, cpuSeconds: 18, residentBytes: nil, at: 120)
        #expect(meter.wasReported(vm))
        #expect(meter.cpuCores(of: vm) == 0.2)
        #expect(meter.residentMiB(of: vm) == nil, "step 0's memory readings are not step 1's")

        // Step 2 passes unheard; in step 3 the VM starts counting again from its first reading.
        meter.startStep()
        meter.startStep()
        meter.take(vm: vm, on: host, cpuSeconds: 30, residentBytes: nil, at: 240)
        #expect(meter.wasReported(vm))
        #expect(meter.cpuCores(of: vm) == nil)
        meter.take(vm: vm, on: host, cpuSeconds: 33, residentBytes: nil, at: 270)
        #expect(meter.cpuCores(of: vm) == 0.1)

        meter.forget(vm: vm)
        #expect(!meter.wasReported(vm))
    }
}
