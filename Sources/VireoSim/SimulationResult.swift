/// What one run measured, with CloudSim's metric definitions (fractions, not percent).
public struct SimulationResult: Codable, Sendable, Equatable {
    public var policy: String
    public var trace: String
    /// The rules the data centre obeyed (`cloudsim` or `realistic`).
    public var model: SimulationModel
    public var hosts: Int
    /// VMs that ran.
    public var vms: Int
    /// VMs of the trace that fitted no host when they were created (CloudSim drops them).
    public var unplacedVMs: Int
    /// VMs that finished early: CloudSim removes a VM whose demand is 0 at an accounting point.
    public var finishedVMs: Int
    /// Energy drawn by all hosts, kWh.
    public var energyKWh: Double
    /// SLA violation time per active host: time hosts were short of CPU / time hosts were on.
    public var slatah: Double
    /// Performance degradation due to migration: MIPS lost while migrating / MIPS requested.
    public var pdm: Double
    /// SLATAH x PDM.
    public var slav: Double
    /// Energy (kWh) x SLAV.
    public var esv: Double
    /// Migrations started.
    public var migrations: Int
    /// Wall-clock seconds the simulation took (excluding reading the trace).
    public var wallSeconds: Double
}

/// One decision interval of a run, for `--series` and `--plot`.
public struct IntervalSample: Sendable, Equatable {
    /// Seconds since the start (the decision point that opens the interval).
    public var time: Double
    /// Hosts with load at the decision point.
    public var activeHosts: Int
    /// Hosts whose VMs asked for more CPU than they got at the decision point.
    public var overloadedHosts: Int
    /// Energy drawn during the interval, kWh.
    public var energyKWh: Double
    /// Migrations started at the decision point.
    public var migrations: Int
}
