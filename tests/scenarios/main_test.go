package scenarios

import (
	"flag"
	"os"
	"testing"
)

var (
	charmFlag  = flag.String("scenarios.charm", "", "deploy this prebuilt .charm instead of building one (e.g. build/concourse-ci-machine_amd64.charm)")
	toolsFlag  = flag.String("scenarios.tools", "", "reuse a hook-tools directory made by bed.BuildTools")
	serialFlag = flag.Bool("scenarios.serial", false, "run the scenarios one at a time instead of in parallel (bounded by -parallel)")
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(m.Run())
}
