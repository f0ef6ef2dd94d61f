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

    struct Readings {
        var cpu: Counter?
        var residentBytes = 0.0
        var residentCount = 0
        /// The step the means belong to: readings of an earlier step count for nothing now.
        var step: Int
    }

    /// The step under way. Closing it only moves this: each VM's and host's readings start the
    /// next step at their next report (closing a step touched every one of 100,000 VMs on the
    /// controller's actor, once per step, holding every heartbeat up).
    private(set) var step = 0
    private(set) var vms: [VMID: Readings] = [:]
    private(set) var hosts: [HostID: Readings] = [:]

    /// The readings to add a report to: those of the step under way; those of the step before,
    /// restarted from their last reading; or new ones, when there was no report during a whole
    /// step (what was counted from is forgotten).
    private func current(_ existing: Readings?) -> Readings {
        guard var readings = existing, readings.step >= step - 1 else { return Readings(step: step) }
        if readings.step != step {
            readings.cpu?.startStep()
            readings.residentBytes = 0
            readings.residentCount = 0
            readings.step = step
        }
        return readings
    }

    /// A running VM's report from the host it lives on.
    mutating func take(vm id: VMID, on host: HostID, cpuSeconds: Double?, residentBytes: UInt64?, at time: Double) {
        var readings = current(vms[id])
        if let cpuSeconds {
            if readings.cpu == nil {
                readings.cpu = Counter(source: host, time: time, value: cpuSeconds)
            } else {
                readings.cpu?.take(cpuSeconds, at: time, from: host)
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
        var readings = current(hosts[id])
        if readings.cpu == nil {
            readings.cpu = Counter(source: id, time: time, value: busySeconds)
        } else {
            readings.cpu?.take(busySeconds, at: time, from: id, scale: capacity)
        }
        hosts[id] = readings
    }

    /// Mean CPU use over the step, cores.
    func cpuCores(of vm: VMID) -> Double? { thisStep(vms[vm])?.cpu?.rate }

    /// Mean resident memory over the step, MiB.
    func residentMiB(of vm: VMID) -> Double? {
        guard let readings = thisStep(vms[vm]), readings.residentCount > 0 else { return nil }
        return readings.residentBytes / Double(readings.residentCount) / 1_048_576
    }

    /// Mean busy fraction of the host's CPUs over the step.
    func cpuLoad(of host: HostID) -> Double? { thisStep(hosts[host])?.cpu?.rate }

    /// Whether the VM was reported during the step.
    func wasReported(_ vm: VMID) -> Bool { thisStep(vms[vm]) != nil }

    private func thisStep(_ readings: Readings?) -> Readings? { readings?.step == step ? readings : nil }

    /// Starts the next step: means from zero, the last readings kept as where they count from,
    /// and VMs and hosts not heard of during the step forgotten (each as it is next reported).
    mutating func startStep() { step += 1 }

    mutating func forget(vm: VMID) { vms[vm] = nil }
}
