import AsyncHTTPClient
import Foundation
import Hummingbird
import HummingbirdTesting
import Metrics
import Prometheus
import Synchronization
import Testing
import VireoAPI
import VireoController
import VireoDriver
import VireoHTTP
import VireoModel
import VireoStore

/// A controller over an in-memory store with its HTTP API, each with its own metrics registry.
struct TestControlPlane {
    let controller: Controller
    let server: VireoServer
    let store: any ClusterStore

    static func make(
        tokens: AccessTokens? = nil, hosts: [String] = ["h1"], store: (any ClusterStore)? = nil,
        settings: ControllerSettings = .fast, now: @escaping @Sendable () -> Date = { Date() },
        history: (any UsageArchive)? = nil
    ) async throws -> TestControlPlane {
        let store = try store ?? SQLiteStore()
        let registry = PrometheusCollectorRegistry()
        let controller = try await Controller.open(
            store: store, settings: settings, now: now, metricsFactory: PrometheusMetricsFactory(registry: registry),
            history: history)
        for name in hosts {
            _ = try await controller.register(
                AgentRegistration(
                    name: name,
                    fingerprint: HostFingerprint(
                        cpus: 8, memoryMiB: 16384, driver: "simulated", capabilities: [.pause, .liveMigration],
                        attributes: [HostFingerprint.sharedStorageAttribute: "simulated"])))
        }
        return TestControlPlane(
            controller: controller, server: VireoServer(controller: controller, tokens: tokens, registry: registry),
            store: store)
    }

    /// Runs `body` against the API in process.
    func test(_ body: @escaping @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        let app = Application(router: server.router())
        try await app.test(.router, body)
    }
}

/// A clock tests move by hand.
final class ManualClock: Sendable {
    private let time: Mutex<Date>
    init(_ start: Date = Date(timeIntervalSince1970: 1_800_000_000)) { time = Mutex(start) }
    var now: Date { time.withLock { $0 } }
    func advance(_ seconds: Double) { time.withLock { $0 = $0.addingTimeInterval(seconds) } }
    var ms: Int64 { Int64((now.timeIntervalSince1970 * 1000).rounded()) }
}

extension ControllerSettings {
    /// Short intervals so tests of liveness and reconciliation take fractions of a second.
    // A host is unreachable after 3 s without a heartbeat (60 missed): a machine busy with other
    // tests' QEMUs has held an agent's heartbeats back for more than a second.
    static let fast = ControllerSettings(
        heartbeatInterval: .milliseconds(50), hostTimeout: .seconds(3), tickInterval: .milliseconds(50),
        migrationStartTimeout: .seconds(2))
}

extension TestClientProtocol {
    @discardableResult
    func request(
        _ method: HTTPRequest.Method, _ uri: String, body: String? = nil, headers: HTTPFields = [:]
    ) async throws -> (status: Int, body: String) {
        try await execute(uri: uri, method: method, headers: headers, body: body.map { ByteBuffer(string: $0) }) {
            (Int($0.status.code), String(buffer: $0.body))
        }
    }
}

func decodeJSON<T: Decodable>(_ type: T.Type, _ text: String) throws -> T {
    try VireoJSON.decoder().decode(type, from: Data(text.utf8))
}

/// Checks that `text` is the error envelope with `code`; returns its message.
@discardableResult
func expectEnvelope(_ text: String, code: VireoError.Code, sourceLocation: SourceLocation = #_sourceLocation) -> String {
    guard let envelope = try? decodeJSON(ErrorEnvelope.self, text) else {
        Issue.record("not an error envelope: \(text.prefix(200))", sourceLocation: sourceLocation)
        return ""
    }
    #expect(envelope.error.code == code, sourceLocation: sourceLocation)
    #expect(!envelope.error.requestId.isEmpty, sourceLocation: sourceLocation)
    return envelope.error.message
}

/// Polls `condition` every 20 ms for up to `seconds`; records an issue if it never holds.
///
/// The condition is always asked once more after the deadline has passed. A turn that took far
/// longer than its 20 ms sleep means the test process's few threads were held by other suites'
/// work (CPU-bound suites start together with the rest): up to a minute of such stalls does not
/// count against `seconds`, or a wait that began just before a stall fails without having been
/// given its time.
func eventually(
    _ what: String, within seconds: Double = 10, sourceLocation: SourceLocation = #_sourceLocation,
    _ condition: () async throws -> Bool
) async throws {
    var deadline = ContinuousClock.now + .seconds(seconds)
    var forgivable: Duration = .seconds(60)
    while true {
        let turn = ContinuousClock.now
        if try await condition() { return }
        if ContinuousClock.now >= deadline { break }
        try await Task.sleep(for: .milliseconds(20))
        let stalled = ContinuousClock.now - turn - .milliseconds(500)
        if stalled > .zero && forgivable > .zero {
            let forgiven = min(stalled, forgivable)
            deadline += forgiven
            forgivable -= forgiven
        }
    }
    Issue.record("timed out after \(seconds) s waiting for: \(what)", sourceLocation: sourceLocation)
    throw VireoError(.unavailable, "timed out waiting for \(what)")
}

