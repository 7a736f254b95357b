// Command keyproxy is the authenticating reverse proxy for Wevion API keys.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// Exit codes.
const (
	exitOK       = 0
	exitFailure  = 1 // runtime failure (store unreachable, listener busy, …)
	exitBadUsage = 2 // bad flags or bad configuration
)

// usageError marks errors that are the operator's input, not a failure.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func main() {
	os.Exit(run(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}

// run is main without globals, so tests can drive the CLI.
func run(args, environ []string, stdout, stderr io.Writer) int {
	root := newRootCmd(environ, stdout, stderr)
	markUsageErrors(root)
	root.SetArgs(args)
	if _, _, err := root.Find(args); err != nil {
		fmt.Fprintf(stderr, "keyproxy: %s\n", unknownCommand(err))
		return exitBadUsage
	}
	if err := root.Execute(); err != nil {
		fmt.Fprintf(stderr, "keyproxy: %v\n", err)
		var ue usageError
		if errors.As(err, &ue) {
			return exitBadUsage
		}
		return exitFailure
	}
	return exitOK
}

func newRootCmd(environ []string, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "keyproxy",
		Short: "Authenticating reverse proxy for Wevion API keys",
		Long: `keyproxy validates "Authorization: Bearer <key>" against its key store,
applies per-user rate limits, records an audit event for every call, tells the
backend who is calling through X-Wevion-* headers, and serves an admin API to
create, list and revoke keys.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	cf := &clientFlags{environ: envMap(environ)}
	root.AddCommand(
		newServeCmd(environ),
		newKeysCmd(cf, stdout),
		newUsersCmd(cf, stdout),
		newTeamsCmd(cf, stdout),
		newAuditCmd(cf, stdout),
		newCheckConfigCmd(environ, stdout),
		newMigrateCmd(environ, stdout),
		newVersionCmd(stdout),
		newEchoUpstreamCmd(stdout),
	)
	return root
}

func newCheckConfigCmd(environ []string, stdout io.Writer) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "check-config",
		Short: "Validate the configuration (file and KEYPROXY_* environment) without starting",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if _, err := LoadConfig(file, environ); err != nil {
				return usageError{err}
			}
			fmt.Fprintln(stdout, "configuration OK")
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "", "YAML configuration file (default: built-in defaults)")
	return cmd
}
