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
        switch self {
        case .staticThreshold(let threshold):
            return utilisation > threshold
        case .interQuartileRange(let safety):
            guard history.count >= Self.minimumSpreadHistory else { return utilisation > Self.fallbackThreshold }
            return utilisation > 1 - safety * UtilisationStatistics.interQuartileRange(sorted: history.sorted())
        case .medianAbsoluteDeviation(let safety):
            guard history.count >= Self.minimumSpreadHistory else { return utilisation > Self.fallbackThreshold }
            return utilisation > 1 - safety * UtilisationStatistics.medianAbsoluteDeviation(history)
        case .localRegression(let safety), .robustLocalRegression(let safety):
            let n = Self.regressionWindow
            guard history.count >= n else { return utilisation > Self.fallbackThreshold }
            let oldestFirst = (0..<n).map { history[n - 1 - $0] }
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
}