/// Every suite that boots real QEMU guests runs inside this one, one test at a time: two cores
/// cannot run several TCG guests and still give the in-process cluster tests their heartbeats on
/// time.
@Suite("Real QEMU", .serialized, .tags(.realVM))
enum RealQEMU {}

extension Tag {
    /// Tests that boot real QEMU guests (as root; minutes under TCG), all in `RealQEMU`: `swift test
    /// --skip RealQEMU` leaves them out (this toolchain's `swift test` does not filter by tag yet).
    @Tag static var realVM: Self
}

/// Runs blocking work (waiting for a child process) on a thread of its own rather than on one of
/// the few threads Swift's concurrency runs every test on (as many as there are cores): blocking
/// those would stall the heartbeats of the in-process clusters other suites run meanwhile.
func offPool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try work() }) }.start()
    }
}

/// What `vireo controller` runs on its timer, every 50 ms: host liveness, scheduling, migrations.
func controllerLoops(_ controller: Controller) -> Task<Void, Never> {
    Task {
        while !Task.isCancelled {
            try? await controller.checkHostLiveness()
            try? await controller.schedulePending()
            try? await controller.expireMigrations()
            try? await Task.sleep(for: .milliseconds(50))
        }
    }
}

/// A `web` guest's JSON answer to `path` at `address` (`/status`, `/fill`, `/mark`), or an error
/// naming the path and the status when it is not 200.
func guest(_ address: String, _ path: String, post: Bool = false) async throws -> JSONValue {
    var request = HTTPClientRequest(url: "http://\(address)\(path)")
    if post { request.method = .POST }
    let response = try await HTTPClient.shared.execute(request, timeout: .seconds(60))
    let body = try await response.body.collect(upTo: 1 << 16)
    guard response.status == .ok else {
        throw VireoError(.internal, "\(path): HTTP \(response.status.code): \(String(buffer: body))")
    }
    return try JSONDecoder().decode(JSONValue.self, from: Data(buffer: body))
}

/// True when a TCP connection to `host`:`port` opens within `timeoutMs` (then it is closed).
func tcpConnects(_ host: String, _ port: Int, timeoutMs: Int32 = 2000) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr(host)
    address.sin_port = UInt16(port).bigEndian
    let started = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    if started == 0 { return true }
    guard errno == EINPROGRESS else { return false }
    var descriptor = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
    guard poll(&descriptor, 1, timeoutMs) == 1 else { return false }
    var error: Int32 = 0
    var length = socklen_t(MemoryLayout<Int32>.size)
    return getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == 0 && error == 0
}

/// A move between two drivers in this process has completed: the destination takes the VM over
/// and the source lets go of its copy. Returns the guest's address once it runs on the destination.
func takeOver(
    _ id: VMID, from source: any HypervisorDriver, to destination: any HypervisorDriver,
    tick: @Sendable () async -> Void
) async throws -> String {
    try await destination.finishIncoming(id)
    try await source.release(id)
    return try #require(try await settle(destination, id, to: .running, tick: tick).address)
}

/// The web guest at `address` finishes the disk writer a test started (`POST /fill?mib=…`) without
/// error, having written `mib` MiB, and reading them back from its disk (`O_DIRECT`) gives the
/// checksum of what it wrote.
func expectDiskWrites(at address: String, mib: Int, sourceLocation: SourceLocation = #_sourceLocation) async throws {
    try await eventually("the writer finishes on the destination", within: 120) {
        try await guest(address, "/fill")["running"] == .bool(false)
    }
    let written = try await guest(address, "/fill")
    #expect(written["error"] == .string(""), sourceLocation: sourceLocation)
    #expect(written["writtenMiB"] == .number(Double(mib)), sourceLocation: sourceLocation)
    let readBack = try await guest(address, "/fill?verify=1")
    #expect(readBack["error"] == .string(""), sourceLocation: sourceLocation)
    #expect(
        readBack["checksum"] == written["checksum"], "what the guest wrote is what its disk holds",
        sourceLocation: sourceLocation)
}
