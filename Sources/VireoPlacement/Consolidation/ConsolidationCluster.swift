/// A physical machine as consolidation sees it: CPU cores, memory, network and power draw.
public struct PowerHostModel: Sendable, Equatable {
    /// Short type name for reports ("ML110 G4").
    public var name: String
    public var cores: Int
    /// Capacity of one core in MIPS.
    public var coreMIPS: Double
    public var memoryMB: Double
    /// Network bandwidth in kbit/s (CloudSim's unit: 1 Gbit/s = 1,000,000).
    public var bandwidth: Double
    public var power: PowerCurve

    public init(name: String, cores: Int, coreMIPS: Double, memoryMB: Double, bandwidth: Double, power: PowerCurve) {
        self.name = name
        self.cores = cores
        self.coreMIPS = coreMIPS
        self.memoryMB = memoryMB
        self.bandwidth = bandwidth
        self.power = power
    }

    /// All cores together, in MIPS.
    public var totalMIPS: Double { Double(cores) * coreMIPS }

    /// Seconds to live-migrate `memoryMB` of RAM to this host: half the link is used for the copy
    /// (bandwidth in kbit/s / 16,000 = MB/s).
    public func migrationSeconds(memoryMB: Double) -> Double { memoryMB / (bandwidth / 16_000) }
}

/// One planned live migration: move `vm` to host `target` (indices into the cluster).
public struct PlannedMigration: Sendable, Equatable {
    public var vm: Int
    public var target: Int
    public init(vm: Int, target: Int) {
        self.vm = vm
        self.target = target
    }
}

/// The cluster at one decision point, as a consolidation policy reads it. Laid out as parallel
/// arrays indexed by host and VM number so that a day of a 10,000-host fleet can be replayed
/// without allocating per VM.
///
/// The owner (the simulator, later the live rebalancer) keeps it current; policies only read it.
public struct ConsolidationCluster: Sendable {
    /// How many utilisation values each VM keeps (newest first), as CloudSim does.
    public static let historyCapacity = 30

    public var hosts: [PowerHostModel]
    /// VMs resident on each host, in the order they arrived there.
    public var hostVMs: [[Int]]
    /// Each host's CPU utilisation (0...1) at its last recorded update; 0 means switched off.
    public var hostUtilisation: [Double]

    /// Each VM's size: MIPS of its single virtual core.
    public var vmMIPS: [Double]
    public var vmMemoryMB: [Double]
    /// MIPS each VM asks for now (utilisation x size; not capped by the host's core).
    public var vmRequestedMIPS: [Double]
    /// Host each VM runs on (the source while it migrates), -1 if unplaced.
    public var vmHost: [Int]
    /// True while a VM is being live-migrated.
    public var vmMigrating: [Bool]
    /// Seconds since the start when each VM last started a migration (-infinity: never).
    public var vmLastMigrationStart: [Double]

    /// Utilisation history, `historyCapacity` slots per VM, written as a ring shared by all VMs
    /// (every VM records at the same instants).
    public var history: [Double]
    public private(set) var historyCount = 0
    private var historyHead = -1

    /// Seconds since the start of the run.
    public var time: Double = 0
    /// Seconds between decision points.
    public var interval: Double

    public init(hosts: [PowerHostModel], vmMIPS: [Double], vmMemoryMB: [Double], interval: Double) {
        self.hosts = hosts
        self.hostVMs = Array(repeating: [], count: hosts.count)
        self.hostUtilisation = Array(repeating: 0, count: hosts.count)
        self.vmMIPS = vmMIPS
        self.vmMemoryMB = vmMemoryMB
        self.vmRequestedMIPS = vmMIPS
        self.vmHost = Array(repeating: -1, count: vmMIPS.count)
        self.vmMigrating = Array(repeating: false, count: vmMIPS.count)
        self.vmLastMigrationStart = Array(repeating: -.infinity, count: vmMIPS.count)
        self.history = Array(repeating: 0, count: vmMIPS.count * Self.historyCapacity)
        self.interval = interval
    }

    public var vmCount: Int { vmMIPS.count }
    public var hostCount: Int { hosts.count }

    /// The `age`-th newest utilisation (0 = newest) of `vm`, a fraction of its size.
    @inline(__always)
    public func vmHistory(_ vm: Int, age: Int) -> Double {
        var slot = historyHead - age
        if slot < 0 { slot += Self.historyCapacity }
        return history[vm * Self.historyCapacity + slot]
    }

    /// Records one utilisation value (fraction of size) for every VM; `values[vm]`.
    public mutating func appendHistory(_ values: [Double]) {
        historyHead = (historyHead + 1) % Self.historyCapacity
        historyCount = min(historyCount + 1, Self.historyCapacity)
        let capacity = Self.historyCapacity
        let head = historyHead
        history.withUnsafeMutableBufferPointer { buffer in
            for vm in 0..<values.count { buffer[vm * capacity + head] = values[vm] }
        }
    }

    /// MIPS a VM can use on `host`: its request, capped at one core.
    @inline(__always)
    public func cappedRequest(_ vm: Int, on host: Int) -> Double {
        min(vmRequestedMIPS[vm], hosts[host].coreMIPS)
    }
}
