/// A host's electrical power as a function of its CPU utilisation, given as a table of watts at
/// 0 %, 10 %, ..., 100 % (SPECpower style) and interpolated linearly between the points.
public struct PowerCurve: Sendable, Equatable {
    /// Watts at 0 %, 10 %, ..., 100 % utilisation (11 values).
    public let watts: [Double]

    /// Builds a curve from 11 table points; anything else is a programming error in a fleet
    /// definition, reported as nil.
    public init?(watts: [Double]) {
        guard watts.count == 11, watts.allSatisfy({ $0 >= 0 && $0.isFinite }) else { return nil }
        self.watts = watts
    }

    /// Watts at `utilisation` (a fraction, clamped to 0...1).
    @inline(__always)
    public func power(at utilisation: Double) -> Double {
        let u = min(max(utilisation, 0), 1) * 10
        let lower = min(Int(u), 9)
        let fraction = u - Double(lower)
        return watts[lower] + (watts[lower + 1] - watts[lower]) * fraction
    }

    /// Watts when idle (0 %) and at full load (100 %).
    public var idle: Double { watts[0] }
    public var peak: Double { watts[10] }

    /// The same curve for a machine made of `factor` identical boxes (watts scaled).
    public func scaled(by factor: Double) -> PowerCurve {
        // Scaling non-negative finite watts by a positive factor keeps the table valid.
        PowerCurve(unchecked: watts.map { $0 * factor })
    }

    private init(unchecked watts: [Double]) { self.watts = watts }

    /// A host without a measured curve: 50 W a core when idle, rising linearly to 100 W a core at
    /// full load (a common shape for servers; it only ranks hosts, it is never reported).
    public static func unmetered(cores: Int) -> PowerCurve {
        let scale = Double(max(1, cores))
        return PowerCurve(unchecked: (0...10).map { (50 + 5 * Double($0)) * scale })
    }

    /// HP ProLiant ML110 G4 (Xeon 3040, 2 x 1860 MHz), SPECpower.
    public static let hpProLiantML110G4 = PowerCurve(
        unchecked: [86, 89.4, 92.6, 96, 99.5, 102, 106, 108, 112, 114, 117])
    /// HP ProLiant ML110 G5 (Xeon 3075, 2 x 2660 MHz), SPECpower.
    public static let hpProLiantML110G5 = PowerCurve(
        unchecked: [93.7, 97, 101, 105, 110, 116, 121, 125, 129, 133, 135])
}
