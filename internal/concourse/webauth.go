package concourse

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// LocalUser is one entry of CONCOURSE_ADD_LOCAL_USER. Password is either the password itself or
// its bcrypt hash; WebEnv renders whatever the caller gives, so callers hash first (HashPassword)
// to keep plaintext passwords out of web.env.
type LocalUser struct{ Name, Password string }

// MinBcryptCost is the lowest cost Concourse accepts for a bcrypted local user's password
// (`concourse web --help`: "The password can be bcrypted if so, it must have a minimum cost of 10").
const MinBcryptCost = 10

// HashPassword returns the bcrypt hash Concourse accepts in place of password.
func HashPassword(password string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(password), MinBcryptCost)
	if err != nil {
		return "", fmt.Errorf("hashing a local user's password: %w", err)
	}
	return string(h), nil
}

// IsBcrypt says whether s is a bcrypt hash Concourse takes as a local user's password: the
// $2a$/$2b$/$2y$ forms with a cost of at least MinBcryptCost.
func IsBcrypt(s string) bool {
	if len(s) != 60 || !(strings.HasPrefix(s, "$2a$") || strings.HasPrefix(s, "$2b$") || strings.HasPrefix(s, "$2y$")) {
		return false
	}
	cost, err := bcrypt.Cost([]byte(s))
	return err == nil && cost >= MinBcryptCost
}

// HashMatches says whether hash is the bcrypt hash of password, so a hash rendered earlier can be
// kept: a fresh salt every hook would change web.env, and so restart the web, in every hook.
func HashMatches(hash, password string) bool {
	return IsBcrypt(hash) && bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) == nil
}

// checkLocalUser validates one user's name and password as CONCOURSE_ADD_LOCAL_USER lists them:
// "name:password" entries split on ',' with no escaping (contract §2.1), the name ending at the
// first ':'.
func checkLocalUser(u LocalUser) error {
	switch {
	case u.Name == "":
		return errors.New("a local user needs a name")
	case strings.ContainsAny(u.Name, ":,") || strings.ContainsFunc(u.Name, isSpaceOrControl):
		return fmt.Errorf("user name %q may not contain ':', ',', spaces or control characters", u.Name)
	case u.Password == "":
		return fmt.Errorf("local user %s has no password", u.Name)
	case strings.Contains(u.Password, ","):
		return fmt.Errorf("the password of local user %s contains ',', which Concourse reads as a list separator", u.Name)
	case strings.ContainsFunc(u.Password, isControl):
		return fmt.Errorf("the password of local user %s contains a control character", u.Name)
	}
	return nil
}

// addLocalUsers renders CONCOURSE_ADD_LOCAL_USER: the admin first, then c.ExtraLocalUsers; a
// name given twice is an error (Concourse would keep one of the passwords, silently).
func addLocalUsers(ck *checker, c WebConfig) string {
	seen := map[string]bool{c.AdminUser: true}
	entries := []string{c.AdminUser + ":" + c.AdminPassword}
	for _, u := range c.ExtraLocalUsers {
		if err := checkLocalUser(u); err != nil {
			ck.add("ExtraLocalUsers", "CONCOURSE_ADD_LOCAL_USER", "%v", err)
			continue
		}
		if seen[u.Name] {
			ck.add("ExtraLocalUsers", "CONCOURSE_ADD_LOCAL_USER", "local user %s is listed twice (or is the admin user)", u.Name)
			continue
		}
		seen[u.Name] = true
		entries = append(entries, u.Name+":"+u.Password)
	}
	return strings.Join(entries, ",")
}

// mainTeamLocalUsers renders CONCOURSE_MAIN_TEAM_LOCAL_USER: the admin always (the charm's own
// API calls log in as it), then c.MainTeamLocalUsers, deduplicated in order.
func mainTeamLocalUsers(ck *checker, c WebConfig) string {
	out := []string{c.AdminUser}
	for _, n := range c.MainTeamLocalUsers {
		switch {
		case n == "":
		case strings.ContainsAny(n, ":,") || strings.ContainsFunc(n, isSpaceOrControl):
			ck.add("MainTeamLocalUsers", "CONCOURSE_MAIN_TEAM_LOCAL_USER", "user name %q may not contain ':', ',', spaces or control characters", n)
		case !slices.Contains(out, n):
			out = append(out, n)
		}
	}
	return strings.Join(out, ",")
}
