import VireoModel
import VireoPlacement
import VireoSecurity

public struct ControllerSettings: Sendable {
    /// How often agents should heartbeat.
    public var heartbeatInterval: Duration
    /// A host that has not heartbeated for this long becomes `unreachable`.
    public var hostTimeout: Duration
    /// A host that has not heartbeated for this long is `lost`: its VMs with `restartPolicy:
    /// always` start on other hosts. Its agent stops them itself after `fenceAfter`, sooner.
    public var hostLostAfter: Duration = .seconds(15)
    /// How often the controller retries pending VMs and checks host liveness.
    public var tickInterval: Duration
    public var placement: PlacementSettings
    /// How long a migration's destination may take to get ready and its source to start sending.
    public var migrationStartTimeout: Duration
    /// How the cluster rebalances itself, overriding what is stored (`--rebalance`); nil keeps
    /// what is stored.
    public var rebalance: RebalanceSettings?
    /// Bandwidth a live migration is predicted to get between hosts, MiB/s.
    public var migrationLinkMiBPerSecond: Double
    /// How often the usage history records the cluster (each VM's host, CPU and memory, each
    /// host's CPU, each application's worst objective): the mean over each step is kept.
    public var historyStep: Duration
    /// How long the usage history keeps a step.
    public var historyRetention: Duration
    /// The share of one core making and writing a usage-history step may take (`Pacer`). Unpaced,
    /// a step of 100,000 VMs took a CPU-second within a second each minute, and heartbeats beside
    /// it waited 100–150 ms on these 2-core machines (`vireo bench cluster`).
    public var historyShare = 0.2
    /// Issues each live migration's TLS credentials, so that only its two hosts can use its
    /// channel; nil: live migrations go over plain TCP (`vireo server --migration-tls off`).
    public var migrationAuthority: MigrationAuthority?
    /// The wait before an alert notification's first retry; each next one waits twice as long.
    public var alertRetryDelay: Duration = .seconds(1)
    /// How long the audit trail keeps an entry (`--audit-retention`).
    public var auditRetention: Duration = .seconds(90 * 86_400)

    public init(
        heartbeatInterval: Duration = .seconds(1), hostTimeout: Duration = .seconds(5),
        tickInterval: Duration = .milliseconds(500), placement: PlacementSettings = .init(),
        migrationStartTimeout: Duration = .seconds(60), rebalance: RebalanceSettings? = nil,
        migrationLinkMiBPerSecond: Double = 1_024, historyStep: Duration = .seconds(60),
        historyRetention: Duration = .seconds(7 * 86_400), migrationAuthority: MigrationAuthority? = nil
    ) {
        self.migrationAuthority = migrationAuthority
        self.historyStep = historyStep
        self.historyRetention = historyRetention
        self.rebalance = rebalance
        self.migrationLinkMiBPerSecond = migrationLinkMiBPerSecond
        self.heartbeatInterval = heartbeatInterval
        self.hostTimeout = hostTimeout
        self.tickInterval = tickInterval
        self.placement = placement
        self.migrationStartTimeout = migrationStartTimeout
    }
}

extension ControllerSettings {
    /// How long an agent cut off from the controller keeps the VMs that restart elsewhere: two
    /// thirds of `hostLostAfter`, so that it has stopped them well before the controller starts
    /// them on another host (the third left covers the kill, a heartbeat in flight and clocks
    /// that run at slightly different rates).
    public var fenceAfter: Duration { hostLostAfter * 2 / 3 }

    /// `hostLostAfter` when none is given: 15 s, or longer for a long heartbeat or timeout — one
    /// and a half times `hostTimeout` and at least three heartbeats, so that a host is unreachable
    /// well before it is lost, and its agent can miss a heartbeat without fencing itself.
    public static func defaultHostLostAfter(heartbeat: Duration, hostTimeout: Duration) -> Duration {
        max(.seconds(15), hostTimeout * 3 / 2, heartbeat * 3)
    }

    /// The usage-history step in milliseconds.
    var historyStepMs: Int64 { max(1, Int64((historyStep.seconds * 1000).rounded())) }

    /// Checks for a step of whole seconds from a second to a day, and a retention of at least one
    /// step; an error names `stepField` or `retentionField`.
    public func validateHistory(stepField: String = "historyStep", retentionField: String = "historyRetention")
        throws(VireoError)
    {
        let step = historyStep.seconds
        guard step >= 1, step <= 86_400, step.rounded() == step else {
            throw VireoError.invalid(
                field: stepField, value: DurationText.format(step), "must be whole seconds from 1s to 1d")
        }
        guard historyRetention.seconds >= step else {
            throw VireoError.invalid(
                field: retentionField, value: DurationText.format(historyRetention.seconds),
                "must be at least one step (\(DurationText.format(step)))")
        }
    }
}

extension Duration {
    var seconds: Double {
        let (s, atto) = components
        return Double(s) + Double(atto) / 1e18
    }
}
