import ArgumentParser
import Foundation
import VireoAPI
import VireoModel

struct PlanCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan", abstract: "Plan live rebalancing: a dry run with reasons, or executed, and past plans.",
        subcommands: [PlanMake.self, PlanList.self, PlanShow.self], defaultSubcommand: PlanMake.self)
}

struct PlanMake: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "make",
        abstract: "Plan now with a policy (the default: `vireo plan [--policy P] [--explain]`).",
        discussion: """
            Without --execute this is a dry run: nothing moves and nothing is stored. Each move says \
            why (the objective and its burn rate, the host's CPU, what the move relieves), what it is \
            predicted to do to both hosts' CPU, and its cost (migration time, downtime). --explain also \
            lists every VM the policy looked at and, for each, every destination with the reason it \
            was refused or its predicted load.

            Policies: `slo` moves VMs only for applications that burn their error budget, picking the \
            move with the best benefit per cost; `threshold` (or `threshold-0.7`) is the black-box \
            baseline: a host above the CPU threshold sends its busiest VM to the least loaded host. \
            The default is the cluster's policy (`vireo rebalance`), else `slo`.

            With --execute the moves start (within the budgets: 2 migrations per cluster, 1 per host) \
            and the plan is stored (`vireo plan list`); the command waits for them to end and exits 1 \
            if one failed (its VM keeps running where it was).
            Examples: vireo plan --explain; vireo plan --policy threshold -o json; vireo plan --execute
            """)

    @Option(
        help: ArgumentHelp(
            "slo, threshold[-<fraction>], or one of CloudSim's heuristics (thr-mmt-0.8, iqr-mmt-1.5, mad-mmt-2.5, lr-mmt-1.2, lrr-mmt-1.2), npa, dvfs.",
            valueName: "policy")) var policy: String?
    @Flag(help: "Show every VM considered and every host's reason.") var explain = false
    @Flag(help: "Start the moves and store the plan.") var execute = false
    @Flag(help: "With --execute: return once the moves have started.") var noWait = false
    @Option(help: ArgumentHelp("With --execute: give up waiting after this many seconds.", valueName: "seconds"))
    var timeout: Double = 600
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let api = client.client()
        var plan = try await api.plan(policy: policy, execute: execute)
        if execute && !noWait {
            let deadline = ContinuousClock.now + .seconds(timeout)
            var shown: [String] = []
            while plan.state == .executing {
                let outcomes = plan.actions.map { "\($0.vm) \($0.from) → \($0.to): \($0.outcome)" }
                if output.output == .table && outcomes != shown {
                    for line in outcomes where !shown.contains(line) { FileHandle.standardError.write(Data((line + "\n").utf8)) }
                    shown = outcomes
                }
                guard ContinuousClock.now < deadline else {
                    throw VireoError(.unavailable, "plan \(plan.id) still executing after \(Int(timeout)) s")
                }
                try await Task.sleep(for: .milliseconds(200))
                plan = try await api.plan(plan.id)
            }
        }
        if output.output == .json { return try printJSON(plan) }
        print(PlanText.describe(plan, explain: explain))
        if plan.state == .failed { throw ExitCode(1) }
    }
}

struct PlanList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "Executed plans with their outcomes, newest first.")

    @Option(help: "At most this many.") var limit: Int = 100
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let list = try await client.client().plans(limit: limit)
        if output.output == .json { return try printJSON(list.items) }
        printTable(
            ["ID", "POLICY", "TRIGGER", "STATE", "MOVES", "AGE"],
            list.items.map { plan in
                [
                    plan.id, plan.policy, plan.trigger.rawValue, plan.state.rawValue,
                    plan.actions.isEmpty ? "-" : plan.actions.map { "\($0.vm) \($0.from)→\($0.to)" }.joined(separator: ", "),
                    age(since: plan.createdAt),
                ]
            })
    }
}

struct PlanShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show one executed plan.")

    @Argument(help: "Plan ID (from `vireo plan list`).") var id: String
    @Flag(help: "Show every VM considered and every host's reason.") var explain = false
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let plan = try await client.client().plan(id)
        if output.output == .json { return try printJSON(plan) }
        print(PlanText.describe(plan, explain: explain))
    }
}

