import Foundation

/// nginx as a peer for one test: one foreground process (no master, one worker), everything it
/// writes (logs, pid, temporary files) in the test's scratch folder. Tests build the `server { }`
/// block they need; this holds what every such configuration shares.
public enum Nginx {
    /// Debian's nginx (scripts/install-deps installs it), or nil.
    public static let executable: String? = {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return (path.split(separator: ":").map { "\($0)/nginx" } + ["/usr/sbin/nginx", "/usr/local/sbin/nginx"])
            .first { FileManager.default.isExecutableFile(atPath: $0) }
    }()

    /// A whole nginx.conf around `server`, written into `scratch`; returns its path.
    public static func writeConfiguration(scratch: TemporaryDirectory, server: String) throws -> String {
        try scratch.write("nginx.conf", """
            daemon off;
            master_process off;
            worker_processes 1;
            error_log \(scratch.path)/error.log info;
            pid \(scratch.path)/nginx.pid;
            events { worker_connections 64; }
            http {
                access_log off;
                client_body_temp_path \(scratch.path)/body;
                proxy_temp_path \(scratch.path)/proxy;
                fastcgi_temp_path \(scratch.path)/fastcgi;
                uwsgi_temp_path \(scratch.path)/uwsgi;
                scgi_temp_path \(scratch.path)/scgi;
            \(server)
            }
            """)
    }

    /// The arguments that start nginx with `configuration` and its files in `scratch`.
    public static func arguments(configuration: String, scratch: TemporaryDirectory) -> [String] {
        ["-p", scratch.path, "-e", scratch.file("error.log"), "-c", configuration]
    }

    /// nginx's error log in `scratch`, if it wrote one, for a failure message.
    public static func errorLog(_ scratch: TemporaryDirectory) -> String {
        (try? String(contentsOfFile: scratch.file("error.log"), encoding: .utf8)).map { "\n--- nginx error.log:\n" + $0 } ?? ""
    }
}

/// Polls until something accepts TCP connections on 127.0.0.1:`port` (a start-up guard for
/// outside servers that cannot report their port, not a measurement).
public func waitUntilAccepting(port: Int, attempts: Int = 200) -> Bool {
    for _ in 0..<attempts {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let status = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        close(fd)
        if status == 0 { return true }
        usleep(50_000)
    }
    return false
}
