import GRDB

/// Opening Vireo's SQLite files: WAL (a pool), a busy timeout, the durability asked for, and the
/// file's migrator run on every open.
enum SQLiteDatabase {
    /// `synchronous`: `FULL` (an fsync per commit: what the cluster's records need) or `NORMAL`
    /// (durable across a crash of the process; a power cut may lose the last commit).
    static func open(path: String, synchronous: String, migrator: DatabaseMigrator) throws -> any DatabaseWriter {
        var config = Configuration()
        config.busyMode = .timeout(5)
        config.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = \(synchronous)") }
        let writer = try DatabasePool(path: path, configuration: config)
        try migrator.migrate(writer)
        return writer
    }

    /// In memory (tests, what-if runs).
    static func inMemory(migrator: DatabaseMigrator) throws -> any DatabaseWriter {
        let writer = try DatabaseQueue()
        try migrator.migrate(writer)
        return writer
    }
}
