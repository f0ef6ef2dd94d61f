import ArgumentParser
import Foundation
import Hummingbird
import HummingbirdTLS
import Logging
import Metrics
import NIOSSL
import Prometheus
import ServiceLifecycle
import VireoAPI
import VireoAgent
import VireoClient
import VireoController
import VireoDriver
import VireoDriverLibvirt
import VireoDriverQEMU
import VireoDriverSimulated
import VireoHTTP
import VireoModel
import VireoSecurity
import VireoStore
import VireoStorePostgres
import VireoTelemetry
import VireoTelemetryStore

/// Options of every process that serves the API.
struct ServeOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Directory for the database, tokens and VM files.", valueName: "dir"))
    var dataDir: String = defaultDataDirectory()

    @Option(help: ArgumentHelp("Address and port to listen on. Beyond loopback, tokens are required.", valueName: "addr:port"))
    var listen: String = "127.0.0.1:7480"

    @Option(
        help: ArgumentHelp(
            "Where the cluster's records are kept: sqlite (<data-dir>/vireo.db) or a PostgreSQL database, "
                + "postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=disable|prefer|require|verify-full] (the password "
                + "may come from PGPASSWORD instead). The schema is created or migrated on start. Telemetry and "
                + "the usage history stay in <data-dir>.",
            valueName: "sqlite|url"))
    var store: String = "sqlite"

    @Option(
        help: ArgumentHelp(
            "With a PostgreSQL --store, several controllers may share the database: one leads and the others "
                + "stand by (serving reads of the cluster's records from the database, redirecting the rest to it), and one of them takes over when the leader has not renewed "
                + "its lease for this long.",
            valueName: "duration"))
    var leaseTTL: String = "5s"

    @Option(
        help: ArgumentHelp(
            "The URL clients and agents reach this controller at, which standbys redirect to while it leads "
                + "(default: from --listen).",
            valueName: "url"))
    var advertise: String?

    @Option(help: ArgumentHelp("Log level: trace, debug, info, notice, warning, error.", valueName: "level"))
    var logLevel: String = "info"

    @Option(
        help: ArgumentHelp(
            "Serve the API over TLS (https://) with this certificate chain (PEM, the server's certificate first); "
                + "with --tls-key. Clients that do not trust its issuer pass --ca-cert.",
            valueName: "file"))
    var tlsCert: String?

    @Option(help: ArgumentHelp("The private key (PEM) of --tls-cert.", valueName: "file"))
    var tlsKey: String?

    @Flag(
        help: ArgumentHelp(
            "Serve the API over TLS with a certificate of the controller's own certificate authority, made on "
                + "first start in <data-dir>/tls (ca-cert.pem is what clients and agents trust, with --ca-cert), "
                + "and admit to the agents' API only the certificates it issues: an agent gets one when it joins "
                + "with the join token. Controllers sharing a PostgreSQL database share the first one's authority "
                + "(the database keeps it, and each writes it into its own <data-dir>/tls)."))
    var tlsAuto = false

    @Option(
        help: ArgumentHelp(
            "With --tls-auto: more names (DNS names or IP addresses) clients and agents reach this controller "
                + "by, for its certificate. Always named: the --listen address, the --advertise URL's host, this "
                + "machine's host name, localhost, 127.0.0.1 and ::1.",
            valueName: "name[,name...]"))
    var tlsName: String?

    @Option(
        help: ArgumentHelp(
            "Rebalance the cluster on its own with this policy (slo, threshold, threshold-<fraction>, off); "
                + "kept across restarts. Default: what was set last (`vireo rebalance set`), else off.",
            valueName: "policy"))
    var rebalance: String?

    @Option(
        help: ArgumentHelp(
            "How often the usage history records each VM's host, CPU and memory, each host's CPU and each "
                + "application's worst objective (the mean over each step).",
            valueName: "duration"))
    var historyStep: String = "60s"

    @Option(help: ArgumentHelp("How long the usage history is kept.", valueName: "duration"))
    var historyRetention: String = "7d"

    @Option(
        help: ArgumentHelp(
            "How long the audit trail (vireo audit) keeps an entry; older ones are deleted hourly.", valueName: "duration"))
    var auditRetention: String = "90d"

    @Option(
        help: ArgumentHelp(
            "How often agents heartbeat. Between heartbeats each agent waits on the controller and hears "
                + "of a change to its host at once, so a longer interval costs no latency, only how soon a "
                + "lost host is noticed.",
            valueName: "duration"))
    var heartbeat: String = "1s"

    @Option(
        help: ArgumentHelp(
            "A host that has not heartbeated for this long is unreachable (default: three heartbeats, at least 5s).",
            valueName: "duration"))
    var hostTimeout: String?

    @Option(
        help: ArgumentHelp(
            "A host that has not heartbeated for this long is lost, and its VMs with restartPolicy: always start on "
                + "other hosts. Its agent, if it is only cut off, stops those VMs itself after two thirds of this, "
                + "so that a VM never runs on two hosts (default: 15s, or one and a half times --host-timeout and at "
                + "least three heartbeats if that is longer; it must be at least three heartbeats and longer than "
                + "--host-timeout).",
            valueName: "duration"))
    var hostLostAfter: String?

    @Option(
        help: ArgumentHelp(
            "Moves over TLS with certificates issued per move by an authority of that move alone, so only "
                + "its two hosts can use its channel (on), or over plain TCP (off): live moves, and the disk of "
                + "any cold move that copies it. A libvirt host needs its agent's migration-tls-dir for them.",
            valueName: "on|off"))
    var migrationTLS: String = "on"

    /// `--history-step`, `--history-retention`, `--audit-retention`, `--heartbeat`, `--host-timeout` and
    /// `--host-lost-after` in the controller's settings.
    func timing(into settings: inout ControllerSettings) throws {
        func duration(_ text: String, _ flag: String) throws -> Duration {
            guard let seconds = DurationText.seconds(text) else {
                throw VireoError.invalid(field: flag, value: "'\(text)'", "not a duration: give e.g. 30s, 5m, 7d")
            }
            return .seconds(seconds)
        }
        settings.historyStep = try duration(historyStep, "--history-step")
        settings.historyRetention = try duration(historyRetention, "--history-retention")
        settings.auditRetention = try duration(auditRetention, "--audit-retention")
        guard settings.auditRetention >= .seconds(3_600) else {
            throw VireoError.invalid(field: "--audit-retention", value: "'\(auditRetention)'", "must be at least 1h")
        }
        try settings.validateHistory(stepField: "--history-step", retentionField: "--history-retention")
        settings.heartbeatInterval = try duration(heartbeat, "--heartbeat")
        guard settings.heartbeatInterval >= .milliseconds(10), settings.heartbeatInterval <= .seconds(600) else {
            throw VireoError.invalid(field: "--heartbeat", value: "'\(heartbeat)'", "must be from 10ms to 10m")
        }
        settings.hostTimeout =
            try hostTimeout.map { try duration($0, "--host-timeout") }
            ?? max(.seconds(5), settings.heartbeatInterval * 3)
        guard settings.hostTimeout > settings.heartbeatInterval else {
            throw VireoError.invalid(
                field: "--host-timeout", value: "'\(hostTimeout ?? "")'",
                "must be longer than the heartbeat (\(heartbeat)): hosts would be unreachable between heartbeats")
        }
        settings.hostLostAfter =
            try hostLostAfter.map { try duration($0, "--host-lost-after") }
            ?? ControllerSettings.defaultHostLostAfter(heartbeat: settings.heartbeatInterval, hostTimeout: settings.hostTimeout)
        guard settings.hostLostAfter > settings.hostTimeout, settings.hostLostAfter >= settings.heartbeatInterval * 3 else {
            throw VireoError.invalid(
                field: "--host-lost-after", value: "'\(hostLostAfter ?? "")'",
                "must be longer than --host-timeout (\(DurationText.format(seconds(settings.hostTimeout)))) and at least "
                    + "three heartbeats: an agent must be able to miss a heartbeat without fencing itself")
        }
    }

    /// `--lease-ttl`: from 1s to 1m.
    func leaseDuration() throws -> Duration {
        guard let seconds = DurationText.seconds(leaseTTL), seconds >= 1, seconds <= 60 else {
            throw VireoError.invalid(field: "--lease-ttl", value: "'\(leaseTTL)'", "expected a duration from 1s to 1m")
        }
        return .seconds(seconds)
    }

    /// Where `--store` says the records are; checked before anything is opened.
    func storeLocation() throws -> PostgresLocation? {
        if store == "sqlite" { return nil }
        guard PostgresLocation.isURL(store) else {
            throw VireoError.invalid(
                field: "--store", value: "'\(PostgresLocation.redacted(store))'", "expected sqlite or a postgres:// URL")
        }
        var location = try PostgresLocation(url: store)
        if location.password == nil { location.password = ProcessInfo.processInfo.environment["PGPASSWORD"] }
        return location
    }

    /// Opens the store `--store` names (`location`: from `storeLocation()`).
    func openStore(_ location: PostgresLocation?, logger: Logger) async throws -> any ClusterStore {
        guard let location else { return try SQLiteStore(path: dataDir + "/vireo.db") }
        var postgresLogger = Logger(label: "vireo.postgres")
        postgresLogger.logLevel = max(logger.logLevel, .warning)
        return try await PostgresStore.open(location, logger: postgresLogger)
    }

    /// `$XDG_DATA_HOME/vireo`, else `/var/lib/vireo` for root (QEMU runs as other uids, which
    /// cannot enter root's home: docs/security.md), else `~/.local/share/vireo`.
    static func defaultDataDirectory() -> String {
        let env = ProcessInfo.processInfo.environment
        if let xdg = env["XDG_DATA_HOME"], !xdg.isEmpty { return xdg + "/vireo" }
        if getuid() == 0 { return "/var/lib/vireo" }
        return (env["HOME"] ?? ".") + "/.local/share/vireo"
    }
}

