import Foundation
import HummingbirdTesting
import Testing
import VireoAPI
import VireoModel

/// Random input to every endpoint that takes a body, and to the manifest parser directly:
/// never a crash, never a 5xx, always a 4xx with the envelope — and nothing stored changes.
@Suite("Fuzzing bad input")
struct FuzzTests {
    /// Deterministic, so a failure can be replayed with the same seed.
    struct Random: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static let validVM = #"{"name":"fuzz","image":"tiny","cpus":1,"memory":"128MiB"}"#
    static let validManifest =
        "apiVersion: vireo/v1\nkind: VirtualMachine\nmetadata: { name: fuzz }\nspec: { image: tiny, cpus: 1, memory: 128MiB }\n"

    static let openSLO = """
        apiVersion: openslo/v1
        kind: SLO
        metadata: { name: fast }
        spec:
          service: shop
          budgetingMethod: Timeslices
          indicator:
            spec:
              thresholdMetric: { metricSource: { type: Prometheus, spec: { query: 'histogram_quantile(0.95, rate(x_bucket[5m]))' } } }
          objectives: [{ op: lte, value: 0.2, target: 0.99, timeSliceWindow: 1m }]
        """

    static func randomBytes(_ rng: inout Random) -> String {
        let count = Int.random(in: 0..<200, using: &rng)
        let bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func randomJSON(_ rng: inout Random, depth: Int = 0) -> JSONValue {
        let keys = ["name", "image", "cpus", "memory", "host", "app", "apiVersion", "kind", "metadata", "spec", "x", ""]
        switch Int.random(in: 0..<(depth > 3 ? 4 : 6), using: &rng) {
        case 0: return .null
        case 1: return .bool(Bool.random(using: &rng))
        case 2:
            return .number(
                ([0, -1, 1, 1.5, 1e300, -1e300, 4096, 1_099_511_627_776, 2_147_483_648] as [Double]).randomElement(using: &rng)!)
        case 3:
            return .string(
                [
                    "", "tiny", "web", "a", "256MiB", "5x", "-1", "Ω", "vireo/v1", "VirtualMachine",
                    String(repeating: "z", count: 100),
                ].randomElement(using: &rng)!)
        case 4: return .array((0..<Int.random(in: 0..<4, using: &rng)).map { _ in randomJSON(&rng, depth: depth + 1) })
        default:
            var object: [String: JSONValue] = [:]
            for _ in 0..<Int.random(in: 0..<6, using: &rng) {
                object[keys.randomElement(using: &rng)!] = randomJSON(&rng, depth: depth + 1)
            }
            return .object(object)
        }
    }

    /// A valid document with a few bytes changed, dropped or duplicated: the inputs most likely to
    /// get past the first checks.
    static func mutate(_ text: String, _ rng: inout Random) -> String {
        var bytes = Array(text.utf8)
        for _ in 0..<Int.random(in: 1...4, using: &rng) where !bytes.isEmpty {
            let i = Int.random(in: 0..<bytes.count, using: &rng)
            switch Int.random(in: 0..<3, using: &rng) {
            case 0: bytes[i] = UInt8.random(in: 0...255, using: &rng)
            case 1: bytes.remove(at: i)
            default: bytes.insert(bytes[i], at: i)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func inputs(seed: UInt64, count: Int, valid: String) -> [String] {
        var rng = Random(state: seed)
        let encoder = VireoJSON.encoder()
        return (0..<count).map { i in
            switch i % 4 {
            case 0: randomBytes(&rng)
            case 1: String(decoding: try! encoder.encode(randomJSON(&rng)), as: UTF8.self)
            case 2: mutate(valid, &rng)
            default: (try? String(decoding: encoder.encode(randomJSON(&rng)), as: UTF8.self)).map { "---\n" + $0 } ?? ""
            }
        }
    }

    @Test("random bodies to every endpoint that reads one: a 4xx envelope or a success, never a crash or 5xx")
    func endpoints() async throws {
        let plane = try await TestControlPlane.make()
        _ = try await plane.controller.createVM(VMSpec(name: "keep", image: "tiny", cpus: 1, memoryMiB: 128))
        _ = try await plane.controller.apply(try ManifestParser.parse(shopManifest))
        let before = try await plane.store.load().vms
        let cases: [(String, String)] = [
            ("/v1/vms", Self.validVM), ("/v1/apply", Self.validManifest), ("/v1/agent/register", "{}"),
            ("/v1/agent/heartbeat", "{}"), ("/v1/apply", shopManifest),
            ("/v1/apps/shop/samples", shopExposition(requests: 5, latency: 0.01, queue: 1, at: 1_800_000_000_000)),
            ("/v1/agent/samples", "{}"),
        ]
        try await plane.test { client in
            for (path, valid) in cases {
                for (i, body) in Self.inputs(seed: 7, count: 400, valid: valid).enumerated() {
                    let response = try await client.request(.post, path, body: body)
                    if (200..<300).contains(response.status) { continue }  // a mutation can stay valid
                    #expect(
                        (400..<500).contains(response.status),
                        "\(path) input \(i): \(response.status) for \(body.debugDescription)")
                    guard let envelope = try? decodeJSON(ErrorEnvelope.self, response.body) else {
                        Issue.record("\(path) input \(i): no envelope in \(response.body.prefix(200))")
                        continue
                    }
                    #expect(!envelope.error.message.isEmpty)
                }
            }
        }
        // Whatever random input got accepted, the VM that existed before is exactly as it was.
        let after = try await plane.store.load().vms
        #expect(after.first { $0.name == "keep" } == before.first)
    }

    @Test("the manifest parser never crashes and fails only with invalid_argument")
    func parser() async throws {
        // Seconds of parsing: on a thread of its own (`offPool`), not one of the few pool threads.
        let wrongCodes = try await offPool {
            let inputs =
                Self.inputs(seed: 11, count: 4000, valid: Self.validManifest)
                + Self.inputs(seed: 13, count: 2000, valid: shopManifest)
                + Self.inputs(seed: 17, count: 1000, valid: Self.openSLO)
            return inputs.compactMap { text -> String? in
                do {
                    _ = try ManifestParser.parse(text)
                    return nil
                } catch let error as VireoError {
                    return error.code == .invalidArgument ? nil : "\(error.code): \(error.message)"
                } catch {
                    return "\(error)"
                }
            }
        }
        #expect(wrongCodes.isEmpty, "\(wrongCodes.prefix(5))")
    }

    @Test("deeply nested documents are rejected, not recursed into")
    func deepNesting() {
        let deep = String(repeating: "[", count: 5000) + String(repeating: "]", count: 5000)
        #expect(throws: VireoError.self) { _ = try ManifestParser.parse(deep) }
    }
}
