package main

import (
	"regexp"
	"strings"

	"github.com/spf13/viper"
)

// The environment's side of LoadConfig: the variables that are not one
// key each (the entries of the two maps), and those that are not
// configuration at all.

var envRoleRe = regexp.MustCompile(`^KEYPROXY_RATELIMIT_ROLES_([A-Z0-9_]{1,64})_(REQUESTS|PER|BURST)$`)

// setEnvRoles lets the environment give a policy to a role that neither
// the file nor the defaults name (KEYPROXY_RATELIMIT_ROLES_ADMIN_REQUESTS),
// which LoadConfig's key-by-key binding cannot see. A role given only part
// of a policy is then refused by Validate, naming the missing key.
func setEnvRoles(v *viper.Viper, env map[string]string) {
	for name, val := range env {
		if m := envRoleRe.FindStringSubmatch(name); m != nil {
			v.Set("ratelimit.roles."+strings.ToLower(m[1])+"."+strings.ToLower(m[2]), val)
		}
	}
}

// envPublicKeyRe names a GitHub secret-scanning key by its identifier
// (hex, as GitHub gives it), its value the PEM text or a file.
var envPublicKeyRe = regexp.MustCompile(`^KEYPROXY_SECRET_SCANNING_PUBLIC_KEYS_([A-Za-z0-9]{1,128})$`)

// setEnvPublicKeys adds the environment's secret-scanning keys to the
// file's, lower case as viper makes a file's map keys. The whole map is
// set at once: an override of one entry would hide the file's others
// from viper's lookup of the map, depending on the order it walks keys in.
func setEnvPublicKeys(v *viper.Viper, env map[string]string) {
	const key = "secret_scanning.public_keys"
	// map[string]any: the binding loop's Set of an entry the file names
	// would replace any other kind of map with one holding only that entry.
	var merged map[string]any
	for name, val := range env {
		if m := envPublicKeyRe.FindStringSubmatch(name); m != nil {
			if merged == nil {
				merged = map[string]any{}
				for id, text := range v.GetStringMapString(key) {
					merged[id] = text
				}
			}
			merged[strings.ToLower(m[1])] = val
		}
	}
	if merged != nil {
		v.Set(key, merged)
	}
}

// defaultRoles are the roles setDefaults gives a policy.
var defaultRoles = []string{"super_admin"}

// dropUnlistedDefaultRoles makes a file's ratelimit.roles the whole list:
// viper would otherwise merge the default super_admin policy into it, and
// an operator who narrowed roles to owner (or to {}) would still find
// super_admins at 1200 a minute. A default role stays when the file lists
// it or the environment sets part of it.
func dropUnlistedDefaultRoles(v *viper.Viper, cfg *Config, env map[string]string) {
	if !v.InConfig("ratelimit.roles") {
		return
	}
	for _, role := range defaultRoles {
		if v.InConfig("ratelimit.roles." + role) {
			continue
		}
		prefix := "KEYPROXY_RATELIMIT_ROLES_" + strings.ToUpper(role) + "_"
		fromEnv := false
		for name := range env {
			fromEnv = fromEnv || strings.HasPrefix(name, prefix)
		}
		if !fromEnv {
			delete(cfg.RateLimit.Roles, role)
		}
	}
}

// ignoredEnv are KEYPROXY_ variables that are not configuration keys.
var ignoredEnv = map[string]bool{
	"KEYPROXY_TEST_POSTGRES_DSN": true,
	"KEYPROXY_ADMIN_TOKEN":       true, // the CLI's credential
	"KEYPROXY_CONFIG":            true,
	"KEYPROXY_ADMIN_URL":         true, // the CLI's target
}

func envMap(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}
