import VireoImage
import VireoModel
import VireoProcess

/// Guests on a bridge: each VM gets a tap device on `bridge` and an address from `pool`.
///
/// Addresses are handed out by the agent (the guest's init reads them from the kernel command
/// line) and stay with the VM for its life, also across a live migration, which is why the pools
/// of different hosts on one network must not overlap (the testbed gives host N 198.18.N.0/24).
public struct TapNetwork: Sendable, Equatable {
    public var bridge: String
    /// The range guest addresses come from, e.g. 198.18.1.0/24; .0–.9 and the last are skipped.
    public var pool: IPv4Network
    /// The prefix length of the network the guests are on (the whole bridge segment).
    public var guestPrefix: Int
    public var gateway: String?

    public init(bridge: String, pool: IPv4Network, guestPrefix: Int, gateway: String? = nil) {
        self.bridge = bridge
        self.pool = pool
        self.guestPrefix = guestPrefix
        self.gateway = gateway
    }

    /// The first free address of the pool, as `ADDR/PREFIX`.
    func allocate(excluding used: Set<String>) throws -> String {
        let size = UInt32(1) << UInt32(32 - pool.prefix)
        for offset in UInt32(10)..<max(10, size - 1) {
            let address = IPv4Network.format(pool.address + offset)
            if !used.contains(address) { return "\(address)/\(guestPrefix)" }
        }
        throw VireoError(.unavailable, "no free guest address left in \(pool)")
    }

    /// The tap device of a VM: stable, unique per VM, within Linux's 15-character limit. The
    /// prefix `vt.` is how the guest firewall knows guests' taps (`GuestFirewall.guestTaps`): no
    /// other interface Vireo makes has a dot (testbed names are letters and digits).
    static func device(for id: VMID) -> String {
        "vt." + String(QEMUDriver.shortHash(id.rawValue).prefix(10))
    }

    /// Makes the tap (owned by `owner`, QEMU's uid, so that QEMU opens it without privileges)
    /// and puts it on `bridge`. One a killed QEMU left behind is made anew: its owner may differ.
    static func create(_ device: String, bridge: String, owner: UInt32?) async throws {
        await remove(device)
        try await HostTool.run("ip", ["tuntap", "add", "dev", device, "mode", "tap"] + ownerArguments(owner))
        try await HostTool.run("ip", ["link", "set", device, "master", bridge, "up"])
    }

    /// `ip tuntap` arguments that give a tap to `owner` (user and group of that number).
    static func ownerArguments(_ owner: UInt32?) -> [String] {
        owner.map { ["user", "\($0)", "group", "\($0)"] } ?? []
    }

    static func remove(_ device: String) async {
        _ = try? await HostTool.run("ip", ["link", "del", device], acceptedStatus: [0, 1, 2])
    }
}

/// An IPv4 network in CIDR notation.
public struct IPv4Network: Sendable, Equatable, CustomStringConvertible {
    public var address: UInt32
    public var prefix: Int

    public init(_ text: String, field: String) throws(VireoError) {
        let parts = text.split(separator: "/")
        guard parts.count == 2, let prefix = Int(parts[1]), (8...30).contains(prefix),
            let address = Self.parse(String(parts[0]))
        else {
            throw VireoError.invalid(field: field, value: "'\(text)'", "expected an IPv4 network such as 198.18.1.0/24")
        }
        self.address = address & (UInt32.max << UInt32(32 - prefix))
        self.prefix = prefix
    }

    public var description: String { "\(Self.format(address))/\(prefix)" }

    static func parse(_ text: String) -> UInt32? {
        let octets = text.split(separator: ".", omittingEmptySubsequences: false).compactMap { UInt8($0) }
        guard octets.count == 4 else { return nil }
        return octets.reduce(0) { $0 << 8 | UInt32($1) }
    }

    static func format(_ address: UInt32) -> String {
        (0..<4).reversed().map { String((address >> (8 * UInt32($0))) & 0xff) }.joined(separator: ".")
    }
}
