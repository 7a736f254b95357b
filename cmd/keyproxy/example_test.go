package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The operator's first two commands on a new host: validate the
// configuration, then apply the schema.
func Example() {
	dir, err := os.MkdirTemp("", "keyproxy-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	env := []string{"KEYPROXY_STORE_DSN=" + filepath.Join(dir, "keyproxy.db")}

	code := run([]string{"check-config"}, env, os.Stdout, os.Stderr)
	fmt.Println("exit", code)

	var out bytes.Buffer
	code = run([]string{"migrate"}, env, &out, os.Stderr)
	_, report, _ := strings.Cut(out.String(), "\n") // the first line names the file
	fmt.Print(report)
	fmt.Println("exit", code)
	// Output:
	// configuration OK
	// exit 0
	//   migration 1 (teams, users, keys): applied
	//   migration 2 (covering indexes for key resolution): applied
	//   migration 3 (owner and team state on each key): applied
	//   audit tables: created
	// schema migrated to version 3
	// exit 0
}
