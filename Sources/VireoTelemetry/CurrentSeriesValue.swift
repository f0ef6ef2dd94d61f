import Foundation

/// The newest sample of one series: what `vireo app show` lists under "current".
public struct CurrentSeriesValue: Sendable, Codable, Equatable {
    public var name: String
    public var labels: [String: String]
    public var value: Double
    public var time: Date

    public init(name: String, labels: [String: String], value: Double, time: Date) {
        self.name = name
        self.labels = labels
        self.value = value
        self.time = time
    }
}
