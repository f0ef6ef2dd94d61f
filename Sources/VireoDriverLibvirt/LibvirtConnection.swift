import CLibvirt
import Foundation
import Synchronization
import VireoModel

/// One connection to a libvirt URI and the few C calls the driver makes, each turning libvirt's
/// last error into a `VireoError` with the code that fits it.
///
/// libvirt connections are thread-safe, so the driver's actor may call in from any thread. The
/// calls block (a `qemu:///system` call is a round trip to libvirtd, and the very first connection
/// waits for its capability probe, about 9 s here).
final class LibvirtConnection: @unchecked Sendable {
    let uri: String
    /// The `virConnectPtr`; owned by this object and closed in `deinit`.
    let pointer: OpaquePointer
    private var lifecycleCallback: Int32?

    init(uri: String) throws {
        LibvirtEventLoop.startOnce()
        guard let pointer = virConnectOpen(uri) else {
            throw Self.lastError("cannot connect to libvirt at \(uri)", fallback: .unavailable)
        }
        self.uri = uri
        self.pointer = pointer
    }

    deinit {
        if let lifecycleCallback { virConnectDomainEventDeregisterAny(pointer, lifecycleCallback) }
        virConnectClose(pointer)
    }

    // MARK: Errors

    /// libvirt's last error on this thread, as a `VireoError` saying what was being done.
    static func lastError(_ doing: String, fallback: VireoError.Code = .internal) -> VireoError {
        guard let error = virGetLastError() else { return VireoError(fallback, "\(doing): libvirt gave no reason") }
        let message = error.pointee.message.map { String(cString: $0) } ?? "error code \(error.pointee.code)"
        return VireoError(code(forLibvirtError: error.pointee.code, fallback: fallback), "\(doing): \(message)")
    }

    /// The Vireo code for a `virErrorNumber`.
    static func code(forLibvirtError number: Int32, fallback: VireoError.Code) -> VireoError.Code {
        switch UInt32(bitPattern: number) {
        case VIR_ERR_NO_DOMAIN.rawValue: .notFound
        case VIR_ERR_NO_CONNECT.rawValue, VIR_ERR_RPC.rawValue, VIR_ERR_SYSTEM_ERROR.rawValue: .unavailable
        case VIR_ERR_AUTH_FAILED.rawValue, VIR_ERR_AUTH_CANCELLED.rawValue, VIR_ERR_AUTH_UNAVAILABLE.rawValue,
            VIR_ERR_ACCESS_DENIED.rawValue:
            .unauthorized
        case VIR_ERR_OPERATION_DENIED.rawValue, VIR_ERR_OPERATION_INVALID.rawValue: .failedPrecondition
        case VIR_ERR_NO_SUPPORT.rawValue: .unsupported
        default: fallback
        }
    }

    // MARK: Host

    struct HostFacts {
        /// `QEMU`, `Test`, ...
        var hypervisor: String
        /// The hypervisor's version, `major.minor.release`.
        var hypervisorVersion: String
        var libvirtVersion: String
        var cpus: Int
        var memoryMiB: Int
    }

    func hostFacts() throws -> HostFacts {
        guard let type = virConnectGetType(pointer) else { throw Self.lastError("virConnectGetType") }
        var hypervisorVersion: UInt = 0
        var libraryVersion: UInt = 0
        guard virConnectGetVersion(pointer, &hypervisorVersion) == 0 else { throw Self.lastError("virConnectGetVersion") }
        guard virConnectGetLibVersion(pointer, &libraryVersion) == 0 else {
            throw Self.lastError("virConnectGetLibVersion")
        }
        var node = virNodeInfo()
        guard virNodeGetInfo(pointer, &node) == 0 else { throw Self.lastError("virNodeGetInfo") }
        return HostFacts(
            hypervisor: String(cString: type), hypervisorVersion: Self.version(hypervisorVersion),
            libvirtVersion: Self.version(libraryVersion), cpus: Int(node.cpus), memoryMiB: Int(node.memory / 1024))
    }