/// Options of every process that runs a driver.
struct DriverSelection: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "Hypervisor driver: qemu, libvirt or simulated (default: qemu where QEMU is installed, else simulated).",
            valueName: "driver"))
    var driver: String?

    @Option(
        name: .customLong("driver-opt"),
        help: ArgumentHelp(
            "Driver setting key=value, repeatable. qemu: accel (auto|kvm|tcg), cpus, memory, network "
                + "(user|none|tap), bridge, pool, guest-prefix, gateway (tap), shared-disks (enables live "
                + "migration), migration-mode (auto|live|paused; auto is live, but paused under TCG for VMs made before 2026-12-07, see docs/migration.md), "
                + "stop-timeout-s, ready-timeout-s, images, binary. libvirt: uri (default qemu:///system; "
                + "test:///default runs no guests), domain-type (auto|qemu|kvm), network (user|none), stop-timeout-s, ready-timeout-s, images, "
                + "shared-disks, peer-uri, migration-timeout-s, migration-mode, migration-tls-dir (libvirtd's "
                + "migrate_tls_x509_cert_dir; docs/libvirt-driver.md). simulated: cpus, memory, "
                + "boot-delay-ms, stop-delay-ms, fail-probability, seed, snapshot-save-ms, snapshot-load-ms, "
                + "snapshot-wait (on: saves and loads take those times), persist (on: what it runs is kept in "
                + "<state-dir>/simulated.json and outlives the agent, as QEMUs do).",
            valueName: "key=value"))
    var driverOptions: [String] = []

    var driverName: String { driver ?? (DriverRegistry.qemuInstalled ? "qemu" : "simulated") }

    /// The driver, logging through `logger`'s level (a `--log-level warning` quiets it too).
    func makeDriver(stateDirectory: String, logger: Logger) throws -> any HypervisorDriver {
        var settings: [String: String] = [:]
        for option in driverOptions {
            let parts = option.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty else {
                throw VireoError.invalid(field: "--driver-opt", value: "'\(option)'", "expected key=value")
            }
            settings[parts[0]] = parts[1]
        }
        return try Self.registry(logger: logger).make(
            driverName, options: DriverOptions(stateDirectory: stateDirectory, settings: settings))
    }

    /// Every driver this build has, logging at `logger`'s level.
    static func registry(logger: Logger) -> DriverRegistry {
        var registry = DriverRegistry()
        registry.registerSimulated()
        var driverLogger = Logger(label: "vireo.qemu")
        driverLogger.logLevel = logger.logLevel
        registry.registerQEMU(logger: driverLogger)
        var libvirtLogger = Logger(label: "vireo.libvirt")
        libvirtLogger.logLevel = logger.logLevel
        registry.registerLibvirt(logger: libvirtLogger)
        return registry
    }
}

