import Foundation
import VireoModel

extension PlacementDecision {
    /// Condenses the decision into what is stored with the VM: every verdict for small clusters;
    /// for large ones the chosen host, the `keep` best alternatives and the filtered hosts
    /// counted by reason.
    public func explanation(decidedAt: Date, keep: Int = 16) -> PlacementExplanation {
        let chosenName = chosenVerdict?.hostName
        let ordered = verdicts.sorted { a, b in
            if a.hostID == chosen { return b.hostID != chosen }
            if b.hostID == chosen { return false }
            switch (a.score, b.score) {
            case (let x?, let y?): return x.total != y.total ? x.total > y.total : a.hostName < b.hostName
            case (.some, nil): return true
            case (nil, .some): return false
            case (nil, nil): return a.hostName < b.hostName
            }
        }
        guard ordered.count > keep else {
            return PlacementExplanation(chosenHost: chosenName, decidedAt: decidedAt, verdicts: ordered)
        }
        var omitted: [String: Int] = [:]
        for verdict in ordered[keep...] {
            omitted[verdict.filtered?.kind ?? "scored", default: 0] += 1
        }
        return PlacementExplanation(
            chosenHost: chosenName, decidedAt: decidedAt, verdicts: Array(ordered[..<keep]), omitted: omitted)
    }
}