    /// The host's busy CPU time (user + kernel, summed over all CPUs, in seconds) from
    /// `virNodeGetCPUStats`: libvirt's host, which for a remote URI is not this machine.
    func hostBusySeconds() throws -> Double {
        let allCPUs = Int32(VIR_NODE_CPU_STATS_ALL_CPUS.rawValue)
        var count: Int32 = 0
        guard virNodeGetCPUStats(pointer, allCPUs, nil, &count, 0) == 0, count > 0 else {
            throw Self.lastError("virNodeGetCPUStats")
        }
        var stats = [virNodeCPUStats](repeating: virNodeCPUStats(), count: Int(count))
        guard virNodeGetCPUStats(pointer, allCPUs, &stats, &count, 0) == 0 else {
            throw Self.lastError("virNodeGetCPUStats")
        }
        var busyNanoseconds: UInt64 = 0
        for stat in stats.prefix(Int(count)) {
            let field = withUnsafeBytes(of: stat.field) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if field == "user" || field == "kernel" { busyNanoseconds += stat.value }
        }
        return Double(busyNanoseconds) / 1e9
    }

    /// libvirt encodes versions as `major * 1_000_000 + minor * 1_000 + release`.
    static func version(_ encoded: UInt) -> String {
        "\(encoded / 1_000_000).\(encoded / 1_000 % 1_000).\(encoded % 1_000)"
    }

    // MARK: Domains

    /// The UUID of the domain called `name`, or nil when libvirt has none.
    func uuid(ofDomainNamed name: String) -> String? {
        guard let domain = virDomainLookupByName(pointer, name) else {
            virResetLastError()
            return nil
        }
        defer { virDomainFree(domain) }
        return try? Self.uuid(of: domain)
    }

    /// Defines (or redefines) a persistent domain; returns its UUID.
    func define(xml: String) throws -> String {
        guard let domain = virDomainDefineXML(pointer, xml) else { throw Self.lastError("defining the domain") }
        defer { virDomainFree(domain) }
        return try Self.uuid(of: domain)
    }

    /// Runs `body` with the domain of `uuid`; `.notFound` when libvirt has no such domain.
    func withDomain<T>(_ uuid: String, _ body: (OpaquePointer) throws -> T) throws -> T {
        guard let domain = virDomainLookupByUUIDString(pointer, uuid) else {
            throw Self.lastError("looking up domain \(uuid)", fallback: .notFound)
        }
        defer { virDomainFree(domain) }
        return try body(domain)
    }

    /// Every domain libvirt has (running or only defined), as UUID and Vireo metadata (nil when the
    /// domain carries none).
    func domainsWithMetadata(namespace: String) throws -> [(uuid: String, metadata: String?)] {
        var list: UnsafeMutablePointer<virDomainPtr?>?
        let count = virConnectListAllDomains(pointer, &list, 0)
        guard count >= 0, let list else { throw Self.lastError("listing domains") }
        defer { free(list) }
        var result: [(uuid: String, metadata: String?)] = []
        for index in 0..<Int(count) {
            guard let domain = list[index] else { continue }
            defer { virDomainFree(domain) }
            guard let uuid = try? Self.uuid(of: domain) else { continue }
            result.append((uuid, Self.metadata(of: domain, namespace: namespace)))
        }
        return result
    }

