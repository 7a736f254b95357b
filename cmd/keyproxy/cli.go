package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// clientFlags are shared by every subcommand that talks to the admin API.
type clientFlags struct {
	adminURL  string
	tokenFile string
	tls       clientTLS
	actor     string
	json      bool
	environ   map[string]string
}

func (f *clientFlags) register(cmd *cobra.Command) {
	def := f.environ["KEYPROXY_ADMIN_URL"]
	if def == "" {
		def = "http://127.0.0.1:9090"
	}
	cmd.PersistentFlags().StringVar(&f.adminURL, "admin-url", def, "admin API base URL (env KEYPROXY_ADMIN_URL)")
	cmd.PersistentFlags().StringVar(&f.tokenFile, "token-file", "", "file holding the admin token (default: env KEYPROXY_ADMIN_TOKEN)")
	cmd.PersistentFlags().StringVar(&f.tls.caFile, "ca-file", "", "CA bundle to verify an https admin URL (default: the system's)")
	cmd.PersistentFlags().StringVar(&f.tls.certFile, "cert-file", "", "client certificate, when the admin listener requires one")
	cmd.PersistentFlags().StringVar(&f.tls.keyFile, "key-file", "", "client certificate's private key")
	cmd.PersistentFlags().StringVar(&f.actor, "actor", "", "who is acting, recorded in the audit event (X-Actor-Id)")
	cmd.PersistentFlags().BoolVar(&f.json, "json", false, "print JSON instead of a table")
}

func (f *clientFlags) client() (*adminClient, error) {
	return newAdminClient(f.adminURL, f.environ["KEYPROXY_ADMIN_TOKEN"], f.tokenFile, f.actor, f.tls)
}

// call makes one admin API request with the client the flags describe.
func (f *clientFlags) call(cmd *cobra.Command, method, path string, q url.Values, body, out any) (http.Header, error) {
	cl, err := f.client()
	if err != nil {
		return nil, err
	}
	return cl.do(cmd.Context(), method, path, q, body, out)
}

// showKey makes a request that one key answers (get, update) and prints it.
func (f *clientFlags) showKey(cmd *cobra.Command, w io.Writer, method, id string, body any) error {
	var k keyView
	if _, err := f.call(cmd, method, "/admin/v1/keys/"+url.PathEscape(id), nil, body, &k); err != nil {
		return err
	}
	if f.json {
		return printJSON(w, k)
	}
	printKeys(w, []keyView{k})
	return nil
}

// keyView is a key as the admin API returns it, every field present as
// there, so that --json prints what the API sends (null included).
type keyView struct {
	ID         string  `json:"id"`
	Name       string  `json:"name"`
	Start      string  `json:"start"`
	UserID     string  `json:"user_id"`
	TeamID     string  `json:"team_id"`
	Role       string  `json:"role"`
	CreatedAt  string  `json:"created_at"`
	LastUsedAt *string `json:"last_used_at"`
	ExpiresAt  *string `json:"expires_at"`
	RevokedAt  *string `json:"revoked_at"`
}

// createdKeyView is the create response: the key, and no use or
// revocation yet.
type createdKeyView struct {
	ID        string  `json:"id"`
	Key       string  `json:"key"`
	Name      string  `json:"name"`
	Start     string  `json:"start"`
	UserID    string  `json:"user_id"`
	TeamID    string  `json:"team_id"`
	Role      string  `json:"role"`
	CreatedAt string  `json:"created_at"`
	ExpiresAt *string `json:"expires_at"`
}

func orDash(s *string) string {
	if s == nil || *s == "" {
		return "-"
	}
	return *s
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printKeys(w io.Writer, keys []keyView) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSTART\tUSER\tTEAM\tROLE\tCREATED\tLAST USED\tEXPIRES\tREVOKED")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\t%s…\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Name, k.Start, k.UserID, k.TeamID, k.Role,
			k.CreatedAt, orDash(k.LastUsedAt), orDash(k.ExpiresAt), orDash(k.RevokedAt))
	}
	_ = tw.Flush()
}

