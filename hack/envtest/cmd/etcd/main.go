// Command etcd is the etcd server at the version the Kubernetes release in
// go.mod is tested with, used as the storage of the integration-test control
// plane. See docs/development.md.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