/// What `up` and `controller` share: the store, the controller, the HTTP application.
struct ControlPlane {
    /// The controller's queue of connections not yet accepted. After a controller restart every
    /// agent opens its heartbeat and watch connections within seconds: Hummingbird's default of
    /// 256 overflowed with 10,000 agents (`vireo bench cluster`), and each connection dropped
    /// from the full queue waited out TCP's retransmission backoff (1, 3, 7, 15 s…) while the
    /// controller idled. The kernel caps it at net.core.somaxconn.
    static let listenBacklog = 4096

    let controller: Controller
    let services: [any Service]
    let url: String

    /// `displayHosts`: hosts whose contexts' displays are on this machine's loopback (`up`'s own).
    static func start(_ options: ServeOptions, logger: Logger, displayHosts: Set<String> = []) async throws -> ControlPlane {
        let (host, port) = try parseListen(options.listen)
        var settings = ControllerSettings()
        if let policy = options.rebalance {
            let name = policy.lowercased() == "off" ? nil : policy
            if let name { _ = try Controller.policy(name, field: "--rebalance") }
            settings.rebalance = RebalanceSettings(policy: name)
        }
        try options.timing(into: &settings)
        _ = try options.leaseDuration()
        if let advertise = options.advertise, !(advertise.hasPrefix("http://") || advertise.hasPrefix("https://")) {
            throw VireoError.invalid(field: "--advertise", value: "'\(advertise)'", "expected an http:// or https:// URL")
        }
        let storeLocation = try options.storeLocation()
        var tls = try options.serverTLS()
        let migrationTLS: Bool
        switch options.migrationTLS.lowercased() {
        case "on": migrationTLS = true
        case "off": migrationTLS = false
        default: throw VireoError.invalid(field: "--migration-tls", value: "'\(options.migrationTLS)'", "expected on or off")
        }
        // A PostgreSQL store is opened before anything is made in the data directory, so a server
        // that cannot be reached, or a database that is not there, leaves nothing behind.
        var postgres: (any ClusterStore)?
        if let storeLocation { postgres = try await options.openStore(storeLocation, logger: logger) }
        if let postgres { try await options.shareSecrets(through: postgres, tokens: !isLoopback(host)) }
        var authority: ClusterAuthority?
        if options.tlsAuto {
            let made = try options.clusterTLS(host: host)
            (tls, authority) = (made.configuration, made.authority)
            print(
                "TLS by the cluster's own authority: clients and agents trust \(options.dataDir)/tls/ca-cert.pem "
                    + "(--ca-cert); agents get their certificates by joining with the join token.")
        }
        var tokens: AccessTokens?
        if !isLoopback(host) {
            let (loaded, created) = try AccessTokens.loadOrCreate(in: options.dataDir, shared: postgres != nil)
            tokens = loaded
            print(
                "Listening beyond loopback: API token \(created ? "created" : "kept") in \(options.dataDir)/admin.token, "
                    + "agent join token in \(options.dataDir)/join.token (mode 0600).")
        }
        let scheme = tls == nil ? "http" : "https"
        var leaseKeeper: LeaseKeeper?
        var standbyServer: StandbyServer?
        if let shared = postgres as? PostgresStore {
            let leadership = Leadership(
                store: shared, holder: "\(ProcessInfo.processInfo.hostName)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))",
                url: options.advertise ?? "\(scheme)://\(host.contains(":") ? "[\(host)]" : host):\(port)",
                ttl: try options.leaseDuration(), logger: logger)
            // While it stands by, it serves reads of the cluster's records from the database.
            let reads = StandbyReads { [tokens, settings] in
                try await StandbyReads.snapshot(of: shared, settings: settings, tokens: tokens)
            }
            let (lease, server) = try await leadership.standBy(host: host, port: port, tls: tls, reads: reads)
            standbyServer = server
            leaseKeeper = LeaseKeeper(leadership: leadership, term: lease.term)
            if tokens != nil {
                // The tokens may have been rotated while this controller stood by: it leads with
                // the cluster's.
                try await options.shareSecrets(through: shared, tokens: true)
                tokens = try AccessTokens.loadOrCreate(in: options.dataDir, shared: true).tokens
            }
        }
        try FileManager.default.createDirectory(atPath: options.dataDir, withIntermediateDirectories: true)
        if migrationTLS { settings.migrationAuthority = MigrationAuthority() }
        let registry = PrometheusCollectorRegistry()
        let store: any ClusterStore
        if let postgres { store = postgres } else { store = try await options.openStore(nil, logger: logger) }
        let controller = try await Controller.open(
            store: store, settings: settings, logger: logger, metricsFactory: PrometheusMetricsFactory(registry: registry),
            telemetry: TelemetryEngine(store: SeriesStore(path: options.dataDir + "/telemetry.db")),
            history: SQLiteUsageArchive(path: options.dataDir + "/history.db"))
        let server = VireoServer(
            controller: controller, tokens: tokens, registry: registry, displayHosts: displayHosts, authority: authority)
        let dataDir = options.dataDir
        let connections = ConnectionTasks()
        let app = Application(
            router: server.router(),
            server: server.httpServer(tls: tls, connections: connections),
            configuration: .init(address: .hostname(host, port: port), serverName: "vireo", backlog: ControlPlane.listenBacklog),
            onServerRunning: { channel in
                let actualPort = channel.localAddress?.port ?? port
                let url = "\(scheme)://\(host.contains(":") ? "[\(host)]" : host):\(actualPort)"
                // Tests and scripts read the URL from here when they asked for port 0.
                try? Data((url + "\n").utf8).write(to: URL(fileURLWithPath: dataDir + "/endpoint"))
                print("Vireo \(VireoVersion.current) API on \(url), web console at \(url)/ (data in \(dataDir))")
                fflush(nil)  // seen at once even when standard output is a pipe
            },
            logger: logger)
        // The standby's server answered while the cluster loaded; the leader's takes its port now.
        await standbyServer?.stop()
        return ControlPlane(
            controller: controller,
            services: [DrainingService(app, connections: connections), ControllerLoops(controller: controller, logger: logger)]
                + [leaseKeeper].compactMap { $0 },
            url: "\(scheme)://\(host):\(port)")
    }

