// A Go crypto/tls counterpart of `mtls hello-server` (and `mtls echo-server` with -echo), for same-run
// comparisons (compare-servers.sh). Standard library only, at crypto/tls's defaults apart from mutual TLS:
// session tickets stay on unless -tickets=false, so the comparison is with what a Go user gets.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
)

func main() {
	pki := flag.String("pki", "", "a PKI folder from `mtls pki init` (ca.pem, server.pem, server.key)")
	listen := flag.String("listen", "127.0.0.1:8443", "address to listen on (port 0: any; the chosen one is printed)")
	tickets := flag.Bool("tickets", true, "issue TLS session tickets (crypto/tls's default)")
	echo := flag.Bool("echo", false, "echo every byte back instead of serving HTTP")
	flag.Parse()
	if *pki == "" {
		log.Fatal("give -pki DIR")
	}

	certificate, err := tls.LoadX509KeyPair(filepath.Join(*pki, "server.pem"), filepath.Join(*pki, "server.key"))
	if err != nil {
		log.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(*pki, "ca.pem"))
	if err != nil {
		log.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		log.Fatal("no certificate in ca.pem")
	}
	config := &tls.Config{
		Certificates:           []tls.Certificate{certificate},
		ClientAuth:             tls.RequireAndVerifyClientCert,
		ClientCAs:              roots,
		MinVersion:             tls.VersionTLS12,
		MaxVersion:             tls.VersionTLS13,
		SessionTicketsDisabled: !*tickets,
	}

	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("listening on", listener.Addr())
	tlsListener := tls.NewListener(listener, config)
	if *echo {
		serveEcho(tlsListener)
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "hello\n")
	})
	// The error log is silenced: load generators that close right after the reply make net/http log
	// every "connection reset" and handshake EOF, and logging is not what is being compared.
	server := &http.Server{Handler: mux, ErrorLog: log.New(io.Discard, "", 0)}
	log.Fatal(server.Serve(tlsListener))
}

func serveEcho(listener net.Listener) {
	for {
		connection, err := listener.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func(connection net.Conn) {
			defer connection.Close()
			io.Copy(connection, connection)
		}(connection)
	}
}
