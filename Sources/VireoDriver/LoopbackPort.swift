import Foundation
import VireoModel

/// TCP ports for guests' forwarded services and incoming migrations.
public enum LoopbackPort {
    /// A port nothing listens on now, from the kernel (bind to port 0), skipping `taken` (ports
    /// given to VMs that may not run at the moment).
    public static func free(excluding taken: Set<Int>) throws -> Int {
        for _ in 0..<32 {
            let port = try free()
            if !taken.contains(port) { return port }
        }
        throw VireoError(.unavailable, "no free loopback port found in 32 tries")
    }

    /// A TCP port free on `host` now (the kernel picks it; the caller binds it moments later).
    public static func free(on host: String = "127.0.0.1") throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw VireoError(.internal, "socket: errno \(errno)") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr(host)
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else { throw VireoError(.internal, "cannot find a free port on \(host): errno \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