    static func uuid(of domain: OpaquePointer) throws -> String {
        var buffer = [CChar](repeating: 0, count: Int(VIR_UUID_STRING_BUFLEN))
        guard virDomainGetUUIDString(domain, &buffer) == 0 else { throw lastError("virDomainGetUUIDString") }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The domain's metadata element in `namespace`, or nil when it has none (libvirt then reports
    /// VIR_ERR_NO_DOMAIN_METADATA, which is expected for every domain that is not Vireo's).
    static func metadata(of domain: OpaquePointer, namespace: String) -> String? {
        guard let text = virDomainGetMetadata(domain, Int32(VIR_DOMAIN_METADATA_ELEMENT.rawValue), namespace, 0) else {
            virResetLastError()
            return nil
        }
        defer { free(text) }
        return String(cString: text)
    }

    /// libvirt's view of a domain's state.
    struct DomainState {
        var state: virDomainState
        var reason: Int32
    }

    static func state(of domain: OpaquePointer) throws -> DomainState {
        var state: Int32 = 0
        var reason: Int32 = 0
        guard virDomainGetState(domain, &state, &reason, 0) == 0 else { throw lastError("virDomainGetState") }
        return DomainState(state: virDomainState(UInt32(state)), reason: reason)
    }

    // MARK: Events

    /// Calls `handler` on libvirt's event thread whenever any domain on this connection changes
    /// state (started, stopped, crashed, defined, undefined...). Once per connection.
    func onLifecycleEvent(_ handler: @escaping @Sendable () -> Void) throws {
        precondition(lifecycleCallback == nil, "one lifecycle handler per connection")
        let box = Unmanaged.passRetained(HandlerBox(handler)).toOpaque()
        let callback:
            @convention(c) (
                OpaquePointer?, OpaquePointer?, Int32, Int32, UnsafeMutableRawPointer?
            ) -> Int32 = { _, _, _, _, opaque in
                if let opaque { Unmanaged<HandlerBox>.fromOpaque(opaque).takeUnretainedValue().handler() }
                return 0
            }
        let release: @convention(c) (UnsafeMutableRawPointer?) -> Void = { opaque in
            if let opaque { Unmanaged<HandlerBox>.fromOpaque(opaque).release() }
        }
        // libvirt takes every event callback as the generic type and calls it with the event's own
        // signature (VIR_DOMAIN_EVENT_CALLBACK in C is this same cast).
        let id = virConnectDomainEventRegisterAny(
            pointer, nil, Int32(VIR_DOMAIN_EVENT_ID_LIFECYCLE.rawValue),
            unsafeBitCast(callback, to: virConnectDomainEventGenericCallback.self), box, release)
        guard id >= 0 else {
            Unmanaged<HandlerBox>.fromOpaque(box).release()
            throw Self.lastError("registering for domain lifecycle events")
        }
        lifecycleCallback = id
    }

    private final class HandlerBox: Sendable {
        let handler: @Sendable () -> Void
        init(_ handler: @escaping @Sendable () -> Void) { self.handler = handler }
    }
}

/// libvirt delivers events only to a process that has an event loop registered before its first
/// connection and keeps running it: one thread, for the life of the process.
enum LibvirtEventLoop {
    private static let started = Mutex(false)

    /// Registers the loop and starts its thread, once; every caller returns only once it is
    /// registered. (The registration was made after the lock was let go: a second connection
    /// opened meanwhile — `test:///default` opens at once — found no loop, and registering for its
    /// events failed with "could not initialize domain event timer", seen in a full test run.)
    static func startOnce() {
        started.withLock { started in
            guard !started else { return }
            started = true
            // libvirt prints every error on stderr unless given a handler; the driver reports errors itself.
            virSetErrorFunc(nil) { _, _ in }
            guard virEventRegisterDefaultImpl() == 0 else { return }
            let thread = Thread {
                while true { _ = virEventRunDefaultImpl() }
            }
            thread.name = "libvirt-events"
            thread.start()
        }
    }
}

// MARK: Snapshots

extension LibvirtConnection {
    /// A snapshot of a domain as libvirt lists it.
    struct SnapshotEntry {
        var name: String
        /// When it was taken, in whole seconds since 1970 (libvirt's `creationTime`).
        var created: Int
        /// Vireo's sequence number from its description (`vireo-order N`), which orders snapshots
        /// taken in the same second; nil for one Vireo did not take.
        var order: Int?

        static let orderPrefix = "vireo-order "

        /// The fields of a snapshot's XML description (libvirt's own elements come before the
        /// `<domain>` copy it embeds, which is not read).
        init(name: String, xml: String) {
            let own = xml.range(of: "<domain ").map { String(xml[..<$0.lowerBound]) } ?? xml
            func element(_ tag: String) -> String? {
                guard let open = own.range(of: "<\(tag)>"), let close = own.range(of: "</\(tag)>"),
                    open.upperBound <= close.lowerBound
                else { return nil }
                return String(own[open.upperBound..<close.lowerBound])
            }
            self.name = name
            self.created = element("creationTime").flatMap { Int($0) } ?? 0
            self.order = element("description").flatMap { text in
                text.hasPrefix(Self.orderPrefix) ? Int(text.dropFirst(Self.orderPrefix.count)) : nil
            }
        }
    }

