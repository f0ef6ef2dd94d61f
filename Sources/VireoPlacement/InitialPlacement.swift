import VireoModel

/// The result of placing one VM: the chosen host (if any) and a verdict for every host.
public struct PlacementDecision: Sendable, Equatable {
    public var chosen: HostID?
    /// One verdict per host of the snapshot, in snapshot order.
    public var verdicts: [HostVerdict]

    public var chosenVerdict: HostVerdict? {
        guard let chosen else { return nil }
        return verdicts.first { $0.hostID == chosen }
    }
}

/// Initial placement: filter hosts that cannot take the VM, score the rest, take the best.
///
/// Pure and synchronous: the same snapshot and request always give the same decision, so a
/// plan can be computed, shown (`--explain`) and checked before anything is changed.
public enum InitialPlacement {
    public static func place(
        _ request: PlacementRequest, in snapshot: ClusterSnapshot, settings: PlacementSettings = .init()
    ) -> PlacementDecision {
        var verdicts: [HostVerdict] = []
        verdicts.reserveCapacity(snapshot.hosts.count)
        var best: (index: Int, score: Double)?
        for host in snapshot.hosts {
            let verdict = evaluate(request, on: host, settings: settings)
            if let score = verdict.score {
                // Ties go to the earlier host in snapshot order (callers sort by name), so the
                // decision is deterministic.
                if best == nil || score.total > best!.score {
                    best = (verdicts.count, score.total)
                }
            }
            verdicts.append(verdict)
        }
        return PlacementDecision(chosen: best.map { verdicts[$0.index].hostID }, verdicts: verdicts)
    }

    /// The verdict for one host: the first filter it fails, or its score.
    public static func evaluate(
        _ request: PlacementRequest, on host: HostSnapshot, settings: PlacementSettings
    ) -> HostVerdict {
        func filtered(_ reason: FilterReason) -> HostVerdict {
            HostVerdict(hostID: host.id, hostName: host.name, filtered: reason)
        }
        if let pinned = request.pinnedHost, pinned != host.name { return filtered(.notPinnedHost(pinned: pinned)) }
        if host.state != .ready { return filtered(.hostNotReady(state: host.state)) }
        let missing = request.requiredCapabilities.subtracting(host.capabilities)
        if let first = missing.first { return filtered(.missingCapability(first)) }
        let cpuCapacity = Int((Double(host.cpus) * settings.cpuOvercommit).rounded(.down))
        let memoryCapacity = Int((Double(host.memoryMiB) * settings.memoryOvercommit).rounded(.down))
        let freeCPU = max(0, cpuCapacity - host.allocatedCPUs)
        let freeMemory = max(0, memoryCapacity - host.allocatedMemoryMiB)
        if request.cpus > freeCPU { return filtered(.insufficientCPU(requested: request.cpus, free: freeCPU)) }
        if request.memoryMiB > freeMemory {
            return filtered(.insufficientMemory(requestedMiB: request.memoryMiB, freeMiB: freeMemory))
        }
        let cpuFreeAfter = cpuCapacity > 0 ? Double(freeCPU - request.cpus) / Double(cpuCapacity) : 0
        let memoryFreeAfter = memoryCapacity > 0 ? Double(freeMemory - request.memoryMiB) / Double(memoryCapacity) : 0
        // Spread: prefer the host that keeps the most headroom on its scarcer resource, with the
        // average as a tie-breaker. Spreading leaves room for VMs to grow and for migrations.
        let total = 0.75 * min(cpuFreeAfter, memoryFreeAfter) + 0.25 * (cpuFreeAfter + memoryFreeAfter) / 2
        return HostVerdict(
            hostID: host.id, hostName: host.name,
            score: HostScore(cpuFreeAfter: cpuFreeAfter, memoryFreeAfter: memoryFreeAfter, total: total))
    }
}
