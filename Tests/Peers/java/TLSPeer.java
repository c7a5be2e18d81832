import java.io.ByteArrayOutputStream;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.security.KeyStore;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.util.List;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SNIHostName;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.SSLServerSocket;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.TrustManagerFactory;

/**
 * A JSSE (Java's own TLS) peer for swift-mtls's interop tests: an mTLS client or server that offers
 * exactly one TLS version (1.3 unless told otherwise).
 *
 * <pre>
 * java TLSPeer client HOST PORT IDENTITY.p12|- PASSWORD CA.pem [1.2|1.3]   GET /hello, prints the response
 * java TLSPeer server PORT IDENTITY.p12 PASSWORD CA.pem [1.2|1.3]          answers each request, then closes
 * </pre>
 *
 * A client given "-" instead of a PKCS#12 bundle has no certificate. The server prints
 * "listening on 127.0.0.1:PORT" first, then one line per connection.
 *
 * The server answers every connection and then calls SSLSocket.close() without waiting for the
 * client's close_notify. On TLS 1.3 JSSE then sends a user_canceled warning alert right before its
 * close_notify (its "duplex close"), which is what TLS clients have to cope with in the wild.
 */
public final class TLSPeer {
    public static void main(String[] args) throws Exception {
        if ((args.length == 6 || args.length == 7) && args[0].equals("client")) {
            String[] protocols = protocols(args.length == 7 ? args[6] : "1.3");
            System.exit(runClient(args[1], Integer.parseInt(args[2]), context(args[3], args[4], args[5]), protocols));
        } else if ((args.length == 5 || args.length == 6) && args[0].equals("server")) {
            String[] protocols = protocols(args.length == 6 ? args[5] : "1.3");
            runServer(Integer.parseInt(args[1]), context(args[2], args[3], args[4]), protocols);
        } else {
            System.err.println("usage: TLSPeer client HOST PORT P12|- PASSWORD CA.pem [1.2|1.3]"
                    + " | server PORT P12 PASSWORD CA.pem [1.2|1.3]");
            System.exit(64);
        }
    }

    private static String[] protocols(String version) {
        if (!version.equals("1.2") && !version.equals("1.3")) {
            System.err.println("the TLS version is 1.2 or 1.3, not " + version);
            System.exit(64);
        }
        return new String[] {"TLSv" + version};
    }

    /** Our identity from a PKCS#12 bundle ("-": none); trust only in the CA certificates of a PEM file. */
    private static SSLContext context(String p12, String password, String caFile) throws Exception {
        KeyManagerFactory keys = null;
        if (!p12.equals("-")) {
            KeyStore identity = KeyStore.getInstance("PKCS12");
            try (InputStream in = new FileInputStream(p12)) {
                identity.load(in, password.toCharArray());
            }
            keys = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
            keys.init(identity, password.toCharArray());
        }

        KeyStore anchors = KeyStore.getInstance("PKCS12");
        anchors.load(null, null);
        try (InputStream in = new FileInputStream(caFile)) {
            int index = 0;
            for (Certificate certificate : CertificateFactory.getInstance("X.509").generateCertificates(in)) {
                anchors.setCertificateEntry("ca-" + index++, certificate);
            }
        }
        TrustManagerFactory trust = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        trust.init(anchors);

        SSLContext context = SSLContext.getInstance("TLS");
        context.init(keys == null ? null : keys.getKeyManagers(), trust.getTrustManagers(), null);
        return context;
    }

    private static int runClient(String host, int port, SSLContext context, String[] protocols) {
        try (SSLSocket socket = (SSLSocket) context.getSocketFactory().createSocket()) {
            SSLParameters parameters = socket.getSSLParameters();
            parameters.setProtocols(protocols);
            parameters.setServerNames(List.of(new SNIHostName(host)));
            parameters.setEndpointIdentificationAlgorithm("HTTPS");
            socket.setSSLParameters(parameters);
            socket.connect(new InetSocketAddress(InetAddress.getLoopbackAddress(), port), 10_000);
            socket.setSoTimeout(10_000);
            socket.startHandshake();
            System.out.println("protocol: " + socket.getSession().getProtocol());
            System.out.println("cipher suite: " + socket.getSession().getCipherSuite());
            OutputStream out = socket.getOutputStream();
            out.write(("GET /hello HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n")
                    .getBytes(StandardCharsets.US_ASCII));
            out.flush();
            System.out.print(new String(socket.getInputStream().readAllBytes(), StandardCharsets.UTF_8));
            System.out.println();
            return 0;
        } catch (IOException error) {
            System.out.println("client failed: " + error);
            return 1;
        }
    }

    private static void runServer(int port, SSLContext context, String[] protocols) throws IOException {
        SSLServerSocket listener = (SSLServerSocket) context.getServerSocketFactory()
                .createServerSocket(port, 50, InetAddress.getLoopbackAddress());
        SSLParameters parameters = listener.getSSLParameters();
        parameters.setProtocols(protocols);
        parameters.setNeedClientAuth(true);
        listener.setSSLParameters(parameters);
        System.out.println("listening on 127.0.0.1:" + listener.getLocalPort());
        System.out.flush();
        while (true) {
            try (SSLSocket socket = (SSLSocket) listener.accept()) {
                socket.setSoTimeout(10_000);
                readRequestHead(socket.getInputStream());
                X509Certificate peer = (X509Certificate) socket.getSession().getPeerCertificates()[0];
                byte[] body = ("hello from java, " + peer.getSubjectX500Principal().getName() + "\n")
                        .getBytes(StandardCharsets.UTF_8);
                OutputStream out = socket.getOutputStream();
                out.write(("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + body.length
                        + "\r\nConnection: close\r\n\r\n").getBytes(StandardCharsets.US_ASCII));
                out.write(body);
                out.flush();
                System.out.println("answered " + socket.getSession().getProtocol() + " request");
                // Leaving the try block closes the socket: user_canceled, then close_notify (TLS 1.3).
            } catch (IOException error) {
                System.out.println("connection failed: " + error);
            }
            System.out.flush();
        }
    }

    /** Reads up to the blank line that ends an HTTP request head. */
    private static void readRequestHead(InputStream in) throws IOException {
        ByteArrayOutputStream head = new ByteArrayOutputStream();
        int last4 = 0;
        int next;
        while ((next = in.read()) != -1) {
            head.write(next);
            last4 = (last4 << 8) | next;
            if (last4 == 0x0D0A0D0A) return;
        }
        throw new IOException("the client closed before the end of its request (" + head.size() + " bytes)");
    }
}
