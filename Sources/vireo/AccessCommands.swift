import ArgumentParser
import Foundation
import VireoAPI
import VireoHTTP
import VireoModel

struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token", abstract: "API tokens with a role: make, list and revoke them (admin only).",
        discussion: """
            Roles: admin (everything), operator (VM and context lifecycle, migrations, executed \
            plans), viewer (reads), owner (changes only the applications it names and their VMs), \
            agent (registers a host and heartbeats, as join.token). A request beyond its token's role \
            is refused with 403, on loopback too; a request without a token on loopback is admin's. \
            docs/security.md has the whole table.
            """,
        subcommands: [TokenCreate.self, TokenList.self, TokenRevoke.self, TokenRotate.self])
}

struct TokenCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create", abstract: "Make a token; prints its secret, which is shown this once.",
        discussion: """
            The secret goes to standard output alone (the rest to standard error), so \
            `export VIREO_TOKEN=$(vireo token create ci --role operator)` keeps it. Only its SHA-256 \
            is stored: a lost secret cannot be shown again; revoke the token and make another.
            Examples: vireo token create ci --role operator --expires 30d; \
            vireo token create shop-team --role owner --app shop --app shop-db
            """)

    @Argument(help: "Its name: lowercase letters, digits and '-', unique among all tokens ever made.") var name: String
    @Option(help: ArgumentHelp("admin, operator, viewer, owner or agent.", valueName: "role")) var role: String
    @Option(
        name: .customLong("app"),
        help: ArgumentHelp("For --role owner (at least one): an application it may change; repeat for more.", valueName: "app"))
    var apps: [String] = []
    @Option(
        help: ArgumentHelp(
            "When it stops working: a duration from now (12h, 30d) or an RFC 3339 time. Default: never.",
            valueName: "when"))
    var expires: String?
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        guard let role = AccessRole(rawValue: role) else {
            throw VireoError.invalid(field: "--role", value: "'\(role)'", "expected one of \(AccessRole.names)")
        }
        var expiresAt: Date?
        if let expires {
            if let seconds = DurationText.seconds(expires), seconds > 0 {
                expiresAt = Date().addingTimeInterval(seconds)
            } else if let date = try? Date(expires, strategy: .iso8601) {
                expiresAt = date
            } else {
                throw VireoError.invalid(
                    field: "--expires", value: "'\(expires)'", "expected a duration (12h, 30d) or an RFC 3339 time")
            }
        }
        let created = try await client.client().createToken(
            TokenRequest(name: name, role: role, apps: apps, expiresAt: expiresAt))
        if output.output == .json { return try printJSON(created) }
        let token = created.token
        stderr(
            "Token \(token.name) (\(token.role.rawValue)\(token.apps.isEmpty ? "" : ": " + token.apps.joined(separator: ", ")))"
                + " made\(token.expiresAt.map { ", expires \($0.formatted(.iso8601))" } ?? ""). Its secret, shown this once:")
        print(created.secret)
    }
}

struct TokenList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "Every token, revoked and expired ones included (never their secrets).")

    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let list = try await client.client().tokens()
        if output.output == .json { return try printJSON(list.items) }
        printTable(
            ["NAME", "ROLE", "APPS", "STATUS", "AGE", "EXPIRES"],
            list.items.map { token in
                [
                    token.name, token.role.rawValue, token.apps.isEmpty ? "-" : token.apps.joined(separator: ","),
                    token.status.rawValue, age(since: token.createdAt), token.expiresAt?.formatted(.iso8601) ?? "never",
                ]
            })
    }
}

struct TokenRevoke: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revoke", abstract: "Revoke a token: it is refused from now on, and its name is not given again.")

    @Argument(help: "The token's name.") var name: String
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let token = try await client.client().revokeToken(name)
        if output.output == .json { return try printJSON(token) }
        print("Token \(token.name) revoked.")
    }
}

struct TokenRotate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rotate",
        abstract: "Replace one of the controller's own tokens (admin or join) with a new one; prints it, shown this once.",
        discussion: """
            The controller's own tokens are rotated: admin (admin.token) and join (join.token, the \
            token agents join with). The old one is refused from now on; the new one is written to \
            the controller's file and, on PostgreSQL, to the database, where the other controllers \
            take it (a standby at its next snapshot, any controller when it takes over or starts). \
            After rotating admin, use the new token (it is the answer). Agents that have their \
            certificates (--tls-auto) keep them; an agent of a controller without --tls-auto speaks \
            with the join token and must be restarted with the new one. A token of the store is \
            revoked and made again instead (vireo token revoke, vireo token create). Admin only.
            Examples: vireo token rotate join; export VIREO_TOKEN=$(vireo token rotate admin)
            """)

    @Argument(help: "The token to rotate: admin or join.") var name: String
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard AccessTokens.Kind(rawValue: name) != nil else {
            let kinds = AccessTokens.Kind.allCases.map(\.rawValue).joined(separator: " and ")
            throw ValidationError(
                "only the controller's own tokens, \(kinds), are rotated ('\(name)' given): "
                    + "a token of the store is revoked and made again")
        }
    }

    func run() async throws {
        let rotated = try await client.client().rotateToken(name)
        if output.output == .json { return try printJSON(rotated) }
        stderr("Token \(name) rotated: the old one is refused from now on. The new one, shown this once:")
        print(rotated.secret)
    }
}

struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit", abstract: "Who changed what, and when: the audit trail (admin only).",
        discussion: """
            Every request that changed or tried to change state: who (the token's name; loopback for \
            a request without a token on loopback), its role, the method and path, the answer's \
            status and the request ID its answer carried. Refusals are there too. Agents' traffic \
            and applications' samples are not. Oldest first; --limit keeps the newest.
            Examples: vireo audit --since 1h; vireo audit --since 2026-12-01T00:00:00Z -o json
            """)

    @Option(
        help: ArgumentHelp("Only entries since: a duration back from now (15m, 1h, 7d) or an RFC 3339 time.", valueName: "when"))
    var since: String?
    @Option(help: ArgumentHelp("At most this many, the newest (1 to 10000).", valueName: "n")) var limit: Int = 100
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        guard (1...10_000).contains(limit) else {
            throw VireoError.invalid(field: "--limit", value: "\(limit)", "must be from 1 to 10000")
        }
        // A bare duration is back from now, as the API's -DURATION.
        let query = since.map { DurationText.seconds($0) != nil ? "-\($0)" : $0 }
        let list = try await client.client().audit(since: query, limit: limit)
        if output.output == .json { return try printJSON(list.items) }
        printTable(
            ["TIME", "WHO", "ROLE", "REQUEST", "STATUS", "REQUEST ID"],
            list.items.map { entry in
                [
                    entry.at.formatted(.iso8601), entry.who, entry.role.rawValue, "\(entry.method) \(entry.path)",
                    entry.error.map { "\(entry.status) \($0)" } ?? "\(entry.status)", entry.requestId,
                ]
            })
    }
}
