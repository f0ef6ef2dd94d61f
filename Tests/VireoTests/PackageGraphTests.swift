import Foundation
import Subprocess
import Testing

/// The target graph keeps dependencies pointing inward: the wire types, the client and the
/// driver protocol link no store and no image builder, and placement is pure.
@Suite("Package graph")
struct PackageGraphTests {
    /// Target name -> its direct dependencies (targets by name, products as "package/product").
    static func graph() async throws -> [String: [String]] {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
        let result = try await Subprocess.run(
            // Its own scratch path: `swift test` holds the lock on the package's own .build.
            .name("swift"),
            arguments: ["package", "--package-path", root, "--scratch-path", temporaryDirectory(), "dump-package"],
            output: .data(limit: 1 << 24), error: .string(limit: 1 << 16))
        #expect(result.terminationStatus.isSuccess, "swift package dump-package: \(result.standardError)")
        struct Manifest: Decodable {
            struct Target: Decodable {
                var name: String
                var dependencies: [[String: [String?]]]
            }
            var targets: [Target]
        }
        let manifest = try JSONDecoder().decode(Manifest.self, from: result.standardOutput)
        return Dictionary(
            uniqueKeysWithValues: manifest.targets.map { target in
                (
                    target.name,
                    target.dependencies.compactMap { dependency -> String? in
                        if let name = dependency["byName"]?.first ?? dependency["target"]?.first { return name }
                        if let product = dependency["product"], product.count > 1, let name = product[0], let package = product[1]
                        {
                            return "\(package)/\(name)"
                        }
                        return nil
                    }
                )
            })
    }

    static func closure(of target: String, in graph: [String: [String]]) -> Set<String> {
        var seen: Set<String> = []
        var queue = graph[target] ?? []
        while let next = queue.popLast() {
            guard seen.insert(next).inserted else { continue }
            queue += graph[next] ?? []
        }
        return seen
    }

    @Test("the API types, the client and the driver protocol link no store, image builder or GRDB")
    func thinTargets() async throws {
        let graph = try await Self.graph()
        let forbidden: Set = ["VireoStore", "VireoTelemetryStore", "VireoImage", "GRDB.swift/GRDB"]
        for target in ["VireoAPI", "VireoClient", "VireoDriver"] {
            #expect(graph[target] != nil, "\(target) is not in Package.swift")
            let reached = Self.closure(of: target, in: graph)
            #expect(reached.isDisjoint(with: forbidden), "\(target) reaches \(reached.intersection(forbidden).sorted())")
        }
    }

    @Test("placement depends on the model alone")
    func placementIsPure() async throws {
        let graph = try await Self.graph()
        #expect(graph["VireoPlacement"] == ["VireoModel"])
    }

    @Test("the migration authority depends on the model and the crypto libraries alone; drivers and agents not at all")
    func securityIsSmall() async throws {
        let graph = try await Self.graph()
        #expect(
            Set(graph["VireoSecurity"] ?? [])
                == ["VireoModel", "swift-certificates/X509", "swift-crypto/Crypto", "swift-asn1/SwiftASN1"])
        // Hosts get credentials, never the authority's key: the tunnel they carry a migration
        // through is a module of its own.
        for target in ["VireoDriver", "VireoDriverQEMU", "VireoAgent", "VireoAPI", "VireoTunnel"] {
            #expect(!Self.closure(of: target, in: graph).contains("VireoSecurity"), "\(target) reaches VireoSecurity")
        }
        #expect(Self.closure(of: "VireoDriverQEMU", in: graph).contains("VireoTunnel"))
    }
}
