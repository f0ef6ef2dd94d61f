import ArgumentParser
import Foundation
import VireoAPI
import VireoClient
import VireoDriverLibvirt
import VireoModel

struct ImportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import", abstract: "Adopt VMs a hypervisor already has into Vireo.",
        subcommands: [ImportLibvirt.self])
}

struct ImportLibvirt: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "libvirt",
        abstract: "Adopt existing libvirt domains (running or only defined) as Vireo VMs, without restarting them.",
        discussion: """
            Each domain keeps its UUID (the VM id), its name (the VM name), its disk and its state: a running \
            domain becomes a running VM, a defined one a stopped VM, pinned to the host whose agent manages that \
            libvirt. Every domain is converted and checked first; if any cannot be imported (see docs/import.md) \
            or clashes with a VM's name or id, nothing is imported. Example: \
            vireo import libvirt --uri qemu:///system --domain web --dry-run
            """)

    @Option(help: ArgumentHelp("The libvirt URI the domains are on, as the host's agent uses it.", valueName: "uri"))
    var uri: String
    @Option(
        name: .customLong("domain"),
        help: ArgumentHelp("A domain to import (repeatable); default: every domain without Vireo's metadata.", valueName: "name"))
    var domains: [String] = []
    @Option(
        help: ArgumentHelp(
            "The Vireo host whose agent runs the libvirt driver on that URI; default: the only libvirt host.", valueName: "host"))
    var host: String?
    @Flag(help: "Print what would be imported, or why not, and change nothing.")
    var dryRun = false
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    /// What the command prints with `-o json`.
    struct Report: Encodable {
        var uri: String
        var host: String
        var dryRun: Bool
        var domains: [LibvirtDomainConversion]
        /// The recorded VMs; empty for a dry run or a refused import.
        var vms: [VMView]
    }

    func run() async throws {
        let source = try LibvirtImportSource(uri: uri)
        var conversions = try source.conversions(of: domains)
        let api = client.client()
        let target = try Self.chooseHost(try await api.hosts().items, named: host, uri: uri)
        let vms = try await api.allVMs()
        var clashes = conversions.contains { $0.refusals.contains(LibvirtDomainConversion.alreadyManaged) }
        for index in conversions.indices {
            let conversion = conversions[index]
            if let vm = vms.first(where: { $0.name == conversion.domain }) {
                conversions[index].refusals.append("a VM named '\(vm.name)' already exists (id \(vm.id))")
                clashes = true
            }
            if let vm = vms.first(where: { $0.id.rawValue == conversion.uuid }) {
                conversions[index].refusals.append("VM '\(vm.name)' already has id \(vm.id)")
                clashes = true
            }
        }
        var report = Report(uri: uri, host: target.name, dryRun: dryRun, domains: conversions, vms: [])
        let refused = conversions.filter { !$0.importable }
        if !refused.isEmpty {
            try show(report)
            let reasons = refused.map { "domain '\($0.domain)': \($0.refusals.joined(separator: "; "))" }
            throw VireoError(
                clashes ? .conflict : .unsupported,
                "\(dryRun ? "dry run: " : "")nothing imported: \(refused.count) of \(conversions.count) domains cannot be: "
                    + reasons.joined(separator: " | "))
        }
        if dryRun || conversions.isEmpty { return try show(report) }
        guard let owner = target.attributes[LibvirtDriver.stateDirectoryAttribute] else {
            throw VireoError(
                .failedPrecondition,
                "host '\(target.name)' does not report its libvirt driver's state directory (an agent older than import?)")
        }
        let request = VMImportRequest(
            host: target.name,
            vms: conversions.map {
                .init(id: VMID($0.uuid), name: $0.domain, cpus: $0.cpus, memoryMiB: $0.memoryMiB, running: $0.running)
            })
        // The metadata first, then the record; the metadata is removed again if the controller refuses.
        report.vms = try await source.adoptAll(conversions, owner: owner) { try await api.importVMs(request).items }
        try show(report)
    }

    /// `--host`, or the only libvirt host (the only one on `uri` when there are several); it must run
    /// the libvirt driver on `uri`.
    static func chooseHost(_ hosts: [HostView], named name: String?, uri: String) throws -> HostView {
        let libvirt = hosts.filter { $0.driver == "libvirt" }
        let chosen: HostView
        if let name {
            guard let host = hosts.first(where: { $0.name == name }) else { throw VireoError.notFound("host", name) }
            guard host.driver == "libvirt" else {
                throw VireoError(.invalidArgument, "--host: host '\(name)' runs the \(host.driver) driver, not libvirt")
            }
            chosen = host
        } else if libvirt.count == 1 {
            chosen = libvirt[0]
        } else if let only = libvirt.filter({ $0.attributes["uri"] == uri }).onlyElement {
            chosen = only
        } else if libvirt.isEmpty {
            throw VireoError(.notFound, "no host runs the libvirt driver (start one with: vireo agent --driver libvirt)")
        } else {
            throw VireoError(
                .invalidArgument,
                "several hosts run the libvirt driver (\(libvirt.map(\.name).sorted().joined(separator: ", "))); "
                    + "choose one with --host")
        }
        guard chosen.attributes["uri"] == uri else {
            throw VireoError(
                .invalidArgument,
                "--uri: host '\(chosen.name)' manages libvirt at \(chosen.attributes["uri"] ?? "an unknown URI"), not \(uri)")
        }
        return chosen
    }

    func show(_ report: Report) throws {
        if output.output == .json { return try printJSON(report) }
        if report.domains.isEmpty {
            print("no domains to import on \(report.uri)")
            return
        }
        let recorded = Dictionary(report.vms.map { ($0.id.rawValue, $0) }, uniquingKeysWith: { a, _ in a })
        printTable(
            ["DOMAIN", "STATE", "VM ID", "CPUS", "MEMORY", "DISK", "RESULT"],
            report.domains.map { domain in
                let result =
                    if !domain.importable {
                        "refused: " + domain.refusals.joined(separator: "; ")
                    } else if let vm = recorded[
                        domain.uuid]
                    {
                        "imported: vm \(vm.name) \(vm.state.rawValue) on \(report.host)"
                    } else {
                        report.dryRun ? "would import on \(report.host)" : "not imported"
                    }
                return [
                    domain.domain, domain.running ? "running" : "stopped", domain.uuid, String(domain.cpus),
                    ByteSize.format(mib: domain.memoryMiB), domain.disk ?? "-", result,
                ]
            })
    }
}

extension Array {
    fileprivate var onlyElement: Element? { count == 1 ? first : nil }
}