    static func parseListen(_ text: String) throws -> (String, Int) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65535).contains(port)
        else {
            throw VireoError.invalid(field: "--listen", value: "'\(text)'", "expected ADDRESS:PORT, e.g. 127.0.0.1:7480")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw VireoError.invalid(field: "--listen", value: "'\(text)'", "address is missing") }
        return (host, port)
    }

    static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }
}

func makeLogger(_ label: String, level: String) throws -> Logger {
    guard let parsed = Logger.Level(rawValue: level) else {
        throw VireoError.invalid(
            field: "--log-level", value: "'\(level)'", "expected trace, debug, info, notice, warning or error")
    }
    var logger = Logger(label: label)
    logger.logLevel = parsed
    return logger
}

func runServices(_ services: [any Service], logger: Logger) async throws {
    let group = ServiceGroup(
        configuration: .init(
            services: services.map { .init(service: $0) }, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    try await group.run()
}

/// The options of every process that runs an agent: its desktop contexts and its local API.
struct ContextOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "Serve the context verbs for this host on ADDR:PORT (loopback only, no token), also while the "
                + "controller is unreachable, e.g. 127.0.0.1:7481.",
            valueName: "addr:port"))
    var localAPI: String?

    @Option(
        help: ArgumentHelp(
            "Keep N booted disposables of IMAGE ready, so `context open --disposable` hands one out at once; "
                + "repeatable.",
            valueName: "image=n"))
    var contextPool: [String] = []

    func manager(directory: String, host: String, driver: any HypervisorDriver, logger: Logger) throws -> ContextManager {
        var pool: [String: Int] = [:]
        for entry in contextPool {
            let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, let count = Int(parts[1]) else {
                throw VireoError.invalid(field: "--context-pool", value: "'\(entry)'", "expected IMAGE=N, e.g. web=2")
            }
            pool[parts[0]] = count
        }
        return try ContextManager(
            settings: .init(directory: directory, hostName: host, pool: pool), driver: driver, logger: logger)
    }

    /// The local API's HTTP service, when asked for.
    func localService(_ contexts: ContextManager, logger: Logger) throws -> (any Service)? {
        guard let localAPI else { return nil }
        let (host, port) = try ControlPlane.parseListen(localAPI)
        guard ControlPlane.isLoopback(host) else {
            throw VireoError.invalid(
                field: "--local-api", value: "'\(localAPI)'", "must be on loopback (it has no tokens): e.g. 127.0.0.1:7481")
        }
        return Application(
            router: LocalAPI.router(contexts: contexts),
            configuration: .init(address: .hostname(host, port: port), serverName: "vireo-agent"),
            onServerRunning: { channel in
                print("Local context API on http://\(host):\(channel.localAddress?.port ?? port)")
                fflush(nil)
            },
            logger: logger)
    }
}

