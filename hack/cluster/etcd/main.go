// Command etcd is upstream etcd's server main, built from the Go modules
// because `go install go.etcd.io/etcd/server/v3@...` refuses modules with
// replace directives and Debian's etcd is too old for Kubernetes 1.36.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
