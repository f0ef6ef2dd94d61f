import Foundation
import PostgresNIO
import VireoModel

/// Who leads the controllers sharing one database, as the lease row says.
public struct LeaderLease: Sendable, Equatable {
    /// The holder's identity: its name and a random suffix per start, so a restarted controller
    /// is a new holder with a new term.
    public var holder: String
    /// Where the holder serves the API (what standbys send clients to).
    public var url: String
    /// The fencing token: raised each time the lease changes hands, never lowered.
    public var term: Int64
    /// Whether the lease was still running when it was read.
    public var live: Bool

    public init(holder: String, url: String, term: Int64, live: Bool) {
        self.holder = holder
        self.url = url
        self.term = term
        self.live = live
    }
}

extension PostgresStore {
    /// Takes the lease for `holder` if it is free (never held, or expired) or renews it if
    /// `holder` has it, for `ttl` from the database's clock; returns the lease as it stands
    /// afterwards, whoever holds it. The term is raised when the holder changes.
    public func claimLease(holder: String, url: String, ttl: Duration) async throws -> LeaderLease {
        let ms = Int64(ttl / .milliseconds(1))
        return try await connection { c in
            let rows = try await c.query(
                """
                INSERT INTO leader_lease (id, holder, url, term, expires_at)
                VALUES (1, \(holder), \(url), 1, now() + \(ms) * interval '1 millisecond')
                ON CONFLICT (id) DO UPDATE SET holder = EXCLUDED.holder, url = EXCLUDED.url,
                    term = leader_lease.term + CASE WHEN leader_lease.holder = EXCLUDED.holder THEN 0 ELSE 1 END,
                    expires_at = EXCLUDED.expires_at
                WHERE leader_lease.holder = EXCLUDED.holder OR leader_lease.expires_at < now()
                """, logger: self.logger)
            _ = try await rows.collect()
            return try await self.lease(c) ?? LeaderLease(holder: "", url: "", term: 0, live: false)
        }
    }

    /// The lease as it stands; nil if no controller ever held it.
    public func currentLease() async throws -> LeaderLease? {
        try await connection { c in try await self.lease(c) }
    }

    /// Gives the lease up at once (a controller that stops cleanly), if `holder` still has it.
    public func releaseLease(holder: String) async throws {
        try await connection { c in
            _ = try await c.query(
                "UPDATE leader_lease SET expires_at = now() - interval '1 second' WHERE id = 1 AND holder = \(holder)",
                logger: self.logger
            ).collect()
        }
    }

    private func lease(_ c: PostgresConnection) async throws -> LeaderLease? {
        let rows = try await c.query(
            "SELECT holder, url, term, expires_at > now() FROM leader_lease WHERE id = 1", logger: logger)
        for try await (holder, url, term, live) in rows.decode((String, String, Int64, Bool).self) {
            return LeaderLease(holder: holder, url: url, term: term, live: live)
        }
        return nil
    }

    /// In the transaction on `c`: refuses the write unless the fenced holder still holds the
    /// lease with its term and the lease has not run out. `FOR SHARE` keeps another controller
    /// from taking the lease until this transaction ends, so no write of a deposed leader lands
    /// after its successor's first.
    func checkFence(_ fence: StoreFence, _ c: PostgresConnection) async throws {
        let rows = try await c.query(
            "SELECT holder, term, expires_at > now() FROM leader_lease WHERE id = 1 FOR SHARE", logger: logger)
        var found: (String, Int64, Bool)?
        for try await row in rows.decode((String, Int64, Bool).self) { found = row }
        guard let (holder, term, live) = found, holder == fence.holder, term == fence.term, live else {
            let now = found.map { "held by \($0.0) in term \($0.1)\($0.2 ? "" : ", expired")" } ?? "not held"
            throw VireoError(
                .unavailable,
                "this controller no longer leads (its term was \(fence.term); the lease is \(now)): the write is refused")
        }
    }
}

/// The holder and term a store's writes are fenced with.
public struct StoreFence: Sendable, Equatable {
    public var holder: String
    public var term: Int64
    public init(holder: String, term: Int64) {
        self.holder = holder
        self.term = term
    }
}
