// compose-check loads a Compose file with compose-go, the loader Docker Compose itself uses, and
// fails with the error `docker compose config` would report: schema violations, bad
// interpolation, depends_on naming an unknown service, and the like. No engine needed.
//
//	compose-check [-f docker-compose.yml] [-d project-dir]
//
// On success it prints the loaded project as JSON (every profile enabled, paths resolved against
// the project directory), which tests/unit/test_deploy_compose.py inspects further.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	file := flag.String("f", "docker-compose.yml", "compose file to load")
	dir := flag.String("d", ".", "project directory")
	flag.Parse()

	opts, err := cli.NewProjectOptions(
		[]string{*file},
		cli.WithWorkingDirectory(*dir),
		cli.WithName("lazarus"),
		cli.WithProfiles([]string{"*"}),
		cli.WithResolvedPaths(true),
		cli.WithConsistency(true),
	)
	if err != nil {
		fail(err)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		fail(err)
	}
	out, err := project.MarshalJSON()
	if err != nil {
		fail(err)
	}
	fmt.Println(string(out))
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "compose-check: %v\n", err)
	os.Exit(1)
}
