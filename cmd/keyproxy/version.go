package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = ""

// buildVersion returns the release version, else the module version or VCS
// revision the binary was built from.
func buildVersion() (ver, revision string) {
	ver = version
	if bi, ok := debug.ReadBuildInfo(); ok {
		if ver == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			ver = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	if ver == "" {
		ver = "dev"
	}
	return ver, revision
}

func newVersionCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(*cobra.Command, []string) {
			ver, rev := buildVersion()
			if rev != "" {
				fmt.Fprintf(stdout, "keyproxy %s (%s, %s)\n", ver, rev, runtime.Version())
				return
			}
			fmt.Fprintf(stdout, "keyproxy %s (%s)\n", ver, runtime.Version())
		},
	}
}
