import Foundation
import VireoDriver
import VireoModel
import VireoProcess

/// Private networks: VMs on one reach each other and nothing else.
///
/// Each private network of a driver is a network namespace of its own (`vireo-<state>-<network>`,
/// hashes of the driver's state directory and the network's name) holding `lo` and a bridge
/// `br0`, both up, and the VMs' tap devices on that bridge — and no link to any other namespace.
/// The bridge has the network's `.1`, so that a command run in the namespace (`nsenter --net=`)
/// reaches the guests; nothing else runs there.
/// That missing link is the isolation: these machines have no firewall (nft, iptables) to rely
/// on, and need none. A VM's tap is made in the host's namespace, where QEMU opens it by name,
/// and then moved into the private namespace with QEMU holding it open.
///
/// Guests get addresses without a gateway: private network N of a driver is 198.19.N.0/24
/// (N from 1; 198.18.0.0/15 is set aside for benchmark networks), its guests .10 and up, so an
/// address names one VM on this host. A VM keeps its address in its record across restarts.
/// The namespace is made at a VM's launch when it is missing (the host rebooted) and deleted
/// with the network's last VM.
enum PrivateNetwork {
    /// The first two octets of every private network's addresses.
    static let prefix = "198.19"
    /// Private network numbers (the third octet) and guest numbers (the fourth).
    static let subnets = 1...255
    static let hosts = 10...254
    /// The bridge inside each private namespace.
    static let bridge = "br0"

    /// The namespace of private network `network` of the driver whose state is in `stateDirectory`.
    static func namespace(stateDirectory: String, network: String) -> String {
        namespacePrefix(stateDirectory: stateDirectory) + String(QEMUDriver.shortHash(network).prefix(8))
    }

    /// What the names of the private networks of the driver whose state is in `stateDirectory` begin with.
    static func namespacePrefix(stateDirectory: String) -> String {
        "vireo-\(QEMUDriver.shortHash(stateDirectory).prefix(8))-"
    }

    /// Deletes every private network of the driver whose state is in `stateDirectory`, for one
    /// whose host is being taken down with its VMs killed (`vireo testbed down`): nothing deletes
    /// their VMs, so nothing would delete their networks. Returns the namespaces deleted.
    static func removeAll(stateDirectory: String) async -> [String] {
        let prefix = namespacePrefix(stateDirectory: stateDirectory)
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? []).filter { $0.hasPrefix(prefix) }
        for name in names { _ = try? await HostTool.run("ip", ["netns", "del", name], acceptedStatus: [0, 1]) }
        return names.sorted()
    }

    /// Where `ip netns` keeps a namespace: what `nsenter --net=PATH` and `setns` open.
    static func path(of namespace: String) -> String { "/run/netns/\(namespace)" }

    /// The subnet number of a private guest address (`198.19.N.H/24` → N).
    static func subnet(of address: String) -> Int? {
        let octets = address.split(separator: "/")[0].split(separator: ".")
        guard octets.count == 4, "\(octets[0]).\(octets[1])" == prefix else { return nil }
        return Int(octets[2])
    }

    static func address(subnet: Int, host: Int) -> String { "\(prefix).\(subnet).\(host)" }

    /// Makes the namespace with `lo` and the bridge up and the bridge on `.1` of `subnet`, or
    /// completes one a crash left half-made. Two launches may race to make it: each step accepts
    /// what the other did.
    static func ensure(_ namespace: String, subnet: Int) async throws {
        if !FileManager.default.fileExists(atPath: path(of: namespace)) {
            try await HostTool.run("ip", ["netns", "add", namespace], acceptedStatus: [0, 1])
        }
        guard FileManager.default.fileExists(atPath: path(of: namespace)) else {
            throw VireoError(.internal, "cannot create the network namespace \(namespace) (private networks need root)")
        }
        try await HostTool.run("ip", ["-n", namespace, "link", "set", "lo", "up"])
        try await HostTool.run(
            "ip", ["-n", namespace, "link", "add", bridge, "type", "bridge"], acceptedStatus: [0, 1, 2])
        try await HostTool.run(
            "ip", ["-n", namespace, "addr", "add", "\(address(subnet: subnet, host: 1))/24", "dev", bridge],
            acceptedStatus: [0, 2])
        try await HostTool.run("ip", ["-n", namespace, "link", "set", bridge, "up"])
    }

    /// Creates a tap in the host's namespace for QEMU (uid `owner`) to open; the caller removes
    /// one left behind first.
    static func createTap(_ device: String, owner: UInt32?) async throws {
        try await HostTool.run(
            "ip", ["tuntap", "add", "dev", device, "mode", "tap"] + TapNetwork.ownerArguments(owner),
            acceptedStatus: [0, 1, 2])
    }

    /// Moves a tap QEMU holds open into the namespace and onto its bridge.
    static func attach(_ device: String, to namespace: String) async throws {
        try await HostTool.run("ip", ["link", "set", device, "netns", namespace])
        try await HostTool.run("ip", ["-n", namespace, "link", "set", device, "master", bridge, "up"])
    }

    /// Removes a tap wherever it is: in the namespace (moved there) or still in the host's.
    static func removeTap(_ device: String, namespace: String?) async {
        if let namespace, FileManager.default.fileExists(atPath: path(of: namespace)) {
            _ = try? await HostTool.run("ip", ["-n", namespace, "link", "del", device], acceptedStatus: [0, 1, 2])
        }
        _ = try? await HostTool.run("ip", ["link", "del", device], acceptedStatus: [0, 1, 2])
    }

    static func remove(_ namespace: String) async {
        guard FileManager.default.fileExists(atPath: path(of: namespace)) else { return }
        _ = try? await HostTool.run("ip", ["netns", "del", namespace], acceptedStatus: [0, 1])
    }
}

