import Foundation

/// The commands a live migration without shared storage needs, as libvirt's copy-storage uses
/// them: the destination exports its new, empty disk over NBD; the source mirrors its disk into
/// that export while the guest runs (a block job that, once `ready`, keeps both in step), moves the
/// memory, and cancels the mirror once the guest is paused for good.
extension QMP {
    /// A TCP address as QMP's `SocketAddress` (`{"type":"inet","host":…,"port":"…"}`).
    public struct InetAddress: Encodable, Sendable, Equatable {
        public var type = "inet"
        public var host: String
        /// QMP takes the port as a string.
        public var port: String
        public init(host: String, port: Int) {
            self.host = host
            self.port = String(port)
        }
    }

    // MARK: Destination: the NBD export

    /// Starts QEMU's NBD server on `addr`; `block-export-add` then offers nodes through it. This
    /// command takes the older form of an address, `{"type":"inet","data":{…}}`.
    public struct NBDServerStart: QMPCommand {
        public static let name = "nbd-server-start"
        public struct Arguments: Encodable, Sendable, Equatable {
            public var addr: LegacyAddress
            /// TLS with this `tls-creds-x509` object (server end), and only for the client that
            /// `authz-simple` object `tlsAuthz` names.
            public var tlsCreds: String?
            public var tlsAuthz: String?
            enum CodingKeys: String, CodingKey {
                case addr
                case tlsCreds = "tls-creds"
                case tlsAuthz = "tls-authz"
            }
        }
        public struct LegacyAddress: Encodable, Sendable, Equatable {
            public var type = "inet"
            public var data: InetData
        }
        public struct InetData: Encodable, Sendable, Equatable {
            public var host: String
            public var port: String
        }
        public var arguments: Arguments
        public init(host: String, port: Int, tlsCreds: String? = nil, tlsAuthz: String? = nil) {
            arguments = Arguments(
                addr: LegacyAddress(data: InetData(host: host, port: String(port))), tlsCreds: tlsCreds,
                tlsAuthz: tlsAuthz)
        }
    }

    public struct NBDServerStop: QMPCommand {
        public static let name = "nbd-server-stop"
        public init() {}
    }

    /// Exports block node `nodeName` over the NBD server under the node's name. `writable`: the
    /// source's mirror writes into it.
    public struct BlockExportAdd: QMPCommand {
        public static let name = "block-export-add"
        public struct Arguments: Encodable, Sendable, Equatable {
            public var type = "nbd"
            public var id: String
            public var nodeName: String
            public var writable: Bool
            enum CodingKeys: String, CodingKey {
                case type, id, writable
                case nodeName = "node-name"
            }
        }
        public var arguments: Arguments
        public init(id: String, nodeName: String, writable: Bool) {
            arguments = Arguments(id: id, nodeName: nodeName, writable: writable)
        }
    }

    public struct BlockExportDel: QMPCommand {
        public static let name = "block-export-del"
        public struct Arguments: Encodable, Sendable, Equatable {
            public var id: String
        }
        public var arguments: Arguments
        public init(id: String) { arguments = Arguments(id: id) }
    }

    /// Starts receiving a migration on `uri` (QEMU was started with `-incoming defer`, so that the
    /// NBD export could be set up first).
    public struct MigrateIncoming: QMPCommand {
        public static let name = "migrate-incoming"
        public struct Arguments: Encodable, Sendable, Equatable {
            public var uri: String
        }
        public var arguments: Arguments
        public init(uri: String) { arguments = Arguments(uri: uri) }
    }

    // MARK: Source: the mirror

    /// Opens the destination's export as block node `nodeName` (QEMU's NBD client).
    public struct BlockdevAddNBD: QMPCommand {
        public static let name = "blockdev-add"
        public struct Arguments: Encodable, Sendable, Equatable {
            public var driver = "nbd"
            public var nodeName: String
            public var server: InetAddress
            public var export: String
            /// TLS with this `tls-creds-x509` object (client end); QEMU checks the server's
            /// certificate against `server.host`.
            public var tlsCreds: String?
            enum CodingKeys: String, CodingKey {
                case driver, server, export
                case nodeName = "node-name"
                case tlsCreds = "tls-creds"
            }
        }
        public var arguments: Arguments
        public init(nodeName: String, host: String, port: Int, export: String, tlsCreds: String? = nil) {
            arguments = Arguments(
                nodeName: nodeName, server: InetAddress(host: host, port: port), export: export, tlsCreds: tlsCreds)
        }
    }

    public struct BlockdevDel: QMPCommand {
        public static let name = "blockdev-del"
        public struct Arguments: Encodable, Sendable, Equatable {
            public var nodeName: String
            enum CodingKeys: String, CodingKey { case nodeName = "node-name" }
        }
        public var arguments: Arguments
        public init(nodeName: String) { arguments = Arguments(nodeName: nodeName) }
    }

    /// Copies all of `device` (its backing chain included: `sync: full`) into `target`, then keeps
    /// the two in step: every guest write goes to both until the job is cancelled or completed.
    public struct BlockdevMirror: QMPCommand {
        public static let name = "blockdev-mirror"
        public struct Arguments: Encodable, Sendable, Equatable {
            public var jobID: String
            public var device: String
            public var target: String
            public var sync = "full"
            /// The job stays `concluded` until dismissed, so its error can be read.
            public var autoDismiss = false
            enum CodingKeys: String, CodingKey {
                case device, target, sync
                case jobID = "job-id"
                case autoDismiss = "auto-dismiss"
            }
        }
        public var arguments: Arguments
        public init(jobID: String, device: String, target: String) {
            arguments = Arguments(jobID: jobID, device: device, target: target)
        }
    }

    /// Block jobs with their progress: `offset` of `len` bytes copied.
    public struct QueryBlockJobs: QMPCommand {
        public static let name = "query-block-jobs"
        public typealias Response = [BlockJobInfo]
        public init() {}
    }

    public struct BlockJobInfo: Decodable, Sendable, Equatable {
        public var device: String
        public var type: String
        public var len: UInt64
        public var offset: UInt64
        /// A mirror is ready once source and target hold the same data.
        public var ready: Bool
        public var status: JobStatus
        public var error: String?
    }

    /// Ends a block job. A `ready` mirror cancelled this way completes cleanly without switching
    /// the guest over to the target: what the source does once its guest has left.
    public struct BlockJobCancel: QMPCommand {
        public static let name = "block-job-cancel"
        public struct Arguments: Encodable, Sendable, Equatable {
            public var device: String
        }
        public var arguments: Arguments
        public init(device: String) { arguments = Arguments(device: device) }
    }
}
