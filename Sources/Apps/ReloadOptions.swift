import ArgumentParser
import Foundation
import Logging
import Service
import TLSContract

/// How a server or a long-running client picks up renewed credentials without a restart: SIGHUP
/// always; a watch on every file it was started with (certificate, key, PKCS#12, each --ca, each
/// --crl) unless --no-watch; and a timer with --reload-interval. See ReloadingContext for what a
/// reload does and ReloadTriggers for how the watch works.
struct ReloadOptions: ParsableArguments {
    @Option(name: .customLong("reload-interval"),
            help: ArgumentHelp("Also reload every so many seconds (unchanged files build nothing).", valueName: "seconds"))
    var reloadInterval: Double?

    @Flag(name: .customLong("no-watch"), help: "Do not watch the credential files; reload on SIGHUP (and --reload-interval) only.")
    var noWatch = false

    func validate() throws {
        if let reloadInterval, !(reloadInterval > 0) {
            throw ValidationError("--reload-interval takes a positive number of seconds")
        }
    }

    /// Builds the first context (failing: one line on stderr, exit 1) and starts the triggers.
    func start(_ configuration: TLSConfiguration, backend: any TLSBackend, logger: Logger,
               command: String) throws -> (ReloadingContext, ReloadTriggers) {
        let reloading: ReloadingContext
        do {
            reloading = try ReloadingContext(backend: backend, configuration: configuration, logger: logger)
        } catch {
            printError("mtls \(command): \(error.summary)")
            throw ExitCode(1)
        }
        var options = ReloadTriggers.Options()
        options.watchFiles = !noWatch
        options.reloadInterval = reloadInterval
        options.signals = [SIGHUP]
        let triggers = ReloadTriggers(reloading, options: options)
        triggers.start()
        return (reloading, triggers)
    }
}