struct Up: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the controller and one local agent in one process (the first command to run).",
        discussion: "Stops cleanly on Ctrl-C or SIGTERM. VM records and hosts survive restarts in --data-dir.")

    @OptionGroup var serve: ServeOptions
    @OptionGroup var drivers: DriverSelection
    @OptionGroup var contextOptions: ContextOptions
    @Option(help: ArgumentHelp("Name of the local host.", valueName: "name")) var name: String = "local"

    func run() async throws {
        LoggingSystem.bootstrapStandardError()
        let logger = try makeLogger("vireo", level: serve.logLevel)
        try ResourceName.validate(name, field: "--name")
        let driver = try drivers.makeDriver(stateDirectory: serve.dataDir + "/vms", logger: logger)
        let contexts = try contextOptions.manager(
            directory: serve.dataDir + "/contexts", host: name, driver: driver, logger: logger)
        let local = try contextOptions.localService(contexts, logger: logger)
        let plane = try await ControlPlane.start(serve, logger: logger, displayHosts: [name])
        let agent = Agent(
            settings: .init(name: name, heartbeatInterval: plane.controller.settings.heartbeatInterval), driver: driver,
            link: plane.controller, contexts: contexts, logger: logger)
        try await runServices(plane.services + [agent] + [local].compactMap { $0 }, logger: logger)
    }
}

