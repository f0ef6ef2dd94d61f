import VireoModel

/// CPU utilisation of a set of VMs over time: one row per VM, one sample per `sampleSeconds`.
public struct UtilisationTrace: Sendable, Equatable {
    /// Where the rows came from (file names), for reports.
    public var source: String
    public var vmNames: [String]
    public var samplesPerVM: Int
    /// Utilisation in hundredths of a percent (0...10,000), VM-major: `samples[vm * samplesPerVM + k]`.
    public var samples: [UInt16]
    /// Seconds between samples.
    public var sampleSeconds: Double
    /// VM sizes given by the file itself (fleet CSV), else nil (CloudSim's VM types are used).
    public var vmMIPS: [Double]?
    public var vmMemoryMB: [Double]?

    public init(
        source: String, vmNames: [String], samplesPerVM: Int, samples: [UInt16], sampleSeconds: Double = 300,
        vmMIPS: [Double]? = nil, vmMemoryMB: [Double]? = nil
    ) {
        self.source = source
        self.vmNames = vmNames
        self.samplesPerVM = samplesPerVM
        self.samples = samples
        self.sampleSeconds = sampleSeconds
        self.vmMIPS = vmMIPS
        self.vmMemoryMB = vmMemoryMB
    }

    public var vmCount: Int { vmNames.count }

    /// Utilisation of `vm` (a fraction) at `seconds`, interpolated linearly between samples;
    /// after the last sample the last value holds.
    @inline(__always)
    public func utilisation(_ vm: Int, at seconds: Double) -> Double {
        let position = max(0, seconds / sampleSeconds)
        let k = min(Int(position), samplesPerVM - 1)
        let next = min(k + 1, samplesPerVM - 1)
        let base = vm * samplesPerVM
        let a = Double(samples[base + k]), b = Double(samples[base + next])
        return (a + (b - a) * (position - Double(k))) / 10_000
    }

    /// The newest sample of `vm` taken by `seconds` (a fraction), without looking ahead.
    @inline(__always)
    public func sample(_ vm: Int, at seconds: Double) -> Double {
        let k = min(Int(max(0, seconds / sampleSeconds)), samplesPerVM - 1)
        return Double(samples[vm * samplesPerVM + k]) / 10_000
    }

    /// Several traces side by side: the VMs of all of them, each keeping its own samples.
    public static func concatenating(_ traces: [UtilisationTrace]) throws(VireoError) -> UtilisationTrace {
        guard let first = traces.first else { throw VireoError(.invalidArgument, "no trace given") }
        if traces.count == 1 { return first }
        let count = traces.map(\.samplesPerVM).min() ?? first.samplesPerVM
        var names: [String] = []
        var samples: [UInt16] = []
        let sized = traces.allSatisfy { $0.vmMIPS != nil }
        var mips: [Double] = []
        var memory: [Double] = []
        for trace in traces {
            guard trace.sampleSeconds == first.sampleSeconds else {
                throw VireoError(.invalidArgument, "traces \(first.source) and \(trace.source) have different sample intervals")
            }
            for vm in 0..<trace.vmCount {
                names.append(trace.vmNames[vm])
                let base = vm * trace.samplesPerVM
                samples += trace.samples[base..<base + count]
            }
            if sized {
                mips += trace.vmMIPS ?? []
                memory += trace.vmMemoryMB ?? []
            }
        }
        return UtilisationTrace(
            source: traces.map(\.source).joined(separator: "+"), vmNames: names, samplesPerVM: count,
            samples: samples, sampleSeconds: first.sampleSeconds, vmMIPS: sized ? mips : nil,
            vmMemoryMB: sized ? memory : nil)
    }
}
