import Foundation
import VireoModel

/// The executed plans the controller keeps in memory: those still executing, the newest finished
/// ones, and when each application's last planned move ended (what rebalancing's cool-down
/// needs). Older plans are only in the store.
struct PlanBook {
    /// Finished plans kept in memory besides the executing ones.
    static let recentCapacity = 100

    private(set) var byID: [String: Plan] = [:]
    /// Finished plans in the order they finished.
    private var finished: [String] = []
    /// When the last move each application's plans made ended.
    private(set) var lastMoveEnded: [String: Date] = [:]

    init() {}

    subscript(id: String) -> Plan? { byID[id] }

    var executing: [Plan] { byID.values.filter { $0.state == .executing } }
    /// The plans in memory, newest first.
    var newestFirst: [Plan] { byID.values.sorted { ($0.createdAt, $0.id) > ($1.createdAt, $1.id) } }

    mutating func put(_ plan: Plan) {
        let wasFinished = byID[plan.id].map { $0.state != .executing } ?? false
        byID[plan.id] = plan
        if plan.state != .executing && !wasFinished { finished.append(plan.id) }
        for action in plan.actions {
            guard let app = action.application, action.migration != nil, let ended = action.endedAt else { continue }
            lastMoveEnded[app] = max(lastMoveEnded[app] ?? ended, ended)
        }
        guard finished.count > Self.recentCapacity + Self.recentCapacity / 4 else { return }
        let drop = finished.count - Self.recentCapacity
        for id in finished.prefix(drop) where byID[id]?.state != .executing { byID[id] = nil }
        finished.removeFirst(drop)
    }

    /// When each application's last planned move ended; `now` for one whose plan is still moving it.
    func lastActed(now: Date) -> [String: Date] {
        var result = lastMoveEnded
        for plan in executing {
            for action in plan.actions where action.migration != nil && action.endedAt == nil {
                if let app = action.application { result[app] = now }
            }
        }
        return result
    }
}
