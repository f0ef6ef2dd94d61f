import Foundation
import VireoModel

extension PlacementDecision {
    /// Condenses the decision into what is stored with the VM: every verdict for small clusters;
    /// for large ones the chosen host, the `keep` best alternatives and the filtered hosts
    /// counted by reason.
    public func explanation(decidedAt: Date, keep: Int = 16) -> PlacementExplanation {
        let chosenIndex = chosenVerdictIndex
        /// By score (best first), then the filtered; ties by name. The chosen host goes before all.
        func precedes(_ a: HostVerdict, _ b: HostVerdict) -> Bool {
            switch (a.score, b.score) {
            case (let x?, let y?): return x.total != y.total ? x.total > y.total : a.hostName < b.hostName
            case (.some, nil): return true
            case (nil, .some): return false
            case (nil, nil): return a.hostName < b.hostName
            }
        }
        let chosen = chosenIndex.map { [verdicts[$0]] } ?? []
        let room = keep - chosen.count
        // The first `room` of the others in that order, in one pass instead of a sort of every
        // host: placing a VM in a cluster of 10,000 hosts must not cost a sort of 10,000 verdicts.
        var best: [HostVerdict] = []
        best.reserveCapacity(max(0, room) + 1)
        var omitted: [String: Int] = [:]
        for (index, verdict) in verdicts.enumerated() where index != chosenIndex {
            if best.count >= room, best.last.map({ !precedes(verdict, $0) }) ?? true {
                omitted[verdict.filtered?.kind ?? "scored", default: 0] += 1
                continue
            }
            var low = 0
            var high = best.count
            while low < high {
                let mid = (low + high) / 2
                if precedes(verdict, best[mid]) { high = mid } else { low = mid + 1 }
            }
            best.insert(verdict, at: low)
            if best.count > room {
                let out = best.removeLast()
                omitted[out.filtered?.kind ?? "scored", default: 0] += 1
            }
        }
        return PlacementExplanation(
            chosenHost: chosenIndex.map { verdicts[$0].hostName }, decidedAt: decidedAt, verdicts: chosen + best,
            omitted: omitted)
    }
}