struct RebalanceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rebalance", abstract: "How the cluster rebalances itself: show or set its policy.",
        subcommands: [RebalanceShow.self, RebalanceSet.self], defaultSubcommand: RebalanceShow.self)
}

struct RebalanceShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show", abstract: "The cluster's policy and what its last automatic plan found.")

    @Flag(help: "Show every VM the last plan considered.") var explain = false
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let status = try await client.client().rebalance()
        if output.output == .json { return try printJSON(status) }
        print("Policy:    \(status.settings.policy ?? "off (plans only by hand)")")
        print("Interval:  \(DurationText.format(status.settings.intervalSeconds))")
        print("Policies:  \(status.policies.joined(separator: ", "))")
        if let plan = status.lastPlan {
            print("Last plan, \(age(since: plan.createdAt)) ago:")
            print(PlanText.describe(plan, explain: explain).split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))
        }
    }
}

struct RebalanceSet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set", abstract: "Set the cluster's rebalancing policy (kept across restarts).",
        discussion: "Examples: vireo rebalance set slo; vireo rebalance set threshold-0.7 --interval 5; vireo rebalance set off")

    @Argument(help: "slo, threshold[-<fraction>], a CloudSim heuristic (e.g. iqr-mmt-1.5), or off.") var policy: String
    @Option(help: ArgumentHelp("Plan every this many seconds.", valueName: "seconds")) var interval: Double?
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let status = try await client.client().setRebalance(policy: policy, intervalSeconds: interval)
        if output.output == .json { return try printJSON(status) }
        print("rebalancing: \(status.settings.policy ?? "off"), every \(DurationText.format(status.settings.intervalSeconds))")
    }
}

/// A plan as text: moves with their reasons, predictions and outcomes; with `explain`, every VM
/// considered and every destination's verdict.
enum PlanText {
    static func describe(_ plan: Plan, explain: Bool) -> String {
        var lines: [String] = []
        let title =
            plan.state == .dryRun
            ? "Plan (dry run, \(plan.policy))" : "Plan \(plan.id) (\(plan.policy), \(plan.trigger.rawValue))"
        lines.append(
            "\(title): \(plan.actions.count) move(s)" + (plan.state == .dryRun ? "" : ", \(plan.state.rawValue)")
                + (plan.message.map { " — \($0)" } ?? ""))
        for (index, action) in plan.actions.enumerated() {
            lines.append("  \(index + 1). \(action.vm): \(action.from) → \(action.to)")
            lines.append("     why: \(action.explanation)")
            let p = action.predicted
            lines.append(
                "     predicted: \(action.from) CPU \(percent(p.sourceLoadBefore)) → \(percent(p.sourceLoadAfter)), "
                    + "\(action.to) \(percent(p.destinationLoadBefore)) → \(percent(p.destinationLoadAfter)); "
                    + String(format: "%.1f s, downtime %d ms", p.migrationSeconds, p.downtimeMs)
                    + (p.benefit.map { String(format: "; benefit %.2f vs cost %.2f", $0, p.weightedCost ?? 0) } ?? ""))
            if plan.state != .dryRun {
                lines.append(
                    "     outcome: \(action.outcome)" + (action.downtimeMs.map { ", downtime \($0) ms" } ?? "")
                        + (action.outcomeMessage.map { " (\($0))" } ?? ""))
            }
        }
        for note in plan.notes { lines.append("  note: \(note)") }
        if explain {
            lines.append("Considered:")
            if plan.considered.isEmpty { lines.append("  (no VM: no trigger)") }
            for vm in plan.considered {
                lines.append(
                    "  \(vm.vm) on \(vm.host): " + (vm.moved ? "moved" : "not moved: \(vm.reason.map { "\($0)" } ?? "-")"))
                for verdict in vm.destinations {
                    lines.append(
                        "    \(verdict.host): "
                            + (verdict.filtered.map { "filtered: \($0)" } ?? "load after \(percent(verdict.loadAfter ?? 0))"))
                }
                if let omitted = vm.omitted {
                    lines.append(
                        "    and " + omitted.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", "))
                }
            }
        }
        return lines.joined(separator: "\n")
    }

    static func percent(_ fraction: Double) -> String { String(format: "%.0f%%", fraction * 100) }
}
