package concourse

import (
	"strings"
	"testing"
	"time"
)

// WebEnv lists the admin first, then the extra local users, and the admin always in the main
// team; a user named twice or a password with a list separator is refused, naming the user and
// never the password.
func TestWebEnvLocalUsers(t *testing.T) {
	t.Parallel()
	base := WebConfig{BindPort: 8080, SessionSigningKeyPath: "/k/s", TSAHostKeyPath: "/k/t", AdminUser: "admin", AdminPassword: "$2a$10$hash"}
	cases := []struct {
		name      string
		users     []LocalUser
		main      []string
		wantUsers string
		wantMain  string
		wantErr   string
	}{
		{"admin only", nil, nil, "admin:$2a$10$hash", "admin", ""},
		{"extra users and main team", []LocalUser{{"alice", "h1"}, {"bob", "h2"}}, []string{"alice", "admin", "alice"}, "admin:$2a$10$hash,alice:h1,bob:h2", "admin,alice", ""},
		{"user twice", []LocalUser{{"alice", "h1"}, {"alice", "h2"}}, nil, "", "", "local user alice is listed twice"},
		{"the admin again", []LocalUser{{"admin", "other"}}, nil, "", "", "local user admin is listed twice (or is the admin user)"},
		{"comma in a password", []LocalUser{{"alice", "a,b"}}, nil, "", "", "the password of local user alice contains ','"},
		{"colon in a name", []LocalUser{{"al:ice", "x"}}, nil, "", "", `user name "al:ice" may not contain`},
		{"main team name with a space", nil, []string{"a b"}, "", "", `user name "a b" may not contain`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := base
			cfg.ExtraLocalUsers, cfg.MainTeamLocalUsers = c.users, c.main
			vars, err := WebEnv(cfg)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) || strings.Contains(err.Error(), "a,b") {
					t.Fatalf("WebEnv: %v; want %q (without the password)", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, v := range vars {
				got[v.Name] = v.Value
			}
			if got["CONCOURSE_ADD_LOCAL_USER"] != c.wantUsers || got["CONCOURSE_MAIN_TEAM_LOCAL_USER"] != c.wantMain {
				t.Errorf("users %q, main team %q; want %q, %q", got["CONCOURSE_ADD_LOCAL_USER"], got["CONCOURSE_MAIN_TEAM_LOCAL_USER"], c.wantUsers, c.wantMain)
			}
		})
	}
}

func TestBcrypt(t *testing.T) {
	t.Parallel()
	h, err := HashPassword("pw-1")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ok := HashMatches(h, "pw-1")
	t.Logf("one bcrypt check at cost %d: %s", MinBcryptCost, time.Since(start).Round(time.Millisecond))
	if !IsBcrypt(h) || !ok || HashMatches(h, "pw-2") {
		t.Errorf("hash %q: IsBcrypt %v, matches its password %v, matches another", h, IsBcrypt(h), ok)
	}
	for _, s := range []string{"pw-1", "$2a$04$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy", "$2a$10$short", "$1$abc"} {
		if IsBcrypt(s) {
			t.Errorf("IsBcrypt(%q) = true; want false (cost below 10, malformed, or not bcrypt)", s)
		}
	}
}
