/// The small statistics the overload detectors need, on plain arrays of utilisation fractions.
public enum UtilisationStatistics {
    /// Median of values already sorted ascending (mean of the middle two for an even count).
    public static func median(sorted: [Double]) -> Double {
        let n = sorted.count
        guard n > 0 else { return 0 }
        return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    }

    /// Interquartile range with CloudSim's quartile positions: round(0.25(n+1)) and
    /// round(0.75(n+1)), 1-based, rounding halves up.
    public static func interQuartileRange(sorted: [Double]) -> Double {
        let n = sorted.count
        guard n > 0 else { return 0 }
        let q1 = min(max(Int((0.25 * Double(n + 1) + 0.5).rounded(.down)) - 1, 0), n - 1)
        let q3 = min(max(Int((0.75 * Double(n + 1) + 0.5).rounded(.down)) - 1, 0), n - 1)
        return sorted[q3] - sorted[q1]
    }

    /// Median of the absolute deviations from the median.
    public static func medianAbsoluteDeviation(_ values: [Double]) -> Double {
        guard !values.isEmpty else { return 0 }
        let m = median(sorted: values.sorted())
        return median(sorted: values.map { abs($0 - m) }.sorted())
    }

    /// Least-squares line through (1, y[0]), (2, y[1]), ...: (intercept, slope).
    public static func linearFit(_ y: [Double], weights: [Double]? = nil) -> (intercept: Double, slope: Double) {
        var sw = 0.0, sx = 0.0, sy = 0.0, sxx = 0.0, sxy = 0.0
        for i in 0..<y.count {
            let w = weights?[i] ?? 1
            let x = Double(i + 1)
            sw += w
            sx += w * x
            sy += w * y[i]
            sxx += w * x * x
            sxy += w * x * y[i]
        }
        let denominator = sw * sxx - sx * sx
        guard sw > 0, denominator != 0 else { return (sw > 0 ? sy / sw : 0, 0) }
        let slope = (sw * sxy - sx * sy) / denominator
        return ((sy - slope * sx) / sw, slope)
    }

    /// A line fitted with bisquare robustness weights (residuals beyond six median absolute
    /// residuals get no weight; `iterations` rounds, as in LOWESS), so a single spike does not
    /// tilt the prediction.
    public static func robustLinearFit(_ y: [Double], iterations: Int = 3) -> (intercept: Double, slope: Double) {
        var line = linearFit(y)
        for _ in 0..<iterations {
            let residuals = y.indices.map { y[$0] - (line.intercept + line.slope * Double($0 + 1)) }
            let scale = 6 * median(sorted: residuals.map(abs).sorted())
            guard scale > 1e-12 else { return line }
            let weights = residuals.map { r -> Double in
                let u = r / scale
                return abs(u) < 1 ? (1 - u * u) * (1 - u * u) : 0
            }
            line = linearFit(y, weights: weights)
        }
        return line
    }
}