func newKeysCmd(f *clientFlags, stdout io.Writer) *cobra.Command {
	keys := &cobra.Command{Use: "keys", Short: "Create, list, update and revoke API keys through the admin API"}
	f.register(keys)

	var c struct{ name, user, team, role, expires string }
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a key (the full key is printed once, never again)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			body := map[string]any{"name": c.name, "user_id": c.user, "team_id": c.team, "role": c.role}
			if c.expires != "" {
				body["expires_at"] = c.expires
			}
			var k createdKeyView
			if _, err := f.call(cmd, http.MethodPost, "/admin/v1/keys", nil, body, &k); err != nil {
				return err
			}
			if f.json {
				return printJSON(stdout, k)
			}
			fmt.Fprintf(stdout, "id:      %s\nname:    %s\nuser:    %s (team %s, role %s)\nexpires: %s\n\n%s\n\nStore this key now: it is shown only once.\n",
				k.ID, k.Name, k.UserID, k.TeamID, k.Role, orDash(k.ExpiresAt), k.Key)
			return nil
		},
	}
	create.Flags().StringVar(&c.name, "name", "", "key name (required)")
	create.Flags().StringVar(&c.user, "user", "", "owner's user id (required)")
	create.Flags().StringVar(&c.team, "team", "", "owner's team id (required)")
	create.Flags().StringVar(&c.role, "role", "", "owner's current role (required; must be a creator role)")
	create.Flags().StringVar(&c.expires, "expires-at", "", "optional end, RFC 3339 (e.g. 2027-01-01T00:00:00Z)")
	for _, n := range []string{"name", "user", "team", "role"} {
		_ = create.MarkFlagRequired(n)
	}

	var l struct {
		team, user string
		revoked    bool
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List a team's keys",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{"team_id": {l.team}}
			if l.user != "" {
				q.Set("user_id", l.user)
			}
			if l.revoked {
				q.Set("include_revoked", "true")
			}
			var out struct {
				Keys []keyView `json:"keys"`
			}
			if _, err := f.call(cmd, http.MethodGet, "/admin/v1/keys", q, nil, &out); err != nil {
				return err
			}
			if f.json {
				return printJSON(stdout, out)
			}
			printKeys(stdout, out.Keys)
			return nil
		},
	}
	list.Flags().StringVar(&l.team, "team", "", "team id (required)")
	list.Flags().StringVar(&l.user, "user", "", "only this user's keys")
	list.Flags().BoolVar(&l.revoked, "include-revoked", false, "also list revoked keys")
	_ = list.MarkFlagRequired("team")

	get := &cobra.Command{
		Use:   "get KEY_ID",
		Short: "Show one key",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.showKey(cmd, stdout, http.MethodGet, args[0], nil)
		},
	}

	var u struct {
		name, expires string
		clear         bool
	}
	update := &cobra.Command{
		Use:   "update KEY_ID",
		Short: "Rename a key or schedule its end (rotation with overlap)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			body := map[string]any{}
			if cmd.Flags().Changed("name") {
				body["name"] = u.name
			}
			switch {
			case u.clear && u.expires != "":
				return usageError{fmt.Errorf("--expires-at and --clear-expiry exclude each other")}
			case u.clear:
				body["expires_at"] = nil
			case u.expires != "":
				body["expires_at"] = u.expires
			}
			if len(body) == 0 {
				return usageError{fmt.Errorf("nothing to update: pass --name, --expires-at or --clear-expiry")}
			}
			return f.showKey(cmd, stdout, http.MethodPatch, args[0], body)
		},
	}
	update.Flags().StringVar(&u.name, "name", "", "new name")
	update.Flags().StringVar(&u.expires, "expires-at", "", "end of the key, RFC 3339")
	update.Flags().BoolVar(&u.clear, "clear-expiry", false, "remove a scheduled end")

	revoke := &cobra.Command{
		Use:   "revoke KEY_ID",
		Short: "Revoke a key at once, on every replica",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			h, err := f.call(cmd, http.MethodDelete, "/admin/v1/keys/"+url.PathEscape(args[0]), nil, nil, nil)
			if err != nil {
				return err
			}
			acks := h.Get("Keyproxy-Revocation-Acks")
			if f.json {
				return printJSON(stdout, map[string]any{"id": args[0], "revoked": true, "acks": acks})
			}
			fmt.Fprintf(stdout, "revoked %s (replicas confirmed: %s)\n", args[0], acks)
			return nil
		},
	}
	keys.AddCommand(create, list, get, update, revoke)
	return keys
}

func newUsersCmd(f *clientFlags, stdout io.Writer) *cobra.Command {
	users := &cobra.Command{Use: "users", Short: "Set a user's team, role and state"}
	f.register(users)
	var s struct {
		team, role string
		active     bool
	}
	set := &cobra.Command{
		Use:   "set USER_ID",
		Short: "Create or replace a user; their keys follow at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out map[string]any
			body := map[string]any{"team_id": s.team, "role": s.role, "active": s.active}
			if _, err := f.call(cmd, http.MethodPut, "/admin/v1/users/"+url.PathEscape(args[0]), nil, body, &out); err != nil {
				return err
			}
			if f.json {
				return printJSON(stdout, out)
			}
			fmt.Fprintf(stdout, "user %s: team %v, role %v, active %v\n", args[0], out["team_id"], out["role"], out["active"])
			if ids, _ := out["revoked_key_ids"].([]any); len(ids) > 0 {
				names := make([]string, len(ids))
				for i, id := range ids {
					names[i] = fmt.Sprint(id)
				}
				fmt.Fprintf(stdout, "revoked, as the user left the team: %s\n", strings.Join(names, " "))
			}
			return nil
		},
	}
	set.Flags().StringVar(&s.team, "team", "", "team id (required)")
	set.Flags().StringVar(&s.role, "role", "", "current role (required)")
	set.Flags().BoolVar(&s.active, "active", true, "false deactivates the user (their keys are refused)")
	_ = set.MarkFlagRequired("team")
	_ = set.MarkFlagRequired("role")
	users.AddCommand(set)
	return users
}