    /// The domain's snapshots in the order they were taken: by creation time, then by Vireo's
    /// sequence number within a second, then by name.
    static func snapshots(of domain: OpaquePointer) throws -> [SnapshotEntry] {
        var list: UnsafeMutablePointer<virDomainSnapshotPtr?>?
        let count = virDomainListAllSnapshots(domain, &list, 0)
        guard count >= 0, let list else { throw lastError("listing snapshots") }
        defer {
            for index in 0..<Int(count) { list[index].map { _ = virDomainSnapshotFree($0) } }
            free(list)
        }
        var entries: [SnapshotEntry] = []
        for index in 0..<Int(count) {
            guard let snapshot = list[index], let name = virDomainSnapshotGetName(snapshot) else { continue }
            guard let xml = virDomainSnapshotGetXMLDesc(snapshot, 0) else {
                throw lastError("reading snapshot '\(String(cString: name))'")
            }
            defer { free(xml) }
            entries.append(SnapshotEntry(name: String(cString: name), xml: String(cString: xml)))
        }
        return entries.sorted { a, b in
            (a.created, a.order ?? 0, a.name) < (b.created, b.order ?? 0, b.name)
        }
    }

    /// Takes a snapshot named `name` with libvirt's defaults for the domain's state and disks (for
    /// a running QEMU domain on qcow2: an internal snapshot holding memory, devices and disks).
    static func createSnapshot(of domain: OpaquePointer, name: String, order: Int, doing: String) throws {
        let xml =
            "<domainsnapshot><name>\(name.xmlEscaped)</name>"
            + "<description>\(SnapshotEntry.orderPrefix)\(order)</description></domainsnapshot>"
        guard let snapshot = virDomainSnapshotCreateXML(domain, xml, VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC.rawValue) else {
            throw lastError(doing)
        }
        virDomainSnapshotFree(snapshot)
    }

    /// Runs `body` with the domain's snapshot `name`; `.notFound` when it has none by that name.
    static func withSnapshot<T>(_ name: String, of domain: OpaquePointer, doing: String, _ body: (OpaquePointer) throws -> T)
        throws -> T
    {
        guard let snapshot = virDomainSnapshotLookupByName(domain, name, 0) else {
            let error = lastError(doing, fallback: .notFound)
            let missing = virGetLastError()?.pointee.code == Int32(VIR_ERR_NO_DOMAIN_SNAPSHOT.rawValue)
            throw missing ? VireoError(.notFound, error.message) : error
        }
        defer { virDomainSnapshotFree(snapshot) }
        return try body(snapshot)
    }

    /// Brings the domain back to `name` and runs it from there, whether it ran or not.
    static func revert(_ domain: OpaquePointer, to name: String, doing: String) throws {
        try withSnapshot(name, of: domain, doing: doing) { snapshot throws in
            guard virDomainRevertToSnapshot(snapshot, VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING.rawValue) == 0 else {
                throw lastError(doing)
            }
        }
    }

    static func deleteSnapshot(_ domain: OpaquePointer, named name: String, doing: String) throws {
        try withSnapshot(name, of: domain, doing: doing) { snapshot throws in
            guard virDomainSnapshotDelete(snapshot, 0) == 0 else { throw lastError(doing) }
        }
    }
}

// MARK: Migration

extension LibvirtConnection {
    /// The domain's definition as libvirt sends it to another host (`VIR_DOMAIN_XML_MIGRATABLE`).
    func migratableXML(of uuid: String) throws -> String {
        try withDomain(uuid) { domain throws in
            guard let text = virDomainGetXMLDesc(domain, UInt32(VIR_DOMAIN_XML_MIGRATABLE.rawValue)) else {
                throw Self.lastError("reading the definition of domain \(uuid)")
            }
            defer { free(text) }
            return String(cString: text)
        }
    }

