import Foundation
import Testing
import VireoDriverQEMU
import VireoModel

@testable import VireoImage

#if canImport(Glibc)
    import Glibc
#endif

/// The `web` image's guest service, compiled and run on this host (no guest needed): how it counts
/// a request's duration, its CPU burners, its marks and its connection checks. Talks to 127.0.0.1
/// only.
@Suite("web guest service on the host")
struct WebServiceTests {
    /// The service, built from the image's source with the host's C compiler and listening on a
    /// free loopback port; stopped by `stop()`.
    final class Service {
        let process = Process()
        let directory: String
        let port: UInt16

        static func start() async throws -> Service {
            let directory = temporaryDirectory()
            let source = directory + "/vireo-web.c"
            try GuestFiles.webServiceSource.write(toFile: source, atomically: true, encoding: .utf8)
            let compiled = try await offPool {
                let cc = Process()
                cc.executableURL = URL(fileURLWithPath: "/usr/bin/env")
                cc.arguments = [
                    "cc", "-O2", "-pthread", "-DWORK_ITERATIONS=\(GuestFiles.webWorkIterations)", "-o", directory + "/vireo-web",
                    source,
                ]
                try cc.run()
                cc.waitUntilExit()
                return cc.terminationStatus == 0
            }
            try #require(compiled, "cc could not compile the web service (gcc is installed by scripts/install-deps.sh)")
            let service = try Service(directory: directory)
            do {
                try await service.ready()
            } catch {
                service.stop()
                throw error
            }
            return service
        }

        private init(directory: String) throws {
            self.directory = directory
            let binary = directory + "/vireo-web"
            port = UInt16(try QEMUDriver.freePort(on: "127.0.0.1"))
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = ["host-test", String(port)]
            process.environment = [
                "VIREO_WEB_READY": directory + "/ready", "VIREO_WEB_MARK_DISK": directory + "/disk-mark",
                "VIREO_WEB_MARK_TMPFS": directory + "/tmpfs-mark",
            ]
            process.standardError = FileHandle.nullDevice
            try process.run()
        }

        func ready() async throws {
            try await eventually("the service is listening", within: 30) {
                FileManager.default.fileExists(atPath: directory + "/ready")
            }
        }

        func stop() {
            // SIGKILL: the service has no handler to run, and a test process may pass on an
            // ignored SIGTERM to its children.
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            try? FileManager.default.removeItem(atPath: directory)
        }

        /// Sends `parts` of one request on a new connection, pausing `pause` between them, and returns
        /// the response (the connection is closed by `Connection: close`).
        func exchange(_ parts: [String], pause: Duration = .zero) async throws -> String {
            let fd = try connectLoopback(port)
            defer { close(fd) }
            for (i, part) in parts.enumerated() {
                if i > 0 { try await Task.sleep(for: pause) }
                let sent = part.utf8CString.withUnsafeBufferPointer { send(fd, $0.baseAddress, $0.count - 1, 0) }
                try #require(sent == part.utf8.count)
            }
            var response = [UInt8]()
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = recv(fd, &buffer, buffer.count, 0)
                if n <= 0 { break }
                response += buffer[0..<n]
            }
            return String(decoding: response, as: UTF8.self)
        }

        func get(_ path: String, method: String = "GET") async throws -> String {
            try await exchange(["\(method) \(path) HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"])
        }

        /// The value of one line of `/metrics` (`name` including its labels).
        func metric(_ name: String) async throws -> Double? {
            let text = try await get("/metrics")
            return text.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Double($0.split(separator: " ")[1]) }
        }

        /// Threads of the service's process, as the host's kernel counts them.
        var threads: Int {
            let status = (try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8)) ?? ""
            return status.split(separator: "\n").first { $0.hasPrefix("Threads:") }
                .flatMap { Int($0.dropFirst("Threads:".count).trimmingCharacters(in: .whitespaces)) } ?? -1
        }
    }

    @Test("a request's duration runs from its arrival: a head that takes 300 ms to arrive is recorded as taking longer")
    func durationFromArrival() async throws {
        let service = try await Service.start()
        defer { service.stop() }
        // The first bytes arrive, the rest 300 ms later: the time waiting for them counts, as time
        // queued behind other requests does. The service's own work is a few milliseconds.
        let response = try await service.exchange(
            ["GET / HTTP/1.1\r\n", "Host: t\r\nConnection: close\r\n\r\n"], pause: .milliseconds(300))
        #expect(response.hasPrefix("HTTP/1.1 200"))
        #expect(try await service.metric("vireo_web_request_duration_seconds_count") == 1)
        #expect(try await service.metric("vireo_web_request_duration_seconds_bucket{le=\"0.25\"}") == 0)
        #expect(try await service.metric("vireo_web_request_duration_seconds_sum") ?? 0 >= 0.3)

        // A request that arrives whole is recorded from then: well under the 300 ms above.
        #expect(try await service.get("/").hasPrefix("HTTP/1.1 200"))
        #expect(try await service.metric("vireo_web_request_duration_seconds_bucket{le=\"0.25\"}") == 1)
        #expect(try await service.metric("vireo_web_request_duration_seconds_count") == 2)
    }

    @Test("POST /burn starts busy threads that /status reports; threads=0 stops them; bad input is named and changes nothing")
    func burn() async throws {
        let service = try await Service.start()
        defer { service.stop() }
        let idle = service.threads
        #expect(try await service.get("/status").contains("\"burnThreads\":0"))

        let started = try await service.get("/burn?threads=2", method: "POST")
        #expect(started.hasPrefix("HTTP/1.1 200") && started.contains("{\"burnThreads\":2}"))
        #expect(try await service.get("/status").contains("\"burnThreads\":2"))
        #expect(service.threads == idle + 2)

        for bad in ["/burn?threads=65", "/burn?threads=lots", "/burn"] {
            let refused = try await service.get(bad, method: "POST")
            #expect(refused.hasPrefix("HTTP/1.1 400") && refused.contains("threads:"), "\(bad): \(refused)")
        }
        #expect(try await service.get("/burn?threads=1").hasPrefix("HTTP/1.1 405"))
        #expect(try await service.get("/status").contains("\"burnThreads\":2"))

        // A new setting replaces the burners; 0 stops them all (each ends after its current round).
        #expect(try await service.get("/burn?threads=0", method: "POST").contains("{\"burnThreads\":0}"))
        try await eventually("the busy threads end", within: 10) { service.threads == idle }
        #expect(try await service.get("/status").contains("\"burnThreads\":0"))
    }
}

