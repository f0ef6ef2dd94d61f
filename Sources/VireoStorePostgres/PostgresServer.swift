import Foundation
import VireoModel
import VireoProcess

/// A private PostgreSQL server from Debian's packages: its own data directory, its own port on
/// loopback, trust authentication for `postgres`. What the tests and `vireo bench cluster --store
/// postgres` run against; a production controller is given the URL of a server its operators run.
///
/// PostgreSQL refuses to run as root: as root, the server runs as the `postgres` user the package
/// creates.
public struct PostgresServer: Sendable {
    public let directory: String
    public let port: Int
    let binaries: String
    /// The niceness its programs run at (0: as this process).
    let niceness: Int

    /// The server's `postgres` database.
    public var location: PostgresLocation { database("postgres") }

    public func database(_ name: String) -> PostgresLocation {
        PostgresLocation(host: "127.0.0.1", port: port, user: "postgres", database: name, tls: .disable)
    }

    /// The newest PostgreSQL installed, e.g. `/usr/lib/postgresql/15/bin`; nil when there is none.
    public static func installedBinaries() -> String? {
        let root = "/usr/lib/postgresql"
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        return versions.compactMap { Int($0) }.sorted().reversed().map { "\(root)/\($0)/bin" }.first {
            FileManager.default.isExecutableFile(atPath: $0 + "/initdb")
        }
    }

    /// Creates a cluster in `directory` (which must not hold one) and starts it on `port`; returns
    /// when it accepts connections. `durable: false` (tests) turns off fsync: a commit survives
    /// the server's crash but not the machine's, and costs no disk flush. `niceness` above 0 runs
    /// `initdb` and the server below this process's priority (tests: the server is a helper, and
    /// its start-up must not take the CPU from clusters running beside it).
    public static func start(
        in directory: String, port: Int, durable: Bool = true, niceness: Int = 0
    ) async throws -> PostgresServer {
        guard let binaries = installedBinaries() else {
            throw VireoError(.failedPrecondition, "PostgreSQL is not installed: install the Debian package postgresql")
        }
        let server = PostgresServer(directory: directory, port: port, binaries: binaries, niceness: niceness)
        let data = server.dataDirectory
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        if getuid() == 0 { try await HostTool.run("chown", ["-R", "postgres:postgres", directory]) }
        try await server.run("initdb", ["-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
        let settings =
            (["-p \(port)", "-k \(data)", "-c listen_addresses=127.0.0.1", "-c max_connections=200"]
            + (durable ? [] : ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"])).joined(separator: " ")
        try await server.run(
            "pg_ctl", ["-D", data, "-o", settings, "-l", directory + "/postgres.log", "-w", "-t", "60", "start"])
        return server
    }

    public var dataDirectory: String { directory + "/data" }

    /// The server's main process (the first line of `postmaster.pid`); its children serve the
    /// connections.
    public func mainProcess() throws -> Int32 {
        let text = try String(contentsOfFile: dataDirectory + "/postmaster.pid", encoding: .utf8)
        guard let pid = text.split(separator: "\n").first.flatMap({ Int32($0) }) else {
            throw VireoError(.internal, "unreadable \(dataDirectory)/postmaster.pid")
        }
        return pid
    }

    /// Stops the server (fast shutdown: open sessions are ended).
    public func stop() async throws {
        try await run("pg_ctl", ["-D", dataDirectory, "-m", "fast", "-w", "stop"])
    }

    /// Creates an empty database and returns where it is.
    public func createDatabase(_ name: String) async throws -> PostgresLocation {
        try await run("createdb", ["-h", "127.0.0.1", "-p", "\(port)", "-U", "postgres", name])
        return database(name)
    }

    /// One of the server's programs, as `postgres` when this process is root, at `niceness`.
    private func run(_ program: String, _ arguments: [String]) async throws {
        var command = ["\(binaries)/\(program)"] + arguments
        if getuid() == 0 { command = ["setpriv", "--reuid", "postgres", "--regid", "postgres", "--init-groups", "--"] + command }
        if niceness > 0 { command = ["nice", "-n", "\(niceness)"] + command }
        try await HostTool.run(command[0], Array(command.dropFirst()))
    }
}
