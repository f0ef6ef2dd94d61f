import VireoPlacement

/// Hosts and VM sizes of a simulated data centre.
public struct SimulationFleet: Sendable {
    public var hosts: [PowerHostModel]
    public var vmMIPS: [Double]
    public var vmMemoryMB: [Double]

    public init(hosts: [PowerHostModel], vmMIPS: [Double], vmMemoryMB: [Double]) {
        self.hosts = hosts
        self.vmMIPS = vmMIPS
        self.vmMemoryMB = vmMemoryMB
    }
}

/// The data centre of CloudSim's PlanetLab experiments (Beloglazov & Buyya 2012).
public enum CloudSimFleet {
    /// HP ProLiant ML110 G4: 2 x 1860 MIPS, 4 GB, 1 Gbit/s.
    public static let g4 = PowerHostModel(
        name: "ML110 G4", cores: 2, coreMIPS: 1860, memoryMB: 4096, bandwidth: 1_000_000, power: .hpProLiantML110G4)
    /// HP ProLiant ML110 G5: 2 x 2660 MIPS, 4 GB, 1 Gbit/s.
    public static let g5 = PowerHostModel(
        name: "ML110 G5", cores: 2, coreMIPS: 2660, memoryMB: 4096, bandwidth: 1_000_000, power: .hpProLiantML110G5)

    /// The four VM types (EC2-like): MIPS and memory in MB.
    public static let vmTypes: [(mips: Double, memoryMB: Double)] = [(2500, 870), (2000, 1740), (1000, 1740), (500, 613)]

    /// `count` hosts, G4 at even and G5 at odd positions.
    public static func hosts(_ count: Int) -> [PowerHostModel] {
        (0..<count).map { $0 % 2 == 0 ? g4 : g5 }
    }

    /// VM `i` of `count` gets type floor(i / ceil(count / 4)): four consecutive blocks.
    public static func vmType(_ vm: Int, of count: Int) -> Int {
        let block = max(1, (count + 3) / 4)
        return min(vm / block, 3)
    }

    /// CloudSim's fleet for `vms` trace rows on `hosts` hosts.
    public static func fleet(hosts: Int, vms: Int) -> SimulationFleet {
        let types = (0..<vms).map { vmTypes[vmType($0, of: vms)] }
        return SimulationFleet(hosts: self.hosts(hosts), vmMIPS: types.map(\.mips), vmMemoryMB: types.map(\.memoryMB))
    }
}
