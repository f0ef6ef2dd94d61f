import Foundation
import VireoModel

extension PlacementDecision {
    /// Condenses the decision into what is stored with the VM: every verdict for small clusters;
    /// for large ones the chosen host, the `keep` best alternatives and the filtered hosts
    /// counted by reason.
    public func explanation(decidedAt: Date, keep: Int = 16) -> PlacementExplanation {
        let chosenIndex = chosenVerdictIndex
        let verdicts = self.verdicts
        let (kept, omitted) = Self.first(
            keep, of: verdicts.count, chosen: chosenIndex,
            precedes: {
                HostFinding(filtered: verdicts[$0].filtered, score: verdicts[$0].score)
                    .precedes(
                        HostFinding(filtered: verdicts[$1].filtered, score: verdicts[$1].score), verdicts[$0].hostName,
                        verdicts[$1].hostName)
            },
            kind: { verdicts[$0].filtered?.kind ?? "scored" })
        return PlacementExplanation(
            chosenHost: chosenIndex.map { verdicts[$0].hostName }, decidedAt: decidedAt, verdicts: kept.map { verdicts[$0] },
            omitted: omitted)
    }

    /// The indexes of the `keep` first of `count` items: `chosen` first, then the others in the
    /// order `precedes` gives, found in one pass rather than by sorting them all; the others are
    /// counted by `kind`.
    static func first(
        _ keep: Int, of count: Int, chosen: Int?, precedes: (Int, Int) -> Bool, kind: (Int) -> String
    ) -> (kept: [Int], omitted: [String: Int]) {
        let room = keep - (chosen == nil ? 0 : 1)
        var best: [Int] = []
        best.reserveCapacity(max(0, room) + 1)
        var omitted: [String: Int] = [:]
        for item in 0..<count where item != chosen {
            if best.count >= room, best.last.map({ !precedes(item, $0) }) ?? true {
                omitted[kind(item), default: 0] += 1
                continue
            }
            var low = 0
            var high = best.count
            while low < high {
                let mid = (low + high) / 2
                if precedes(item, best[mid]) { high = mid } else { low = mid + 1 }
            }
            best.insert(item, at: low)
            if best.count > room { omitted[kind(best.removeLast()), default: 0] += 1 }
        }
        return ((chosen.map { [$0] } ?? []) + best, omitted)
    }
}
