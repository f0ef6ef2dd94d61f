import Foundation
import VireoModel

extension Plan {
    /// The plan a policy made, as Vireo shows and stores it.
    public init(_ plan: RebalancePlan, id: String, state: PlanState, trigger: PlanTrigger, at time: Date) {
        let actions = plan.actions.map { move -> Plan.Action in
            var application: String?
            var objective: String?
            if case .objectivePressure(let app, let name, _, _, _, _, _) = move.reason {
                (application, objective) = (app, name)
            }
            return Plan.Action(
                vm: move.vmName, vmID: move.vm, from: move.fromName, to: move.toName, reason: move.reason,
                application: application, objective: objective, explanation: move.explanation,
                predicted: Plan.Prediction(
                    sourceLoadBefore: move.sourceLoad.before, sourceLoadAfter: move.sourceLoad.after,
                    destinationLoadBefore: move.destinationLoad.before, destinationLoadAfter: move.destinationLoad.after,
                    migrationSeconds: move.cost.totalSeconds, downtimeMs: Int((move.cost.downtimeSeconds * 1000).rounded()),
                    transferredMiB: move.cost.transferredMiB, benefit: move.objectiveEffect?.benefit,
                    weightedCost: move.objectiveEffect?.weightedCost))
        }
        let considered = plan.considered.map { vm in
            Plan.Considered(
                vm: vm.vmName, host: vm.host, moved: vm.notMoved == nil, reason: vm.notMoved,
                destinations: vm.destinations.verdicts.map {
                    Plan.Verdict(host: $0.host, filtered: $0.filtered, loadAfter: $0.loadAfter)
                },
                omitted: vm.destinations.omitted.isEmpty ? nil : vm.destinations.omitted)
        }
        self.init(
            id: id, policy: plan.policy, trigger: trigger, state: state, createdAt: time,
            actions: actions, considered: considered, notes: plan.notes)
    }
}
