/// Decides whether a host is overloaded from its current demand and its utilisation history —
/// the host-overload detectors of Beloglazov & Buyya (2012) as CloudSim implements them.
public enum OverloadDetector: Sendable, Equatable {
    /// THR: overloaded when utilisation exceeds a fixed fraction.
    case staticThreshold(Double)
    /// IQR: threshold 1 - safety x interquartile range of the history.
    case interQuartileRange(safety: Double)
    /// MAD: threshold 1 - safety x median absolute deviation of the history.
    case medianAbsoluteDeviation(safety: Double)
    /// LR: a line through the last 10 values predicts the next; overloaded if safety x it >= 1.
    case localRegression(safety: Double)
    /// LRR: as LR with a robust (bisquare-weighted) line.
    case robustLocalRegression(safety: Double)

    /// Threshold used while a host has too little history for the adaptive detectors.
    public static let fallbackThreshold = 0.7
    /// History values IQR and MAD need; LR needs `regressionWindow`.
    public static let minimumSpreadHistory = 12
    public static let regressionWindow = 10

    /// Whether the detector reads the host's utilisation history at all.
    public var needsHistory: Bool {
        if case .staticThreshold = self { return false }
        return true
    }

    /// - Parameters:
    ///   - utilisation: requested MIPS of the host's VMs / host MIPS (may exceed 1).
    ///   - history: the host's utilisation history, newest first, trailing zeros removed.
    ///   - migrationIntervals: decision intervals the longest migration off this host takes
    ///     (LR predicts that far ahead).
    public func isOverloaded(utilisation: Double, history: [Double], migrationIntervals: Double) -> Bool {
        var scratch = history
        return isOverloaded(
            utilisation: utilisation, scratch: &scratch, count: history.count, migrationIntervals: migrationIntervals)
    }

    /// As `isOverloaded(utilisation:history:migrationIntervals:)`, reading the history from the
    /// first `count` values of `scratch`, which it may reorder (no allocation: this runs for every
    /// candidate host of every placement).
    public func isOverloaded(utilisation: Double, scratch: inout [Double], count: Int, migrationIntervals: Double) -> Bool {
        switch self {
        case .staticThreshold(let threshold):
            return utilisation > threshold
        case .interQuartileRange(let safety):
            guard count >= Self.minimumSpreadHistory else { return utilisation > Self.fallbackThreshold }
            Self.sortPrefix(&scratch, count)
            let q1 = min(max(Int((0.25 * Double(count + 1) + 0.5).rounded(.down)) - 1, 0), count - 1)
            let q3 = min(max(Int((0.75 * Double(count + 1) + 0.5).rounded(.down)) - 1, 0), count - 1)
            return utilisation > 1 - safety * (scratch[q3] - scratch[q1])
        case .medianAbsoluteDeviation(let safety):
            guard count >= Self.minimumSpreadHistory else { return utilisation > Self.fallbackThreshold }
            Self.sortPrefix(&scratch, count)
            let median = Self.medianOfSortedPrefix(scratch, count)
            for i in 0..<count { scratch[i] = abs(scratch[i] - median) }
            Self.sortPrefix(&scratch, count)
            return utilisation > 1 - safety * Self.medianOfSortedPrefix(scratch, count)
        case .localRegression(let safety), .robustLocalRegression(let safety):
            let n = Self.regressionWindow
            guard count >= n else { return utilisation > Self.fallbackThreshold }
            let oldestFirst = (0..<n).map { scratch[n - 1 - $0] }
            let line =
                if case .robustLocalRegression = self {
                    UtilisationStatistics.robustLinearFit(oldestFirst)
                } else {
                    UtilisationStatistics.linearFit(oldestFirst)
                }
            let predicted = line.intercept + line.slope * (Double(n) + migrationIntervals)
            return safety * predicted >= 1
        }
    }

    /// Insertion sort of the first `count` values (at most 30 here).
    private static func sortPrefix(_ values: inout [Double], _ count: Int) {
        guard count > 1 else { return }
        for i in 1..<count {
            let value = values[i]
            var j = i - 1
            while j >= 0 && values[j] > value {
                values[j + 1] = values[j]
                j -= 1
            }
            values[j + 1] = value
        }
    }

    private static func medianOfSortedPrefix(_ values: [Double], _ count: Int) -> Double {
        count % 2 == 1 ? values[count / 2] : (values[count / 2 - 1] + values[count / 2]) / 2
    }
}
