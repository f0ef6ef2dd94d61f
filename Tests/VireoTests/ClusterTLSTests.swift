import Crypto
import Foundation
import Logging
import Testing
import VireoAPI
import VireoClient
import VireoModel
import VireoSecurity
import X509

@Suite("The cluster's certificate authority")
struct ClusterAuthorityTests {
    func validates(_ pem: String, against authority: ClusterAuthority) async throws -> Bool {
        var verifier = Verifier(rootCertificates: CertificateStore([authority.certificate])) {
            RFC5280Policy(validationTime: Date())
        }
        let result = await verifier.validate(leaf: try Certificate(pemEncoded: pem), intermediates: CertificateStore())
        if case .validCertificate = result { return true }
        return false
    }

    @Test("an agent's request is signed as a client certificate for the host it joins as, whatever it asked to be named")
    func signsAgents() async throws {
        let authority = try ClusterAuthority()
        let (_, request) = try AgentIdentity.request(host: "h1")
        let issued = try authority.signAgent(request: request, host: "h2")
        let certificate = try Certificate(pemEncoded: issued.certificate)
        #expect(ClusterAuthority.agentHost(certificateDER: try certificate.serializeAsPEM().derBytes) == "h2")
        #expect(try await validates(issued.certificate, against: authority))
        #expect(Array(try #require(try certificate.extensions.extendedKeyUsage)) == [.clientAuth])
        #expect(issued.expiresAt.timeIntervalSinceNow > 364 * 86_400)
        // Another authority's certificate does not validate against this one.
        #expect(
            try await !validates(try ClusterAuthority().signAgent(request: request, host: "h2").certificate, against: authority))
    }

    @Test("a request that is not a CSR, or whose signature is not its key's, is refused naming csr")
    func refusesBadRequests() throws {
        let authority = try ClusterAuthority()
        let garbage = #expect(throws: VireoError.self) { try authority.signAgent(request: "hello", host: "h1") }
        #expect(garbage?.code == .invalidArgument && garbage?.message.contains("csr") == true)
        // The signature of one key's request over another key: its sender does not hold the key.
        let genuine = try CertificateSigningRequest(pemEncoded: try AgentIdentity.request(host: "h1").request)
        let other = P256.Signing.PrivateKey()
        let forged = try CertificateSigningRequest(
            version: .v1, subject: genuine.subject, publicKey: Certificate.PublicKey(other.publicKey),
            attributes: genuine.attributes, signatureAlgorithm: genuine.signatureAlgorithm, signature: genuine.signature)
        let refused = #expect(throws: VireoError.self) {
            try authority.signAgent(request: try forged.serializeAsPEM().pemString, host: "h1")
        }
        #expect(refused?.message.contains("does not verify") == true)
    }

    @Test("the server's certificate names its addresses, is for serving only, and names no agent")
    func serverCertificate() async throws {
        let authority = try ClusterAuthority()
        let server = try authority.serverCredentials(names: ["127.0.0.1", "vireo.example"])
        let certificate = try Certificate(pemEncoded: server.certificate)
        let names = Array(try #require(try certificate.extensions.subjectAlternativeNames))
        #expect(names == [.ipAddress(.init(contentBytes: [127, 0, 0, 1])), .dnsName("vireo.example")])
        #expect(Array(try #require(try certificate.extensions.extendedKeyUsage)) == [.serverAuth])
        #expect(ClusterAuthority.agentHost(certificateDER: try certificate.serializeAsPEM().derBytes) == nil)
        #expect(try await validates(server.certificate, against: authority))
    }

    @Test("an agent's identity is kept with its key 0600, and loads only for its host and its authority")
    func identityFiles() throws {
        let directory = temporaryDirectory() + "/tls"
        let authority = try ClusterAuthority(directory: temporaryDirectory() + "/ca")
        let (key, request) = try AgentIdentity.request(host: "h1")
        let issued = try authority.signAgent(request: request, host: "h1")
        let identity = AgentIdentity(certificate: issued.certificate, privateKey: key, expiresAt: issued.expiresAt)
        try identity.save(in: directory)
        let mode = try FileManager.default.attributesOfItem(atPath: directory + "/agent-key.pem")[.posixPermissions] as? Int
        #expect(mode == 0o600)
        let loaded = try #require(AgentIdentity.load(from: directory, host: "h1", authorityPEM: authority.certificatePEM))
        #expect(loaded.certificate == identity.certificate && loaded.privateKey == identity.privateKey)
        #expect(!loaded.isDue())
        #expect(loaded.isDue(now: issued.expiresAt - ClusterAuthority.renewWithin + 1))
        #expect(AgentIdentity.load(from: directory, host: "h2", authorityPEM: authority.certificatePEM) == nil)
        #expect(AgentIdentity.load(from: directory, host: "h1", authorityPEM: try ClusterAuthority().certificatePEM) == nil)
        #expect(
            AgentIdentity.load(from: directory, host: "h1", authorityPEM: authority.certificatePEM, now: issued.expiresAt + 1)
                == nil)
    }
}

