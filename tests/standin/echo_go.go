// An upstream in Go's net/http that answers every request with the paths Go routes on:
// r.URL.Path (decoded) and path.Clean of it (where http.ServeMux redirects).
// Usage: go run echo_go.go PORT
package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path"
)

func main() {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		routed := []string{r.URL.Path, path.Clean(r.URL.Path)}
		w.Header().Set("content-type", "application/json")
		var auth interface{}
		if a := r.Header.Get("authorization"); a != "" {
			auth = a
		}
		json.NewEncoder(w).Encode(map[string]interface{}{
			"server": "go", "routed": routed, "authorization": auth})
	})
	http.ListenAndServe("127.0.0.1:"+os.Args[1], handler)
}
