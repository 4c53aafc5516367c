module github.com/concourse-ci-machine/concourse-ci-machine

go 1.26.8

require (
	github.com/gofrs/flock v0.13.2
	github.com/lib/pq v1.12.3
	github.com/spf13/cobra v1.10.2
	golang.org/x/crypto v0.59.0
	golang.org/x/sys v0.50.0
	gopkg.in/yaml.v3 v3.0.1
)

require (
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/spf13/pflag v1.0.9 // indirect
)