@Suite("Agents' certificates over the API (--tls-auto)", .serialized)
struct ClusterTLSTests {
    /// A `vireo up --tls-auto` beyond loopback, its URL on 127.0.0.1, its CA file and tokens.
    struct Plane {
        let up: UpProcess
        let url: String
        let ca: String
        let admin: String
        let join: String
    }

    func start(_ dataDir: String = temporaryDirectory()) async throws -> Plane {
        let up = try UpProcess(dataDir: dataDir, listen: "0.0.0.0:0", extra: ["--tls-auto", "--tls-name", "vireo.test"])
        let ca = dataDir + "/tls/ca-cert.pem"
        var url = ""
        try await eventually("vireo up --tls-auto serving https", within: 30) {
            guard up.process.isRunning else { throw VireoError(.internal, "vireo up exited: \(up.logText)") }
            guard let text = try? String(contentsOfFile: dataDir + "/endpoint", encoding: .utf8) else { return false }
            url = text.trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(of: "0.0.0.0", with: "127.0.0.1")
            return try await vireo(["host", "list", "--ca-cert", ca], server: url, token: try up.adminToken()).status == 0
        }
        let join = try String(contentsOfFile: dataDir + "/join.token", encoding: .utf8)
        return Plane(
            up: up, url: url, ca: ca, admin: try up.adminToken(), join: join.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    func agent(_ plane: Plane, name: String, directory: String, token: String?) throws -> Process {
        let agent = Process()
        agent.executableURL = URL(fileURLWithPath: vireoBinary)
        agent.arguments =
            [
                "agent", "--controller", plane.url, "--name", name, "--ca-cert", plane.ca, "--state-dir", directory,
                "--driver", "simulated", "--log-level", "notice",
            ] + (token.map { ["--token", $0] } ?? [])
        let log = FileManager.default.createFile(atPath: directory + ".log", contents: nil)
        precondition(log)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: directory + ".log"))
        agent.standardOutput = handle
        agent.standardError = handle
        try agent.run()
        return agent
    }

    func hostReady(_ plane: Plane, _ name: String) async throws -> Bool {
        let hosts = try await vireo(["host", "list", "-o", "json", "--ca-cert", plane.ca], server: plane.url, token: plane.admin)
        return (try? decodeJSON([HostView].self, hosts.stdout))?.contains { $0.name == name && $0.state == .ready } == true
    }

    /// A client that presents `identity` (or nothing) with `token`.
    func client(_ plane: Plane, identity: AgentIdentity?, token: String?) throws -> VireoClient {
        VireoClient(
            server: plane.url, token: token,
            http: try identity.map { try VireoClient.httpClient(trusting: plane.ca, identity: $0) }
                ?? VireoClient.httpClient(trusting: plane.ca))
    }

    /// Asks the API for a certificate for `host`, with the join token, and returns the identity.
    func enroll(_ plane: Plane, host: String) async throws -> AgentIdentity {
        let (key, request) = try AgentIdentity.request(host: host)
        let answer = try await client(plane, identity: nil, token: plane.join).agentCertificate(
            AgentCertificateRequest(host: host, csr: request))
        #expect(answer.caCertificate == (try String(contentsOfFile: plane.ca, encoding: .utf8)))
        return AgentIdentity(certificate: answer.certificate, privateKey: key, expiresAt: answer.expiresAt)
    }

