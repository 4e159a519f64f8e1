// A Go net/http server with the standard ServeMux (which cleans paths and
// redirects unclean ones) and handlers reading r.URL.Path, which net/http
// percent-decodes. Prints `PORT n` once listening on 127.0.0.1; answers
// `handler=NAME path=PATH`. Used by tests/path_backends.rs.
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
)

func answer(name, method string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if method != "" && r.Method != method {
			name = "other"
		}
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "handler=%s path=%s", name, r.URL.Path)
	}
}

func main() {
	mux := http.NewServeMux()
	mux.HandleFunc("/account", answer("account", "GET"))
	mux.HandleFunc("/pay", answer("pay", "POST"))
	mux.HandleFunc("/admin/", answer("admin", "GET"))
	mux.HandleFunc("/", answer("other", ""))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("PORT %d\n", l.Addr().(*net.TCPAddr).Port)
	http.Serve(l, mux)
}
