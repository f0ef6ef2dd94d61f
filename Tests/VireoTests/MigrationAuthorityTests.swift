import Foundation
import Testing
import VireoModel
import VireoSecurity
import X509

@Suite("Migration authority")
struct MigrationAuthorityTests {
    let migration = MigrationID("5f0c3b8e-1d2a-4c1e-9a57-0b6f1f3c2d4e")

    /// Whether `credentials`' certificate chains to the authority certificate (PEM) `trusted`.
    func verify(_ credentials: MigrationCredentials, trusting trusted: String) async throws -> CertificateValidationResult {
        let leaf = try Certificate(pemEncoded: credentials.certificate)
        var verifier = Verifier(rootCertificates: CertificateStore([try Certificate(pemEncoded: trusted)])) {
            RFC5280Policy(validationTime: Date())
        }
        return await verifier.validate(leaf: leaf, intermediates: CertificateStore())
    }

    @Test("a move's two ends chain to one authority of that move, name each other's ends, and trust nothing else")
    func issuedCredentialsChain() async throws {
        let pair = try MigrationAuthority().issue(migration: migration, listener: .destination, address: "127.0.0.1")
        let (destination, source) = (pair.destination, pair.source)
        #expect(source.caCertificate == destination.caCertificate)
        let authority = try Certificate(pemEncoded: source.caCertificate)
        #expect(authority.subject.description.contains("CN=Vireo migration authority \(migration)"))
        #expect(authority.subject == authority.issuer, "self-signed")
        #expect(try authority.extensions.basicConstraints == .isCertificateAuthority(maxPathLength: 0))
        // The authority is valid as long as the move's certificates, not for years.
        #expect(authority.notValidAfter.timeIntervalSinceNow <= 3601)
        for credentials in [destination, source] {
            guard case .validCertificate(let chain) = try await verify(credentials, trusting: credentials.caCertificate) else {
                Issue.record("\(credentials) does not chain to its authority")
                continue
            }
            #expect(chain.count == 2)
        }
        #expect(destination.peer == "O=Vireo,CN=vireo-migration-\(migration)-source")
        #expect(source.peer == "O=Vireo,CN=vireo-migration-\(migration)-destination")
        let certificate = try Certificate(pemEncoded: destination.certificate)
        #expect(certificate.subject.description.contains("CN=vireo-migration-\(migration)-destination"))
        let names = try #require(try certificate.extensions.subjectAlternativeNames)
        #expect(Array(names) == [.ipAddress(.init(contentBytes: [127, 0, 0, 1]))])
        let usage = try #require(try certificate.extensions.extendedKeyUsage)
        #expect(usage.contains(.serverAuth) && usage.contains(.clientAuth))
        #expect(certificate.notValidAfter.timeIntervalSinceNow <= 3601)  // whole seconds in the certificate
        #expect(certificate.notValidBefore < Date())
        #expect(try Certificate(pemEncoded: source.certificate).extensions.subjectAlternativeNames == nil)
        #expect(destination.privateKey != source.privateKey)

        // A cold move's listener is its source: its certificate names the address.
        let cold = try MigrationAuthority().issue(migration: migration, listener: .source, address: "198.18.0.2")
        #expect(
            try Array(#require(try Certificate(pemEncoded: cold.source.certificate).extensions.subjectAlternativeNames))
                == [.ipAddress(.init(contentBytes: [198, 18, 0, 2]))])
        #expect(try Certificate(pemEncoded: cold.destination.certificate).extensions.subjectAlternativeNames == nil)
    }

    @Test("another move's credentials, from the same controller and even for the same migration, do not verify")
    func anotherMove() async throws {
        let authority = MigrationAuthority()
        let ours = try authority.issue(migration: migration, listener: .destination, address: "127.0.0.1")
        let others = [
            try authority.issue(migration: .generate(), listener: .destination, address: "127.0.0.1"),
            // Issued again for the same ID (a controller asked twice): a new authority all the same.
            try authority.issue(migration: migration, listener: .destination, address: "127.0.0.1"),
            try MigrationAuthority(name: "Rogue authority").issue(
                migration: migration, listener: .destination, address: "127.0.0.1"),
        ]
        for other in others {
            #expect(other.source.caCertificate != ours.source.caCertificate)
            for credentials in [other.source, other.destination] {
                guard case .couldNotValidate = try await verify(credentials, trusting: ours.destination.caCertificate) else {
                    Issue.record("a certificate of another move verified")
                    continue
                }
            }
        }
    }

    @Test("credentials never print their private key")
    func keyNeverPrinted() throws {
        let credentials = try MigrationAuthority().issue(migration: migration, listener: .destination, address: "127.0.0.1")
            .source
        let keyBody = credentials.privateKey.split(separator: "\n")[1]
        var dumped = ""
        dump(credentials, to: &dumped)
        for text in [credentials.description, String(reflecting: credentials), "\(credentials)", dumped] {
            #expect(!text.contains(keyBody))
            #expect(!text.contains("PRIVATE KEY"))
            #expect(text.contains(credentials.peer))
        }
        // The wire form carries it, for the agent.
        let decoded = try JSONDecoder().decode(
            MigrationCredentials.self, from: JSONEncoder().encode(credentials))
        #expect(decoded == credentials)
    }
}