    let fingerprint = HostFingerprint(cpus: 2, memoryMiB: 2048, driver: "simulated", capabilities: [])

    @Test(
        "an agent joins with the join token, gets its host's certificate and speaks with it, also after a restart without the token; nothing else speaks for a host"
    )
    func agentsByCertificate() async throws {
        let plane = try await start()
        defer { plane.up.kill() }
        let directory = temporaryDirectory()

        // Joins with the token; the certificate is kept, its key private.
        var agent = try self.agent(plane, name: "h2", directory: directory + "/h2", token: plane.join)
        try await eventually("h2 joined with its certificate", within: 30) { try await hostReady(plane, "h2") }
        let keyMode = try FileManager.default.attributesOfItem(atPath: directory + "/h2/tls/agent-key.pem")[.posixPermissions]
        #expect(keyMode as? Int == 0o600)
        let issued = try String(contentsOfFile: directory + "/h2/tls/agent-cert.pem", encoding: .utf8)
        agent.terminate()
        agent.waitUntilExit()

        // Restarted without the token, it speaks with the certificate it keeps: not a new one.
        agent = try self.agent(plane, name: "h2", directory: directory + "/h2", token: nil)
        defer {
            agent.terminate()
            agent.waitUntilExit()
        }
        let before = try await vireo(
            ["host", "list", "-o", "json", "--ca-cert", plane.ca], server: plane.url, token: plane.admin)
        let lastSeen = try decodeJSON([HostView].self, before.stdout).first { $0.name == "h2" }?.lastHeartbeatAt
        try await eventually("h2 heartbeats again", within: 30) {
            let hosts = try await vireo(
                ["host", "list", "-o", "json", "--ca-cert", plane.ca], server: plane.url, token: plane.admin)
            let h2 = try decodeJSON([HostView].self, hosts.stdout).first { $0.name == "h2" }
            return h2?.state == .ready && h2?.lastHeartbeatAt != lastSeen
        }
        #expect(try String(contentsOfFile: directory + "/h2/tls/agent-cert.pem", encoding: .utf8) == issued)

        // The join token alone no longer speaks for a host: it only gets a certificate.
        let tokenOnly = try client(plane, identity: nil, token: plane.join)
        let refused = await #expect(throws: VireoError.self) {
            _ = try await tokenOnly.register(AgentRegistration(name: "h9", fingerprint: fingerprint))
        }
        #expect(refused?.code == .forbidden && refused?.message.contains("--ca-cert") == true, "\(String(describing: refused))")
        // Nor does the admin token, on the agents' API.
        let admin = try client(plane, identity: nil, token: plane.admin)
        await #expect(throws: VireoError.self) {
            _ = try await admin.register(AgentRegistration(name: "h9", fingerprint: fingerprint))
        }

        // A certificate speaks for its own host only.
        let h3 = try await enroll(plane, host: "h3")
        let asH3 = try client(plane, identity: h3, token: nil)
        let registered = try await asH3.register(AgentRegistration(name: "h3", fingerprint: fingerprint))
        let otherName = await #expect(throws: VireoError.self) {
            _ = try await asH3.register(AgentRegistration(name: "h2", fingerprint: fingerprint))
        }
        #expect(otherName?.code == .forbidden && otherName?.message.contains("host 'h3'") == true)
        let h4 = try client(plane, identity: try await enroll(plane, host: "h4"), token: nil)
        let otherHost = await #expect(throws: VireoError.self) {
            _ = try await h4.heartbeat(AgentHeartbeat(hostID: registered.hostID, instances: []))
        }
        #expect(otherHost?.code == .forbidden, "\(String(describing: otherHost))")
        let otherWatch = await #expect(throws: VireoError.self) {
            _ = try await h4.watch(host: registered.hostID, after: 0, timeout: .milliseconds(10))
        }
        #expect(otherWatch?.code == .forbidden)
        _ = try await asH3.heartbeat(AgentHeartbeat(hostID: registered.hostID, instances: []))
        // It may renew its own certificate, not get another host's.
        let (_, request) = try AgentIdentity.request(host: "h2")
        let stolen = await #expect(throws: VireoError.self) {
            _ = try await asH3.agentCertificate(AgentCertificateRequest(host: "h2", csr: request))
        }
        #expect(stolen?.code == .forbidden)

        // A certificate of another authority is refused at the handshake.
        let foreignAuthority = try ClusterAuthority()
        let (foreignKey, foreignRequest) = try AgentIdentity.request(host: "h3")
        let foreign = try foreignAuthority.signAgent(request: foreignRequest, host: "h3")
        let impostor = try client(
            plane,
            identity: AgentIdentity(certificate: foreign.certificate, privateKey: foreignKey, expiresAt: foreign.expiresAt),
            token: nil)
        await #expect(throws: (any Error).self) {
            _ = try await impostor.heartbeat(AgentHeartbeat(hostID: registered.hostID, instances: []))
        }

        // Issuing is audited; bad requests name the field.
        let badCSR = await #expect(throws: VireoError.self) {
            _ = try await tokenOnly.agentCertificate(AgentCertificateRequest(host: "h5", csr: "not a request"))
        }
        #expect(badCSR?.code == .invalidArgument && badCSR?.message.contains("csr") == true)
        let badHost = await #expect(throws: VireoError.self) {
            _ = try await tokenOnly.agentCertificate(AgentCertificateRequest(host: "Bad Name", csr: request))
        }
        #expect(badHost?.code == .invalidArgument && badHost?.message.contains("host") == true)
        let audit = try await vireo(["audit", "-o", "json", "--ca-cert", plane.ca], server: plane.url, token: plane.admin)
        let entries = try decodeJSON([AuditEntry].self, audit.stdout)
        #expect(entries.filter { $0.path == "/v1/agent/certificate" && $0.who == "join" && $0.status == 200 }.count == 3)
        #expect(entries.contains { $0.path == "/v1/agent/certificate" && $0.who == "host:h3" && $0.status == 403 })
    }

    @Test(
        "a revoked host's certificates are refused, renewals too, also after a restart; one issued after is good; others' are untouched; only admin revokes"
    )
    func revokedCertificates() async throws {
        let dataDir = temporaryDirectory()
        var plane = try await start(dataDir)
        let old = try await enroll(plane, host: "h3")
        var asH3 = try client(plane, identity: old, token: nil)
        let h3 = try await asH3.register(AgentRegistration(name: "h3", fingerprint: fingerprint))
        var asH4 = try client(plane, identity: try await enroll(plane, host: "h4"), token: nil)
        let h4 = try await asH4.register(AgentRegistration(name: "h4", fingerprint: fingerprint))
        _ = try await asH3.heartbeat(AgentHeartbeat(hostID: h3.hostID, instances: []))

        // Only admin revokes.
        let byAgent = try await vireo(["host", "revoke", "h3", "--ca-cert", plane.ca], server: plane.url, token: plane.join)
        #expect(byAgent.status != 0 && byAgent.stderr.contains("may not POST"), "\(byAgent.stderr)")
        let asOperator = AccessPolicy.decide(
            Caller(name: "ops", role: .operator), method: "POST", path: "/v1/hosts/h3/revoke")
        #expect(asOperator != .allow)
        _ = try await asH3.heartbeat(AgentHeartbeat(hostID: h3.hostID, instances: []))

        let revoked = try await vireo(
            ["host", "revoke", "h3", "-o", "json", "--ca-cert", plane.ca], server: plane.url, token: plane.admin)
        #expect(revoked.status == 0, "\(revoked.stderr)")
        let answer = try decodeJSON(CertificateRevocation.self, revoked.stdout)
        #expect(answer.host == "h3" && answer.registered)
        let refused = await #expect(throws: VireoError.self) {
            _ = try await asH3.heartbeat(AgentHeartbeat(hostID: h3.hostID, instances: []))
        }
        #expect(refused?.code == .unauthorized && refused?.message.contains("revoked") == true, "\(String(describing: refused))")
        let (_, renewal) = try AgentIdentity.request(host: "h3")
        let renewed = await #expect(throws: VireoError.self) {
            _ = try await asH3.agentCertificate(AgentCertificateRequest(host: "h3", csr: renewal))
        }
        #expect(renewed?.code == .unauthorized, "a revoked certificate renews nothing")
        _ = try await asH4.heartbeat(AgentHeartbeat(hostID: h4.hostID, instances: []))

        // Joining again with the join token at once (within the same second) gives a good one.
        let fresh = try await enroll(plane, host: "h3")
        asH3 = try client(plane, identity: fresh, token: nil)
        _ = try await asH3.heartbeat(AgentHeartbeat(hostID: h3.hostID, instances: []))

        // A name no host has is revoked too (and said so); a bad name is refused naming host.
        let unknown = try await vireo(["host", "revoke", "h9", "--ca-cert", plane.ca], server: plane.url, token: plane.admin)
        #expect(unknown.status == 0 && unknown.stdout.contains("no host of that name"), "\(unknown.stdout)")
        let bad = try await vireo(["host", "revoke", "Bad_Name", "--ca-cert", plane.ca], server: plane.url, token: plane.admin)
        #expect(bad.status != 0 && bad.stderr.contains("host"), "\(bad.stderr)")

        // The cutoff is in the store: after a restart the old certificate is still refused.
        plane.up.kill(SIGTERM)
        plane = try await start(dataDir)
        defer { plane.up.kill() }
        let oldAgain = try client(plane, identity: old, token: nil)
        let stillRefused = await #expect(throws: VireoError.self) {
            _ = try await oldAgain.heartbeat(AgentHeartbeat(hostID: h3.hostID, instances: []))
        }
        #expect(stillRefused?.code == .unauthorized)
        _ = try await client(plane, identity: fresh, token: nil).heartbeat(AgentHeartbeat(hostID: h3.hostID, instances: []))
        asH4 = try client(plane, identity: try await enroll(plane, host: "h4"), token: nil)
        _ = try await asH4.heartbeat(AgentHeartbeat(hostID: h4.hostID, instances: []))

        let audit = try await vireo(["audit", "-o", "json", "--ca-cert", plane.ca], server: plane.url, token: plane.admin)
        let entries = try decodeJSON([AuditEntry].self, audit.stdout)
        #expect(entries.contains { $0.path == "/v1/hosts/h3/revoke" && $0.who == "admin" && $0.status == 200 })
        #expect(entries.contains { $0.path == "/v1/hosts/h3/revoke" && $0.who == "join" && $0.status == 403 })
    }

    @Test("the authority outlives a restart of the controller: agents' certificates stay good; bad TLS flags are refused")
    func restartAndFlags() async throws {
        let dataDir = temporaryDirectory()
        var plane = try await start(dataDir)
        let identity = try await enroll(plane, host: "h7")
        let authorityPEM = try String(contentsOfFile: plane.ca, encoding: .utf8)
        plane.up.kill(SIGTERM)
        plane = try await start(dataDir)
        defer { plane.up.kill() }
        #expect(try String(contentsOfFile: plane.ca, encoding: .utf8) == authorityPEM)
        let asH7 = try client(plane, identity: identity, token: nil)
        _ = try await asH7.register(AgentRegistration(name: "h7", fingerprint: fingerprint))
        // The certificate names the names it was asked to, for clients that reach it by them.
        let served = try await vireo(["host", "list", "--ca-cert", plane.ca], server: plane.url, token: plane.admin)
        #expect(served.status == 0 && served.stdout.contains("h7"), "\(served.stderr)")

        let mixed = try await vireo(["controller", "--data-dir", dataDir + "/bad", "--tls-auto", "--tls-cert", plane.ca])
        #expect(mixed.status == 2 && mixed.stderr.contains("--tls-auto"), "\(mixed.stderr)")
        let nameAlone = try await vireo(["controller", "--data-dir", dataDir + "/bad", "--tls-name", "x.test"])
        let badName = try await vireo([
            "controller", "--data-dir", dataDir + "/bad", "--tls-auto", "--tls-name", "a.test,,b test",
        ])
        #expect(badName.status == 2 && badName.stderr.contains("--tls-name"), "\(badName.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dataDir + "/bad/tls"))
        #expect(nameAlone.status == 2 && nameAlone.stderr.contains("--tls-name"), "\(nameAlone.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dataDir + "/bad/vireo.db"))
    }
}