    /// Sends the running domain `uuid` to the libvirtd at `peerURI` with `virDomainMigrateToURI3`:
    /// this connection's libvirtd connects there itself (`VIR_MIGRATE_PEER2PEER` must be in `flags`),
    /// QEMU sends the memory to `migrationURI`, and the destination defines the domain from
    /// `destinationXML`, with further string `parameters` (`VIR_MIGRATE_PARAM_*`). Blocks until the
    /// migration has completed or failed.
    func migrate(
        _ uuid: String, peerURI: String, migrationURI: String, destinationXML: String,
        parameters: [(String, String)] = [], flags: UInt32
    ) throws {
        var params: UnsafeMutablePointer<virTypedParameter>?
        var count: Int32 = 0
        var capacity: Int32 = 0
        defer { virTypedParamsFree(params, count) }
        for (name, value) in [
            (VIR_MIGRATE_PARAM_URI, migrationURI), (VIR_MIGRATE_PARAM_DEST_XML, destinationXML),
            (VIR_MIGRATE_PARAM_PERSIST_XML, destinationXML),
        ] + parameters {
            guard virTypedParamsAddString(&params, &count, &capacity, name, value) == 0 else {
                throw Self.lastError("virTypedParamsAddString \(name)")
            }
        }
        try withDomain(uuid) { domain throws in
            guard virDomainMigrateToURI3(domain, peerURI, params, UInt32(count), flags) == 0 else {
                throw Self.lastError("libvirt", fallback: .unavailable)
            }
        }
    }

    /// The numeric fields of the domain's job statistics (`virDomainGetJobStats`): of the job under
    /// way, or with `completed` of the last one that completed. Empty when there is no job.
    func jobStats(of uuid: String, completed: Bool) throws -> [String: UInt64] {
        try withDomain(uuid) { domain throws in
            var type: Int32 = 0
            var params: UnsafeMutablePointer<virTypedParameter>?
            var count: Int32 = 0
            let flags = completed ? UInt32(VIR_DOMAIN_JOB_STATS_COMPLETED.rawValue) : 0
            guard virDomainGetJobStats(domain, &type, &params, &count, flags) == 0 else {
                throw Self.lastError("reading the job statistics of domain \(uuid)")
            }
            defer { virTypedParamsFree(params, count) }
            guard let params else { return [:] }
            return Self.numbers(in: UnsafeBufferPointer(start: params, count: Int(count)))
        }
    }

    /// Cancels the domain's job under way (a migration: the domain keeps running here).
    func abortJob(of uuid: String) throws {
        try withDomain(uuid) { domain throws in
            guard virDomainAbortJob(domain) == 0 else { throw Self.lastError("aborting the job of domain \(uuid)") }
        }
    }

    /// Resumes the domain when a failed migration left it paused.
    func resumeIfPaused(_ uuid: String) throws {
        try withDomain(uuid) { domain throws in
            guard try Self.state(of: domain).state == VIR_DOMAIN_PAUSED else { return }
            guard virDomainResume(domain) == 0 else { throw Self.lastError("resuming domain \(uuid)") }
        }
    }

    /// The integer-valued typed parameters by name (strings, doubles and booleans are left out).
    static func numbers(in params: UnsafeBufferPointer<virTypedParameter>) -> [String: UInt64] {
        var result: [String: UInt64] = [:]
        for param in params {
            let name = withUnsafeBytes(of: param.field) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            switch UInt32(bitPattern: param.type) {
            case VIR_TYPED_PARAM_INT.rawValue: result[name] = UInt64(max(0, param.value.i))
            case VIR_TYPED_PARAM_UINT.rawValue: result[name] = UInt64(param.value.ui)
            case VIR_TYPED_PARAM_LLONG.rawValue: result[name] = UInt64(max(0, param.value.l))
            case VIR_TYPED_PARAM_ULLONG.rawValue: result[name] = param.value.ul
            default: continue
            }
        }
        return result
    }
}
