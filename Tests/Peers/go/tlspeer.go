// A Go crypto/tls peer for swift-mtls's interop tests: an mTLS client or server, standard library only.
//
//	tlspeer client -port N -tls 1.2|1.3 -ca CA.pem [-cert C.pem -key C.key [-sign-with K.key]] [-name localhost]
//	    connects to 127.0.0.1:N, sends GET /hello, prints "protocol: TLS 1.x" and the response;
//	    exits 1 with "client failed: ..." on any error. -sign-with makes an impostor: it presents
//	    C.pem but signs its CertificateVerify with K.key (PKCS#8 or SEC 1 PEM), which is not C.pem's key.
//	tlspeer server -port 0 -tls 1.2|1.3 -cert S.pem -key S.key -ca CA.pem
//	    prints "listening on 127.0.0.1:PORT", requires a client certificate from CA.pem, and answers
//	    each request with "hello from go, CN=..." (one line per outcome), until it is killed.
//
// Both sides offer exactly one TLS version, so the version under test is forced from this side.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"time"
)

var versions = map[string]uint16{"1.2": tls.VersionTLS12, "1.3": tls.VersionTLS13}

var versionNames = map[uint16]string{tls.VersionTLS12: "TLS 1.2", tls.VersionTLS13: "TLS 1.3"}

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "client" && os.Args[1] != "server") {
		fmt.Fprintln(os.Stderr, "usage: tlspeer client|server -port N -tls 1.2|1.3 -ca CA.pem [-cert C -key K] [-name NAME]")
		os.Exit(64)
	}
	flags := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	port := flags.Int("port", 0, "port to connect to (client) or listen on (server; 0 picks one)")
	version := flags.String("tls", "1.3", "the one TLS version to offer: 1.2 or 1.3")
	caFile := flags.String("ca", "", "trusted CA certificates (PEM)")
	certFile := flags.String("cert", "", "our certificate chain (PEM)")
	keyFile := flags.String("key", "", "our private key (PEM)")
	name := flags.String("name", "localhost", "the server name to send and verify (client)")
	signWith := flags.String("sign-with", "", "sign with this key instead of -key's (an impostor; client)")
	flags.Parse(os.Args[2:])

	tlsVersion, ok := versions[*version]
	if !ok {
		fmt.Fprintf(os.Stderr, "-tls takes 1.2 or 1.3, not %q\n", *version)
		os.Exit(64)
	}
	roots, err := loadRoots(*caFile)
	if err != nil {
		fail(err)
	}
	config := &tls.Config{MinVersion: tlsVersion, MaxVersion: tlsVersion}
	if *certFile != "" {
		identity, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			fail(fmt.Errorf("cannot load %s / %s: %w", *certFile, *keyFile, err))
		}
		if *signWith != "" {
			if identity.PrivateKey, err = loadPrivateKey(*signWith); err != nil {
				fail(err)
			}
		}
		config.Certificates = []tls.Certificate{identity}
	}

	if os.Args[1] == "client" {
		config.RootCAs = roots
		config.ServerName = *name
		if err := runClient(*port, config); err != nil {
			fail(err)
		}
		return
	}
	config.ClientCAs = roots
	config.ClientAuth = tls.RequireAndVerifyClientCert
	if err := runServer(*port, config); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Printf("%s failed: %v\n", os.Args[1], err)
	os.Exit(1)
}

func loadRoots(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in %s", file)
	}
	return pool, nil
}

// loadPrivateKey reads the first private key of a PEM file, PKCS#8 or SEC 1 (EC).
func loadPrivateKey(file string) (any, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("no PEM block in %s", file)
	}
	if key, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		return key, nil
	}
	return x509.ParseECPrivateKey(block.Bytes)
}

func runClient(port int, config *tls.Config) error {
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	conn, err := tls.DialWithDialer(dialer, "tcp", fmt.Sprintf("127.0.0.1:%d", port), config)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Printf("protocol: %s\n", versionNames[conn.ConnectionState().Version])
	request := fmt.Sprintf("GET /hello HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", config.ServerName)
	if _, err := io.WriteString(conn, request); err != nil {
		return err
	}
	// In TLS 1.3 a server refuses a client certificate after the client's handshake has completed:
	// the refusal arrives here, as an alert, instead of the response.
	response, err := io.ReadAll(conn)
	fmt.Print(string(response))
	if err != nil {
		return err
	}
	if len(response) == 0 {
		return errors.New("the server closed without answering")
	}
	fmt.Println()
	return nil
}

func runServer(port int, config *tls.Config) error {
	listener, err := tls.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port), config)
	if err != nil {
		return err
	}
	fmt.Printf("listening on %s\n", listener.Addr())
	server := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		// net/http reports failed handshakes through its error log: one line each.
		ErrorLog: log.New(os.Stdout, "", 0),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			subject := r.TLS.PeerCertificates[0].Subject.String()
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprintf(w, "hello from go, %s\n", subject)
			fmt.Printf("answered %s request from %s\n", versionNames[r.TLS.Version], subject)
		}),
	}
	return server.Serve(listener)
}
