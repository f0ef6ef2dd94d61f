import Benchmark
import Crypto
import Foundation
import VireoModel
import VireoSecurity
import X509

/// What the controller does when a secured move starts: both ends' credentials, from an authority
/// made for that move alone (`MigrationAuthority.issue`): three P-256 keys, the authority's
/// self-signed certificate and the two ends' certificates, each as PEM. Beside it, for comparison,
/// what it did before with one standing authority for every move: two keys and two certificates.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .cpuTotal, .mallocCountTotal],
        timeUnits: .microseconds,
        maxDuration: .seconds(10),
        maxIterations: 2_000
    )
    let authority = MigrationAuthority()
    Benchmark("issue a move's credentials (an authority per move)") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try authority.issue(migration: .generate(), listener: .destination, address: "198.18.0.2"))
        }
    }
    let standing = try? CertificateAuthority(name: "Vireo migration authority")
    Benchmark("issue a move's credentials (one standing authority, as before)") { benchmark in
        guard let standing else { return }
        for _ in benchmark.scaledIterations {
            for (role, names) in [("source", [String]()), ("destination", ["198.18.0.2"])] {
                let key = P256.Signing.PrivateKey()
                let certificate = try standing.sign(
                    Certificate.PublicKey(key.publicKey), commonName: "vireo-migration-\(UUID())-\(role)", names: names,
                    use: .both, validity: MigrationAuthority.validity)
                blackHole((try certificate.serializeAsPEM().pemString, key.pemRepresentation, standing.certificatePEM))
            }
        }
    }
}
