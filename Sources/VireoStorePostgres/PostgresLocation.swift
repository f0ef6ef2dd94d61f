import Foundation
import VireoModel

/// Where a PostgreSQL database is, from a `postgres://` URL:
/// `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=disable|prefer|require|verify-full]`, or a Unix
/// socket's directory as `?host=/run/postgresql`. As libpq reads it, less what Vireo has no use for.
public struct PostgresLocation: Sendable, Equatable, CustomStringConvertible {
    /// As libpq's: `prefer` and `require` encrypt without checking the server's certificate
    /// (`prefer` also takes a server without TLS); `verify-full` checks it against the system's
    /// trusted authorities and the host name.
    public enum TLSMode: String, Sendable {
        case disable, prefer, require
        case verifyFull = "verify-full"
    }

    public var host: String
    public var port: Int
    /// The directory of the server's Unix socket, instead of TCP to `host`.
    public var socketDirectory: String?
    public var user: String
    public var password: String?
    public var database: String
    public var tls: TLSMode

    public init(
        host: String = "127.0.0.1", port: Int = 5432, socketDirectory: String? = nil, user: String = "postgres",
        password: String? = nil, database: String = "postgres", tls: TLSMode = .prefer
    ) {
        self.host = host
        self.port = port
        self.socketDirectory = socketDirectory
        self.user = user
        self.password = password
        self.database = database
        self.tls = tls
    }

    /// Whether `text` names a PostgreSQL database rather than a file.
    public static func isURL(_ text: String) -> Bool { text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") }

    /// Parses `text`; errors name `field` and the URL with its password hidden.
    public init(url text: String, field: String = "--store") throws {
        let shown = Self.redacted(text)
        func invalid(_ why: String) -> VireoError { VireoError.invalid(field: field, value: "'\(shown)'", why) }
        guard Self.isURL(text), let url = URLComponents(string: text) else {
            throw invalid("expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE")
        }
        self.init()
        if let host = url.host, !host.isEmpty {
            self.host = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        }
        if let port = url.port {
            guard (1...65535).contains(port) else { throw invalid("the port must be from 1 to 65535") }
            self.port = port
        }
        if let user = url.user, !user.isEmpty { self.user = user.removingPercentEncoding ?? user }
        password = url.password?.removingPercentEncoding ?? url.password
        let path = url.path.hasPrefix("/") ? String(url.path.dropFirst()) : url.path
        if !path.isEmpty {
            guard !path.contains("/") else { throw invalid("the database name is one path segment: '\(path)'") }
            database = path.removingPercentEncoding ?? path
        }
        for item in url.queryItems ?? [] {
            let value = item.value ?? ""
            switch item.name {
            case "sslmode":
                guard let mode = TLSMode(rawValue: value) else {
                    throw invalid("sslmode must be disable, prefer, require or verify-full, not '\(value)'")
                }
                tls = mode
            case "host":
                guard value.hasPrefix("/") else { throw invalid("host= in the query names a socket directory: '\(value)'") }
                socketDirectory = value
            case "user": user = value
            case "password": password = value
            default: throw invalid("unknown parameter '\(item.name)' (known: sslmode, host, user, password)")
            }
        }
    }

    /// The URL with its password replaced by `***`, for messages and logs.
    public static func redacted(_ text: String) -> String {
        guard var url = URLComponents(string: text) else { return text }
        if url.password != nil { url.password = "***" }
        if let items = url.queryItems, items.contains(where: { $0.name == "password" }) {
            url.queryItems = items.map { $0.name == "password" ? URLQueryItem(name: "password", value: "***") : $0 }
        }
        return url.string ?? text
    }

    /// Where it is, without the password.
    public var description: String {
        let place = socketDirectory.map { "\($0)/.s.PGSQL.\(port)" } ?? "\(host.contains(":") ? "[\(host)]" : host):\(port)"
        return "postgres://\(user)@\(place)/\(database)"
    }
}
