import Foundation
import Hummingbird
import VireoModel

/// Bearer tokens required when the API listens beyond loopback. `admin` may do everything;
/// `join` lets an agent register and heartbeat, nothing else.
public struct AccessTokens: Sendable, Equatable {
    public var admin: String
    public var join: String

    public init(admin: String, join: String) {
        self.admin = admin
        self.join = join
    }

    /// Reads the tokens from `directory`, creating them (mode 0600) on first start.
    /// Returns the tokens and whether they were created now.
    public static func loadOrCreate(in directory: String) throws -> (tokens: AccessTokens, created: Bool) {
        let fm = FileManager.default
        try fm.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var created = false
        func token(_ file: String) throws -> String {
            let path = (directory as NSString).appendingPathComponent(file)
            if let text = try? String(contentsOfFile: path, encoding: .utf8) {
                let value = text.trimmingCharacters(in: .whitespacesAndNewlines)
                if !value.isEmpty { return value }
            }
            var generator = SystemRandomNumberGenerator()
            let value = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
            guard fm.createFile(atPath: path, contents: Data((value + "\n").utf8), attributes: [.posixPermissions: 0o600])
            else { throw VireoError(.internal, "cannot write \(path)") }
            created = true
            return value
        }
        let tokens = AccessTokens(admin: try token("admin.token"), join: try token("join.token"))
        return (tokens, created)
    }
}

/// Checks the bearer token on every request except `/healthz`, `/openapi.json` and the console's
/// files (`/`, `/console/…`).
/// Never logs a token.
struct TokenAuthMiddleware<Context: RequestContext>: RouterMiddleware {
    let tokens: AccessTokens

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response
    {
        let path = request.uri.path
        if path == "/healthz" || path == "/openapi.json" || ConsoleFiles.isPublic(path) {
            return try await next(request, context)
        }
        guard let header = request.headers[.authorization], header.hasPrefix("Bearer ") else {
            throw VireoError(.unauthorized, "missing bearer token; pass --token or set VIREO_TOKEN")
        }
        let presented = String(header.dropFirst("Bearer ".count))
        let isAgentPath = path.hasPrefix("/v1/agent/")
        guard Self.constantTimeEqual(presented, tokens.admin) || (isAgentPath && Self.constantTimeEqual(presented, tokens.join))
        else {
            throw VireoError(.unauthorized, "invalid token")
        }
        return try await next(request, context)
    }

    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8)
        let y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var difference: UInt8 = 0
        for i in 0..<x.count { difference |= x[i] ^ y[i] }
        return difference == 0
    }
}
