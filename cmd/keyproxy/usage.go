package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// markUsageErrors makes cobra's own checks of the command line (argument
// count, required flags) usage errors, so that they exit 2 like a bad flag
// and unlike a failure of the work itself.
func markUsageErrors(c *cobra.Command) {
	if args := c.Args; args != nil {
		c.Args = func(cmd *cobra.Command, a []string) error {
			if err := args(cmd, a); err != nil {
				return usageError{err}
			}
			return nil
		}
	}
	// Cobra checks required flags after PreRunE: checking them here first
	// lets the error carry its kind.
	if c.PreRunE == nil && c.PreRun == nil {
		c.PreRunE = func(cmd *cobra.Command, _ []string) error {
			if err := cmd.ValidateRequiredFlags(); err != nil {
				return usageError{err}
			}
			return nil
		}
	}
	// A group (keys, users, teams) given an unknown subcommand would print
	// its help and exit 0, hiding a typo from a script.
	if c.HasParent() && c.HasSubCommands() && c.Run == nil && c.RunE == nil {
		c.RunE = func(cmd *cobra.Command, a []string) error {
			if len(a) > 0 {
				return usageError{fmt.Errorf("unknown command %q for %q", a[0], cmd.CommandPath())}
			}
			return cmd.Help()
		}
	}
	for _, sub := range c.Commands() {
		markUsageErrors(sub)
	}
}

// unknownCommand puts cobra's "Did you mean this?" block on the error's
// one line.
func unknownCommand(err error) string {
	head, suggestions, ok := strings.Cut(err.Error(), "\n\nDid you mean this?\n")
	if !ok {
		return strings.TrimSpace(err.Error())
	}
	return fmt.Sprintf("%s (did you mean %s?)", head, strings.Join(strings.Fields(suggestions), " or "))
}
