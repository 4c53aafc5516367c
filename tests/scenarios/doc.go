// Package scenarios runs the whole charm, as built for Juju, through the multi-unit test bed
// (tests/bed): real systemd-nspawn units, the compiled dispatch binary, the stand-in Concourse
// served as GitHub-shaped release tarballs, and a real throwaway PostgreSQL behind a stand-in
// postgresql provider application.
//
// The scenarios themselves are the _test.go files. The non-test files are the world they run
// in (Fixture: what is built once per process; Scenario: one bed with its own release server)
// and small composable checks returning "got …; want …" errors. tests/demo reuses them for the
// live demo, which is why they take a testing.TB rather than a *testing.T.
package scenarios
