import Foundation
import VireoModel

/// A loopback TCP port for a guest's forwarded service.
enum LoopbackPort {
    /// A port nothing listens on now, from the kernel (bind to port 0), skipping `taken` (ports
    /// given to VMs that may not run at the moment).
    static func free(excluding taken: Set<Int>) throws -> Int {
        for _ in 0..<32 {
            let port = try kernelChosen()
            if !taken.contains(port) { return port }
        }
        throw VireoError(.unavailable, "no free loopback port found in 32 tries")
    }

    private static func kernelChosen() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw VireoError(.internal, "socket: errno \(errno)") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else { throw VireoError(.internal, "cannot find a free loopback port: errno \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