struct ControllerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "controller", abstract: "Run the controller alone; agents join it with `vireo agent`.")

    @OptionGroup var serve: ServeOptions

    func run() async throws {
        LoggingSystem.bootstrapStandardError()
        let logger = try makeLogger("vireo", level: serve.logLevel)
        let plane = try await ControlPlane.start(serve, logger: logger)
        try await runServices(plane.services, logger: logger)
    }
}

struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent", abstract: "Run an agent: one per host; it keeps its VMs running when the controller is away.")

    @Option(
        help: ArgumentHelp(
            "Controller URL; several, separated by commas, for controllers sharing one database: the agent "
                + "follows whichever leads.",
            valueName: "url[,url...]"))
    var controller: String
    @Option(help: ArgumentHelp("Host name (unique in the cluster).", valueName: "name")) var name: String
    @Option(
        help: ArgumentHelp(
            "Join token (env VIREO_TOKEN), needed when the controller listens beyond loopback. With the --ca-cert of "
                + "a controller started with --tls-auto, it gets this host a certificate from the controller's "
                + "authority (kept in <state-dir>/tls), which the agent speaks with from then on.",
            valueName: "token"))
    var token: String?
    @OptionGroup var trust: TrustOptions
    @Option(help: ArgumentHelp("Directory for this host's VM files.", valueName: "dir")) var stateDir: String?
    @Option(help: ArgumentHelp("Address other hosts reach this one at.", valueName: "addr")) var address: String?
    @Option(help: ArgumentHelp("Log level.", valueName: "level")) var logLevel: String = "info"
    @OptionGroup var drivers: DriverSelection
    @OptionGroup var contextOptions: ContextOptions

    func run() async throws {
        LoggingSystem.bootstrapStandardError()
        let logger = try makeLogger("vireo.agent", level: logLevel)
        try ResourceName.validate(name, field: "--name")
        let directory = stateDir ?? ServeOptions.defaultDataDirectory() + "/agent-\(name)"
        let driver = try drivers.makeDriver(stateDirectory: directory, logger: logger)
        let contexts = try contextOptions.manager(
            directory: directory + "/contexts", host: name, driver: driver, logger: logger)
        let local = try contextOptions.localService(contexts, logger: logger)
        let joinToken = token ?? ProcessInfo.processInfo.environment["VIREO_TOKEN"]
        // Over https with the controller's own authority, the agent speaks with the certificate
        // that authority issues to this host (kept in <state-dir>/tls), got with the join token.
        let link: any ControllerLink =
            if let caFile = trust.caFile,
                controller.split(separator: ",").allSatisfy({
                    $0.trimmingCharacters(in: .whitespaces).hasPrefix("https://")
                })
            {
                CertifiedAgentLink(
                    server: controller, token: joinToken, caFile: caFile, host: name, directory: directory + "/tls",
                    timeout: .seconds(5), logger: logger)
            } else {
                VireoClient(server: controller, token: joinToken, timeout: .seconds(5), http: trust.http)
            }
        // The fencing record survives a restart of this process, which may happen while cut off.
        let agent = Agent(
            settings: .init(name: name, address: address, fenceFile: directory + "/fence.json"), driver: driver, link: link,
            contexts: contexts, logger: logger)
        try await runServices([agent] + [local].compactMap { $0 }, logger: logger)
    }
}