extension WebServiceTests {
    @Test("POST /mark keeps the value on disk, in memory and in tmpfs; GET /mark reads each; bad values change nothing")
    func mark() async throws {
        let service = try await Service.start()
        defer { service.stop() }
        let empty = try await service.get("/mark")
        #expect(empty.hasPrefix("HTTP/1.1 200") && empty.hasSuffix("{\"disk\":\"\",\"memory\":\"\",\"tmpfs\":\"\"}\n"))

        let set = try await service.get("/mark?value=clean-1.A_b", method: "POST")
        let all = "{\"disk\":\"clean-1.A_b\",\"memory\":\"clean-1.A_b\",\"tmpfs\":\"clean-1.A_b\"}\n"
        #expect(set.hasPrefix("HTTP/1.1 200") && set.hasSuffix(all), "\(set)")
        #expect(try String(contentsOfFile: service.directory + "/disk-mark", encoding: .utf8) == "clean-1.A_b")
        #expect(try String(contentsOfFile: service.directory + "/tmpfs-mark", encoding: .utf8) == "clean-1.A_b")
        #expect(try await service.get("/mark").hasSuffix(all))

        let longest = String(repeating: "x", count: 64)
        #expect(try await service.get("/mark?value=\(longest)", method: "POST").hasPrefix("HTTP/1.1 200"))
        for bad in ["value=\(longest)y", "value=a%20b", "value=bad!", "value=", "other=1", ""] {
            let refused = try await service.get("/mark?\(bad)", method: "POST")
            #expect(refused.hasPrefix("HTTP/1.1 400") && refused.contains("value:"), "\(bad): \(refused)")
        }
        #expect(try await service.get("/mark", method: "PUT").hasPrefix("HTTP/1.1 405"))
        #expect(try await service.get("/mark").contains("\"memory\":\"\(longest)\""))

        // Each place is read afresh: what is gone from one shows there only.
        try FileManager.default.removeItem(atPath: service.directory + "/tmpfs-mark")
        #expect(try await service.get("/mark").hasSuffix("{\"disk\":\"\(longest)\",\"memory\":\"\(longest)\",\"tmpfs\":\"\"}\n"))
    }

    @Test("GET /connect says whether a TCP connection to IP:PORT succeeds, and why not; bad input is named")
    func connect() async throws {
        let service = try await Service.start()
        defer { service.stop() }
        let open = try await service.get("/connect?to=127.0.0.1:\(service.port)")
        #expect(open.hasPrefix("HTTP/1.1 200") && open.hasSuffix("{\"connected\":true}\n"), "\(open)")
        let closedPort = try QEMUDriver.freePort(on: "127.0.0.1")
        let refused = try await service.get("/connect?to=127.0.0.1%3A\(closedPort)&timeoutMs=500")
        #expect(refused.hasSuffix("{\"connected\":false,\"error\":\"Connection refused\"}\n"), "\(refused)")

        for bad in ["to=127.0.0.1", "to=localhost:80", "to=127.0.0.1:0", "to=127.0.0.1:65536", "to=1.2.3:80", ""] {
            let answer = try await service.get("/connect?\(bad)")
            #expect(answer.hasPrefix("HTTP/1.1 400") && answer.contains("to:"), "\(bad): \(answer)")
        }
        for bad in ["0", "10001", "soon"] {
            let answer = try await service.get("/connect?to=127.0.0.1:\(service.port)&timeoutMs=\(bad)")
            #expect(answer.hasPrefix("HTTP/1.1 400") && answer.contains("timeoutMs:"), "\(bad): \(answer)")
        }
        #expect(try await service.get("/connect?to=127.0.0.1:\(service.port)", method: "POST").hasPrefix("HTTP/1.1 405"))
    }
}

/// A connected TCP socket to 127.0.0.1:`port`.
func connectLoopback(_ port: UInt16) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
    guard connected else {
        close(fd)
        throw VireoError(.unavailable, "cannot connect to 127.0.0.1:\(port): errno \(errno)")
    }
    return fd
}
