import VireoModel
import VireoPlacement

public struct ControllerSettings: Sendable {
    /// How often agents should heartbeat.
    public var heartbeatInterval: Duration
    /// A host that has not heartbeated for this long becomes `unreachable`.
    public var hostTimeout: Duration
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

    public init(
        heartbeatInterval: Duration = .seconds(1), hostTimeout: Duration = .seconds(5),
        tickInterval: Duration = .milliseconds(500), placement: PlacementSettings = .init(),
        migrationStartTimeout: Duration = .seconds(60), rebalance: RebalanceSettings? = nil,
        migrationLinkMiBPerSecond: Double = 1_024
    ) {
        self.rebalance = rebalance
        self.migrationLinkMiBPerSecond = migrationLinkMiBPerSecond
        self.heartbeatInterval = heartbeatInterval
        self.hostTimeout = hostTimeout
        self.tickInterval = tickInterval
        self.placement = placement
        self.migrationStartTimeout = migrationStartTimeout
    }
}

extension Duration {
    var seconds: Double {
        let (s, atto) = components
        return Double(s) + Double(atto) / 1e18
    }
}
