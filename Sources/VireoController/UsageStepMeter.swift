import Foundation
import VireoModel

/// What heartbeats reported during the usage-history step under way, as the step's means: each
/// VM's CPU in cores and each host's CPU as a fraction of its capacity, from the cumulative CPU
/// seconds they report (the increase over the time it covers, like `UsageHistory`'s rates), and
/// each VM's resident memory (the mean of its readings). Closing a step starts the next one from
/// the last readings, so no time between two heartbeats is lost at a step's boundary.
struct UsageStepMeter {
    /// A cumulative CPU-seconds counter of one process, read from heartbeats.
    struct Counter {
        /// The host whose reading it is: on another host the VM runs in another process.
        private(set) var source: HostID
        private(set) var lastTime: Double
        private(set) var lastValue: Double
        /// Increase (divided by the scale) and seconds covered since the step began.
        private(set) var increase = 0.0
        private(set) var covered = 0.0

        init(source: HostID, time: Double, value: Double) {
            self.source = source
            self.lastTime = time
            self.lastValue = value
        }

        /// Takes a reading (`value` at `time`, seconds) divided by `scale` (a host's capacity, for
        /// a fraction). A reading from another host or below the last one (a new process: the VM
        /// restarted or moved) starts counting again from it; the step keeps what it had.
        mutating func take(_ value: Double, at time: Double, from source: HostID, scale: Double = 1) {
            if source == self.source, value >= lastValue, time > lastTime {
                increase += (value - lastValue) / max(scale, .leastNonzeroMagnitude)
                covered += time - lastTime
            }
            if time >= lastTime || source != self.source {
                self.source = source
                lastTime = time
                lastValue = value
            }
        }

        /// The mean rate over the step; nil until two readings of one process covered some time.
        var rate: Double? { covered > 0 ? increase / covered : nil }

        mutating func startStep() {
            increase = 0
            covered = 0
        }
    }

    /// What the step records of a VM besides its readings, as of its last report.
    struct VMFacts: Sendable {
        var name: String
        var app: String?
        var cpus: Int
        var memoryMiB: Int
        /// The host it lives on, which reported it.
        var host: HostID
    }

    struct Readings: Sendable {
        var cpu: Counter?
        var residentBytes = 0.0
        var residentCount = 0
        var vm: VMFacts?

        /// Mean CPU over the step: cores for a VM, a fraction of its capacity for a host.
        var cpuRate: Double? { cpu?.rate }

        /// Mean resident memory over the step, MiB.
        var residentMiB: Double? { residentCount > 0 ? residentBytes / Double(residentCount) / 1_048_576 : nil }

        /// The same counter, starting a new step from its last reading.
        func restarted() -> Readings {
            var next = Readings(cpu: cpu, vm: vm)
            next.cpu?.startStep()
            return next
        }
    }

    /// The step under way: the VMs and hosts reported during it.
    private(set) var vms: [VMID: Readings] = [:]
    private(set) var hosts: [HostID: Readings] = [:]
    /// The step closed last, as it ended. Closing a step moves the tables here and starts empty
    /// ones, so it costs nothing on the controller's actor (restarting 100,000 VMs' counters in
    /// place held every heartbeat up), and the closed step is read off the actor while the
    /// model goes on: nothing changes these tables until the next step closes.
    private(set) var closed: (vms: [VMID: Readings], hosts: [HostID: Readings]) = ([:], [:])

    /// A running VM's report from the host it lives on. A VM reported during the step before
    /// counts from its last reading there; one not reported during the whole step before starts
    /// again (what it counted from is forgotten).
    mutating func take(
        vm id: VMID, facts: VMFacts, cpuSeconds: Double?, residentBytes: UInt64?, at time: Double
    ) {
        var readings = vms[id] ?? closed.vms[id]?.restarted() ?? Readings()
        readings.vm = facts
        if let cpuSeconds {
            if readings.cpu == nil {
                readings.cpu = Counter(source: facts.host, time: time, value: cpuSeconds)
            } else {
                readings.cpu?.take(cpuSeconds, at: time, from: facts.host)
            }
        }
        if let residentBytes {
            readings.residentBytes += Double(residentBytes)
            readings.residentCount += 1
        }
        vms[id] = readings
    }

    /// A host's busy CPU seconds out of `capacity` CPUs.
    mutating func take(host id: HostID, busySeconds: Double, capacity: Double, at time: Double) {
        var readings = hosts[id] ?? closed.hosts[id]?.restarted() ?? Readings()
        if readings.cpu == nil {
            readings.cpu = Counter(source: id, time: time, value: busySeconds)
        } else {
            readings.cpu?.take(busySeconds, at: time, from: id, scale: capacity)
        }
        hosts[id] = readings
    }

    /// Closes the step under way and starts the next: means from zero, the last readings kept
    /// as where they count from (until the end of the next step).
    mutating func startStep() {
        // The step closed before is freed on another thread: at 100,000 VMs freeing its tables
        // took some 30 ms of the controller's actor, holding up every heartbeat.
        let retired = closed
        DispatchQueue.global(qos: .utility).async { withExtendedLifetime(retired) {} }
        closed = (vms, hosts)
        vms = Dictionary(minimumCapacity: closed.vms.count)
        hosts = Dictionary(minimumCapacity: closed.hosts.count)
    }

    /// A deleted VM: not part of the step under way.
    mutating func forget(vm: VMID) { vms[vm] = nil }
}
