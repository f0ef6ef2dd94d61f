import VireoModel
import VireoPlacement

/// Hosts and VMs of a simulated data centre, in MIPS (the cluster's CPU unit here).
public struct SimulationFleet: Sendable {
    public var hosts: [PlacementHost]
    public var vms: [PlacementVM]

    public init(hosts: [PlacementHost], vms: [PlacementVM]) {
        self.hosts = hosts
        self.vms = vms
    }

    /// One single-vCPU VM per size, named after the trace's rows.
    public init(hosts: [PlacementHost], names: [String], mips: [Double], memoryMB: [Double]) {
        self.hosts = hosts
        vms = names.indices.map { index in
            PlacementVM(
                id: VMID("vm-\(index)"), name: names[index], vcpus: 1, vcpuCapacity: mips[index],
                memoryMiB: memoryMB[index])
        }
    }
}

/// The data centre of CloudSim's PlanetLab experiments (Beloglazov & Buyya 2012).
public enum CloudSimFleet {
    /// HP ProLiant ML110 G4: 2 × 1860 MIPS, 4 GB, 1 Gbit/s, half of which (62.5 MB/s) a
    /// migration gets.
    public static let g4 = PlacementHost(
        id: HostID("g4"), name: "g4", cores: 2, coreCapacity: 1860, memoryMiB: 4096, linkMiBPerSecond: 62.5,
        power: .hpProLiantML110G4, model: "ML110 G4")
    /// HP ProLiant ML110 G5: 2 × 2660 MIPS, 4 GB, 1 Gbit/s.
    public static let g5 = PlacementHost(
        id: HostID("g5"), name: "g5", cores: 2, coreCapacity: 2660, memoryMiB: 4096, linkMiBPerSecond: 62.5,
        power: .hpProLiantML110G5, model: "ML110 G5")

    /// The four VM types (EC2-like): MIPS and memory in MB.
    public static let vmTypes: [(mips: Double, memoryMB: Double)] = [(2500, 870), (2000, 1740), (1000, 1740), (500, 613)]

    /// `count` hosts named h0, h1, ..., G4 at even and G5 at odd positions.
    public static func hosts(_ count: Int) -> [PlacementHost] {
        (0..<count).map { index in named(index % 2 == 0 ? g4 : g5, index) }
    }

    /// A copy of `model` as host number `index`.
    public static func named(_ model: PlacementHost, _ index: Int) -> PlacementHost {
        var host = model
        host.id = HostID("h\(index)")
        host.name = "h\(index)"
        return host
    }

    /// Seconds to live-migrate `memoryMB` over `host`'s share of its link.
    public static func migrationSeconds(_ host: PlacementHost, memoryMB: Double) -> Double {
        memoryMB / host.linkMiBPerSecond
    }

    /// VM `i` of `count` gets type floor(i / ceil(count / 4)): four consecutive blocks.
    public static func vmType(_ vm: Int, of count: Int) -> Int {
        let block = max(1, (count + 3) / 4)
        return min(vm / block, 3)
    }

    /// CloudSim's fleet for the rows of `trace` on `hosts` hosts; a fleet CSV's own sizes win.
    public static func fleet(hosts: Int, trace: UtilisationTrace) -> SimulationFleet {
        let types = (0..<trace.vmCount).map { vmTypes[vmType($0, of: trace.vmCount)] }
        return SimulationFleet(
            hosts: self.hosts(hosts), names: trace.vmNames, mips: trace.vmMIPS ?? types.map(\.mips),
            memoryMB: trace.vmMemoryMB ?? types.map(\.memoryMB))
    }
}