func newTeamsCmd(f *clientFlags, stdout io.Writer) *cobra.Command {
	teams := &cobra.Command{Use: "teams", Short: "Set a team's subscription state"}
	f.register(teams)
	var active string
	set := &cobra.Command{
		Use:   "set TEAM_ID",
		Short: "Mark a team's subscription active or inactive",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := strconv.ParseBool(active)
			if err != nil {
				return usageError{fmt.Errorf("--active must be true or false")}
			}
			var out map[string]any
			if _, err := f.call(cmd, http.MethodPut, "/admin/v1/teams/"+url.PathEscape(args[0]), nil, map[string]any{"active": a}, &out); err != nil {
				return err
			}
			if f.json {
				return printJSON(stdout, out)
			}
			fmt.Fprintf(stdout, "team %s: active %v\n", args[0], out["active"])
			return nil
		},
	}
	set.Flags().StringVar(&active, "active", "", "true or false (required)")
	_ = set.MarkFlagRequired("active")
	teams.AddCommand(set)
	return teams
}

func newAuditCmd(f *clientFlags, stdout io.Writer) *cobra.Command {
	var q struct{ team, key, user, since, until, cursor string }
	var limit int
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Query audit events, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := url.Values{}
			var again []string // the filters, for the next page's command
			for _, p := range []struct{ flag, param, val string }{
				{"team", "team_id", q.team}, {"key", "key_id", q.key}, {"user", "user_id", q.user},
				{"since", "since", q.since}, {"until", "until", q.until}, {"cursor", "cursor", q.cursor},
			} {
				if !cmd.Flags().Changed(p.flag) {
					continue
				}
				// An empty filter from an unset shell variable must not
				// widen the query to every team.
				if p.val == "" {
					return usageError{fmt.Errorf("--%s is empty: give a value or leave the flag out", p.flag)}
				}
				v.Set(p.param, p.val)
				if p.flag != "cursor" {
					again = append(again, "--"+p.flag, p.val)
				}
			}
			v.Set("limit", strconv.Itoa(limit))
			if cmd.Flags().Changed("limit") {
				again = append(again, "--limit", strconv.Itoa(limit))
			}
			var out struct {
				Events     []map[string]any `json:"events"`
				NextCursor *string          `json:"next_cursor"`
			}
			if _, err := f.call(cmd, http.MethodGet, "/admin/v1/audit", v, nil, &out); err != nil {
				return err
			}
			if f.json {
				return printJSON(stdout, out)
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tTYPE\tKEY\tUSER\tACTOR\tMETHOD\tPATH\tSTATUS\tOUTCOME")
			for _, e := range out.Events {
				fmt.Fprintf(tw, "%v\t%v\t%v\t%v\t%v\t%v\t%v\t%v\t%v\n", e["time"], e["type"], dash(e["key_id"]), dash(e["user_id"]),
					dash(e["actor"]), dash(e["method"]), dash(e["path"]), dash(e["status"]), dash(e["outcome"]))
			}
			_ = tw.Flush()
			if out.NextCursor != nil {
				fmt.Fprintf(stdout, "\nmore: keyproxy audit %s\n", strings.Join(append(again, "--cursor", *out.NextCursor), " "))
			}
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&q.team, "team", "", "team id")
	cmd.Flags().StringVar(&q.key, "key", "", "key id")
	cmd.Flags().StringVar(&q.user, "user", "", "user id")
	cmd.Flags().StringVar(&q.since, "since", "", "RFC 3339 start (inclusive)")
	cmd.Flags().StringVar(&q.until, "until", "", "RFC 3339 end (exclusive)")
	cmd.Flags().StringVar(&q.cursor, "cursor", "", "next_cursor of the previous page")
	cmd.Flags().IntVar(&limit, "limit", 50, "events per page (1-1000)")
	return cmd
}

func dash(v any) any {
	if v == nil || v == "" {
		return "-"
	}
	return v
}
