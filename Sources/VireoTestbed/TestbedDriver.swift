import VireoModel

/// The driver a testbed host's agent runs.
public enum TestbedDriver: String, Sendable, Codable, CaseIterable {
    /// `vireo agent --driver qemu` with tap networking on the host's bridge: guests get an address
    /// on the testbed network.
    case qemu
    /// `vireo agent --driver libvirt` on a libvirtd of the host's own (`TestbedLibvirtd`): guests
    /// get QEMU user networking, reachable at a loopback port inside the host's namespace.
    case libvirt

    /// Parses `--driver`: comma-separated `HOST=DRIVER` pairs such as `h1=qemu,h2=libvirt`, for
    /// hosts `h1...h<hosts>`; hosts not named run `qemu`. Refuses a malformed pair, a host the
    /// testbed will not have, a host named twice and an unknown driver, naming the value.
    public static func parse(_ text: String, hosts: Int) throws(VireoError) -> [String: TestbedDriver] {
        var drivers: [String: TestbedDriver] = [:]
        for pair in text.split(separator: ",", omittingEmptySubsequences: false) {
            let parts = pair.split(separator: "=", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw VireoError.invalid(field: "--driver", value: "'\(pair)'", "expected HOST=DRIVER, e.g. h2=libvirt")
            }
            let host = String(parts[0])
            guard host.hasPrefix("h"), let index = Int(host.dropFirst()), (1...max(1, hosts)).contains(index),
                host == "h\(index)"
            else {
                throw VireoError.invalid(
                    field: "--driver", value: "'\(host)'", "no such host: the testbed has h1...h\(hosts)")
            }
            guard let driver = TestbedDriver(rawValue: String(parts[1])) else {
                throw VireoError.invalid(
                    field: "--driver", value: "'\(parts[1])'",
                    "unknown driver for \(host): expected \(allCases.map(\.rawValue).joined(separator: " or "))")
            }
            guard drivers[host] == nil else {
                throw VireoError.invalid(field: "--driver", value: "'\(host)'", "is named twice")
            }
            drivers[host] = driver
        }
        return drivers
    }
}