extension QEMUDriver {
    /// The path of private network `network`'s namespace (`/run/netns/...`), for running a command
    /// on that network: `nsenter --net=PATH curl http://198.19.N.H/`.
    public nonisolated func privateNetworkNamespace(_ network: String) -> String {
        Self.privateNetworkNamespace(stateDirectory: configuration.stateDirectory, network: network)
    }

    /// The path of the namespace of private network `network` of the driver whose state directory
    /// is `stateDirectory`.
    public static func privateNetworkNamespace(stateDirectory: String, network: String) -> String {
        PrivateNetwork.path(of: PrivateNetwork.namespace(stateDirectory: stateDirectory, network: network))
    }

    /// The namespace a VM's tap lives in; nil for VMs on the driver's own network.
    nonisolated func privateNamespace(of record: Record) -> String? {
        record.spec.privateNetwork.map { PrivateNetwork.namespace(stateDirectory: configuration.stateDirectory, network: $0) }
    }

    /// A free address on private network `network`: in the subnet its VMs have, or in the first
    /// subnet no other network of this driver has. Reserves the subnet for creates under way.
    func allocatePrivateAddress(on network: String) throws -> String {
        let records = instances.values.map(\.record)
        let subnet: Int
        if let existing = records.first(where: { $0.spec.privateNetwork == network }).flatMap({ record in
            Self.address(of: record.network).flatMap(PrivateNetwork.subnet(of:))
        }) ?? reservedSubnets[network]?.subnet {
            subnet = existing
        } else {
            let taken = Set(
                records.filter { $0.spec.privateNetwork != nil }.compactMap { record in
                    Self.address(of: record.network).flatMap(PrivateNetwork.subnet(of:))
                }
            ).union(reservedSubnets.values.map(\.subnet))
            guard let free = PrivateNetwork.subnets.first(where: { !taken.contains($0) }) else {
                throw VireoError(
                    .unavailable, "privateNetwork: this host has no subnet left for network '\(network)' (all 255 in use)")
            }
            subnet = free
        }
        let used = Set(instances.values.compactMap { Self.address(of: $0.record.network) }).union(reservedAddresses)
        guard let host = PrivateNetwork.hosts.first(where: { !used.contains(PrivateNetwork.address(subnet: subnet, host: $0)) })
        else {
            throw VireoError(.unavailable, "privateNetwork: network '\(network)' has no guest address left")
        }
        return "\(PrivateNetwork.address(subnet: subnet, host: host))/24"
    }

    /// Prepares a private VM's network before QEMU starts: the namespace (made again after a host
    /// reboot), no tap of an earlier run left in it, a tap in the host's namespace for QEMU.
    func preparePrivateTap(_ device: String, address: String, namespace: String, owner: UInt32?) async throws {
        guard let subnet = PrivateNetwork.subnet(of: address) else {
            throw VireoError(.internal, "the private guest address \(address) is not in \(PrivateNetwork.prefix).0.0/16")
        }
        try await PrivateNetwork.ensure(namespace, subnet: subnet)
        await PrivateNetwork.removeTap(device, namespace: namespace)
        try await PrivateNetwork.createTap(device, owner: owner)
    }

    /// After a VM is forgotten: its tap goes, and a private network's namespace with its last VM.
    func releaseNetwork(of record: Record) async {
        guard case .tap(let device, _, _) = record.network else { return }
        let namespace = privateNamespace(of: record)
        await PrivateNetwork.removeTap(device, namespace: namespace)
        guard let network = record.spec.privateNetwork, let namespace else { return }
        let inUse =
            instances.values.contains { $0.record.spec.privateNetwork == network } || reservedSubnets[network] != nil
        if !inUse { await PrivateNetwork.remove(namespace) }
    }
}