extension ServeOptions {
    /// The API's TLS from `--tls-cert` and `--tls-key` (both or neither), checked before anything
    /// starts: a missing file, or a key that is not the certificate's, is named now.
    func serverTLS() throws -> TLSConfiguration? {
        if tlsAuto, tlsCert != nil || tlsKey != nil {
            throw VireoError.invalid(
                field: "--tls-auto", value: "set",
                "is either/or with --tls-cert and --tls-key: the certificate is the authority's")
        }
        if tlsName != nil, !tlsAuto {
            throw VireoError.invalid(field: "--tls-name", value: "'\(tlsName ?? "")'", "is for --tls-auto's certificate")
        }
        _ = try extraTLSNames()
        switch (tlsCert, tlsKey) {
        case (nil, nil): return nil
        case (nil, _?): throw VireoError.invalid(field: "--tls-cert", value: "none", "is required with --tls-key")
        case (_?, nil): throw VireoError.invalid(field: "--tls-key", value: "none", "is required with --tls-cert")
        case (let certPath?, let keyPath?):
            let chain: [NIOSSLCertificate]
            do {
                chain = try NIOSSLCertificate.fromPEMFile(certPath)
            } catch {
                throw VireoError.invalid(field: "--tls-cert", value: "'\(certPath)'", "cannot read a PEM certificate: \(error)")
            }
            guard !chain.isEmpty else {
                throw VireoError.invalid(field: "--tls-cert", value: "'\(certPath)'", "holds no certificate")
            }
            let key: NIOSSLPrivateKey
            do {
                key = try NIOSSLPrivateKey(file: keyPath, format: .pem)
            } catch {
                throw VireoError.invalid(field: "--tls-key", value: "'\(keyPath)'", "cannot read a PEM private key: \(error)")
            }
            var configuration = TLSConfiguration.makeServerConfiguration(
                certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
            configuration.minimumTLSVersion = .tlsv12
            // A key that is not the certificate's fails here, not at the first handshake.
            do {
                _ = try NIOSSLContext(configuration: configuration)
            } catch {
                throw VireoError.invalid(
                    field: "--tls-key", value: "'\(keyPath)'", "does not go with the certificate in \(certPath): \(error)")
            }
            return configuration
        }
    }

    /// `--tls-name`'s names, checked.
    func extraTLSNames() throws -> [String] {
        guard let tlsName else { return [] }
        return try tlsName.split(separator: ",", omittingEmptySubsequences: false).map {
            let name = $0.trimmingCharacters(in: .whitespaces)
            guard !name.isEmpty, !name.contains(where: { $0.isWhitespace || $0 == "/" }) else {
                throw VireoError.invalid(
                    field: "--tls-name", value: "'\(tlsName)'", "expected DNS names or IP addresses, separated by commas")
            }
            return name
        }
    }

    /// `--tls-auto`: the cluster authority of `<data-dir>/tls` (made on first start), and a TLS
    /// configuration that serves a certificate it issues now for this controller's names and
    /// verifies the client certificates presented against it (those who present none — the CLI,
    /// the console — are held to their tokens as before).
    func clusterTLS(host: String) throws -> (configuration: TLSConfiguration, authority: ClusterAuthority) {
        let authority = try ClusterAuthority(directory: dataDir + "/tls")
        var names = ["localhost", "127.0.0.1", "::1", ProcessInfo.processInfo.hostName]
        if host != "0.0.0.0", host != "::" { names.append(host) }
        if let advertise, let advertised = URLComponents(string: advertise)?.host, !advertised.isEmpty {
            names.append(advertised.trimmingCharacters(in: CharacterSet(charactersIn: "[]")))
        }
        names += try extraTLSNames()
        var unique: [String] = []
        for name in names where !unique.contains(name) { unique.append(name) }
        let issued = try authority.serverCredentials(names: unique)
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMBytes(Array(issued.certificate.utf8)).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(issued.privateKey.utf8), format: .pem)))
        configuration.minimumTLSVersion = .tlsv12
        configuration.certificateVerification = .optionalVerification
        configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(authority.certificatePEM.utf8)))
        return (configuration, authority)
    }
}

