import Foundation
import Testing
import VireoModel
import VireoSecurity
import X509

@Suite("Migration authority")
struct MigrationAuthorityTests {
    let migration = MigrationID("5f0c3b8e-1d2a-4c1e-9a57-0b6f1f3c2d4e")

    func verify(_ credentials: MigrationCredentials, against authority: MigrationAuthority) async throws
        -> CertificateValidationResult
    {
        let leaf = try Certificate(pemEncoded: credentials.certificate)
        var verifier = Verifier(rootCertificates: CertificateStore([authority.certificate])) {
            RFC5280Policy(validationTime: Date())
        }
        return await verifier.validate(leaf: leaf, intermediates: CertificateStore())
    }

    @Test("issued credentials chain to the authority and name each other's ends")
    func issuedCredentialsChain() async throws {
        let authority = try MigrationAuthority()
        let destination = try authority.issue(migration: migration, role: .destination, address: "127.0.0.1")
        let source = try authority.issue(migration: migration, role: .source, address: nil)
        for credentials in [destination, source] {
            guard case .validCertificate(let chain) = try await verify(credentials, against: authority) else {
                Issue.record("\(credentials) does not chain to its authority")
                continue
            }
            #expect(chain.count == 2)
            #expect(credentials.caCertificate == authority.certificatePEM)
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
    }

    @Test("credentials of another authority do not verify")
    func anotherAuthority() async throws {
        let ours = try MigrationAuthority()
        let theirs = try MigrationAuthority()
        let foreign = try theirs.issue(migration: migration, role: .source, address: nil)
        guard case .couldNotValidate = try await verify(foreign, against: ours) else {
            Issue.record("a certificate of another authority verified")
            return
        }
    }

    @Test("a persisted authority reloads identically, its key readable by its owner only")
    func persisted() throws {
        let directory = FileManager.default.temporaryDirectory.path + "/vireo-ca-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let first = try MigrationAuthority(directory: directory)
        let again = try MigrationAuthority(directory: directory)
        #expect(again.certificate == first.certificate)
        #expect(again.certificatePEM == first.certificatePEM)
        let mode = try FileManager.default.attributesOfItem(atPath: directory + "/ca-key.pem")[.posixPermissions] as? Int
        #expect(mode == 0o600)
        // What the reloaded authority issues chains to the first one's certificate.
        let credentials = try again.issue(migration: migration, role: .source, address: nil)
        #expect(credentials.caCertificate == first.certificatePEM)

        try "not a key".write(toFile: directory + "/ca-key.pem", atomically: true, encoding: .utf8)
        let error = #expect(throws: VireoError.self) { try MigrationAuthority(directory: directory) }
        #expect(error?.message.contains("ca-key.pem") == true)
    }

    @Test("credentials never print their private key")
    func keyNeverPrinted() throws {
        let credentials = try MigrationAuthority().issue(migration: migration, role: .source, address: nil)
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
