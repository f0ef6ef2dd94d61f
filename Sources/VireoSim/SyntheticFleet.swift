import VireoModel
import VireoPlacement

/// A deterministic random number generator (SplitMix64), so a seed always gives the same fleet.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Large fleets drawn from real traces: each synthetic VM replays a randomly chosen source VM,
/// shifted in time by a random number of samples and scaled by a random factor in 0.8...1.2
/// (kept in 0...100 %), so per-VM shapes, burstiness and the day's mean stay those of the
/// source while no two VMs move in lockstep.
public enum SyntheticFleet {
    public static func trace(from source: UtilisationTrace, vms: Int, seed: UInt64) -> UtilisationTrace {
        var random = SplitMix64(seed: seed)
        let n = source.samplesPerVM
        var samples = [UInt16](repeating: 0, count: vms * n)
        var names: [String] = []
        names.reserveCapacity(vms)
        for vm in 0..<vms {
            let row = Int.random(in: 0..<source.vmCount, using: &random)
            let shift = Int.random(in: 0..<n, using: &random)
            let scale = Double.random(in: 0.8...1.2, using: &random)
            for k in 0..<n {
                let value = Double(source.samples[row * n + (k + shift) % n]) * scale
                samples[vm * n + k] = UInt16(min(10_000, (value / 100).rounded() * 100))
            }
            names.append("synthetic-\(vm)")
        }
        return UtilisationTrace(
            source: "synthetic(seed \(seed), from \(source.source))", vmNames: names, samplesPerVM: n, samples: samples,
            sampleSeconds: source.sampleSeconds)
    }

    /// How many ML110 machines each synthetic host stands for, so that every VM fits at its full
    /// size at the start with 15 % to spare: CPU, memory, and the VMs whose core is too big for a
    /// G4 (2000 and 2500 MIPS) on the G5 half of the hosts alone.
    public static func hostScale(hosts: Int, fleet: SimulationFleet) -> Int {
        let g4 = CloudSimFleet.g4, g5 = CloudSimFleet.g5
        let g4Hosts = Double((hosts + 1) / 2), g5Hosts = Double(hosts / 2)
        let baseCPU = g4Hosts * g4.capacity + g5Hosts * g5.capacity
        let baseMemory = g4.memoryMiB * Double(hosts)
        let bigCores = fleet.vms.filter { $0.vcpuCapacity > g4.coreCapacity }
        let need = max(
            fleet.vms.map(\.size).reduce(0, +) / baseCPU, fleet.vms.map(\.memoryMiB).reduce(0, +) / baseMemory,
            g5Hosts > 0 ? bigCores.map(\.size).reduce(0, +) / (g5Hosts * g5.capacity) : 0,
            g5Hosts > 0 ? bigCores.map(\.memoryMiB).reduce(0, +) / (g5Hosts * g5.memoryMiB) : 0)
        return max(1, Int((need / 0.85).rounded(.up)))
    }

    /// CloudSim's host types made `scale` times larger: cores, memory and watts multiplied
    /// (bandwidth, and so migration time, unchanged).
    public static func hosts(_ count: Int, scale: Int) -> [PlacementHost] {
        CloudSimFleet.hosts(count).map { model in
            var big = model
            big.cores *= scale
            big.memoryMiB *= Double(scale)
            big.power = model.power?.scaled(by: Double(scale))
            if scale > 1 { big.model += " x\(scale)" }
            return big
        }
    }
}