extension ServeOptions {
    /// One of the cluster's secrets, as the files of the data directory that hold it.
    struct SharedSecret {
        /// Its name in the store.
        let name: String
        /// What it is, for errors.
        let what: String
        let paths: [String]
    }

    /// The secrets controllers sharing a database share: the tokens (beyond loopback) and, with
    /// `--tls-auto`, the certificate authority.
    func sharedSecrets(tokens: Bool) -> [SharedSecret] {
        var secrets: [SharedSecret] = []
        if tokens {
            secrets.append(SharedSecret(name: "admin-token", what: "admin token", paths: [dataDir + "/admin.token"]))
            secrets.append(SharedSecret(name: "join-token", what: "join token", paths: [dataDir + "/join.token"]))
        }
        if tlsAuto {
            secrets.append(
                SharedSecret(
                    name: "tls-authority", what: "certificate authority",
                    paths: [dataDir + "/tls/ca-cert.pem", dataDir + "/tls/ca-key.pem"]))
        }
        return secrets
    }

    /// Controllers sharing a database share the cluster's secrets: the first to start stores its
    /// tokens and certificate authority, and each one after it takes them into its data directory
    /// (made there first, then replaced). A data directory that already holds different ones
    /// belongs to another cluster: it is refused, naming the file, before anything is made in it.
    func shareSecrets(through store: any ClusterStore, tokens: Bool) async throws {
        let secrets = sharedSecrets(tokens: tokens)
        let present = Set(
            secrets.filter { $0.paths.allSatisfy { FileManager.default.fileExists(atPath: $0) } }.map(\.name))
        for secret in secrets where present.contains(secret.name) {
            try await settle(secret, through: store, madeNow: false)
        }
        // What is missing is made as on any start (a half-made authority is refused there), then
        // replaced by the cluster's.
        if tokens { _ = try AccessTokens.loadOrCreate(in: dataDir) }
        if tlsAuto { _ = try ClusterAuthority(directory: dataDir + "/tls") }
        for secret in secrets where !present.contains(secret.name) {
            try await settle(secret, through: store, madeNow: true)
        }
    }

    /// Proposes this data directory's `secret` to the store; if the cluster has another, writes
    /// it over the files when they were `madeNow`, and refuses otherwise.
    private func settle(_ secret: SharedSecret, through store: any ClusterStore, madeNow: Bool) async throws {
        let local = try secret.paths.map { try String(contentsOfFile: $0, encoding: .utf8) }
        let proposed = try AccessTokens.storedValue(ofFiles: local)
        let stored = try await store.secret(secret.name, proposing: proposed)
        guard
            let cluster = try? JSONDecoder().decode([String].self, from: Data(stored.utf8)),
            cluster.count == secret.paths.count
        else {
            throw VireoError(.internal, "the cluster's \(secret.what) in the database cannot be read")
        }
        guard cluster != local else { return }
        // A value the cluster rotated away from (`vireo token rotate join`) is this cluster's too.
        let superseded = try await store.supersededSecrets(secret.name).contains(Controller.secretDigest(proposed))
        guard madeNow || superseded else {
            let differing = zip(secret.paths, zip(local, cluster)).first { $0.1.0 != $0.1.1 }?.0 ?? secret.paths[0]
            throw VireoError(
                .failedPrecondition,
                "\(differing) is not the \(secret.what) of the cluster in the database (stored by the controller "
                    + "that started on it first): this data directory belongs to another cluster. Remove "
                    + "\(secret.paths.joined(separator: " and ")) to take the cluster's")
        }
        for (path, text) in zip(secret.paths, cluster) {
            let mode = (try? FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) ?? 0o600
            try CertificateAuthority.replaceFile(path, with: text, mode: mode)
        }
    }
}
