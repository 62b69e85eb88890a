// Command composecheck loads a Compose file the way `docker compose` does
// (schema validation, ${VAR:-default} interpolation from the environment and
// a .env beside it, relative paths resolved against the project directory,
// depends_on consistency) and then checks what the loader leaves alone: that
// every bind-mounted file or directory exists in the checkout and that no two
// services publish the same host port. It runs where no Docker daemon is.
//
//	go run . [-project-dir DIR] [FILE]   # FILE defaults to DIR/docker-compose.yml
//
// It prints one line per service and exits non-zero on the first load error
// or after listing every problem it found.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

func main() {
	dir := flag.String("project-dir", ".", "directory that relative paths are taken from")
	flag.Parse()
	file := filepath.Join(*dir, "docker-compose.yml")
	if flag.NArg() > 0 {
		file = flag.Arg(0)
	}

	project, err := load(*dir, file)
	if err != nil {
		fmt.Fprintf(os.Stderr, "composecheck: loading %s failed: %v\n", file, err)
		os.Exit(1)
	}

	problems := append(missingBindSources(project), clashingHostPorts(project)...)
	for _, name := range project.ServiceNames() {
		fmt.Println(describe(project.Services[name]))
	}
	for _, p := range problems {
		fmt.Fprintf(os.Stderr, "composecheck: %s\n", p)
	}
	if len(problems) > 0 {
		os.Exit(1)
	}
	fmt.Printf("composecheck: %s is valid: %d services, %d volumes\n",
		file, len(project.Services), len(project.Volumes))
}

// load reads the file as `docker compose -f FILE --project-directory DIR`
// would, with the process environment taking precedence over DIR/.env.
func load(dir, file string) (*types.Project, error) {
	options, err := cli.NewProjectOptions([]string{file},
		cli.WithWorkingDirectory(dir),
		cli.WithOsEnv,
		cli.WithDotEnv,
		cli.WithName("toll"),
		cli.WithResolvedPaths(true),
		cli.WithConsistency(true),
	)
	if err != nil {
		return nil, err
	}
	return options.LoadProject(context.Background())
}

// missingBindSources lists bind mounts whose host path does not exist: the
// Docker daemon would create an empty directory in its place, so a mistyped
// config file path would start a service with no config at all.
func missingBindSources(project *types.Project) []string {
	var problems []string
	for _, name := range project.ServiceNames() {
		for _, volume := range project.Services[name].Volumes {
			if volume.Type != types.VolumeTypeBind {
				continue
			}
			if _, err := os.Stat(volume.Source); err != nil {
				problems = append(problems, fmt.Sprintf(
					"service %s mounts %s, which does not exist", name, volume.Source))
			}
		}
	}
	return problems
}

// clashingHostPorts lists host ports that more than one service publishes.
func clashingHostPorts(project *types.Project) []string {
	owners := map[string][]string{}
	for _, name := range project.ServiceNames() {
		for _, port := range project.Services[name].Ports {
			if port.Published == "" {
				continue
			}
			key := fmt.Sprintf("%s:%s/%s", port.HostIP, port.Published, port.Protocol)
			owners[key] = append(owners[key], name)
		}
	}
	var problems []string
	for key, services := range owners {
		if len(services) > 1 {
			problems = append(problems, fmt.Sprintf(
				"host port %s is published by %s", key, strings.Join(services, ", ")))
		}
	}
	sort.Strings(problems)
	return problems
}

// describe is one line about a service: what it runs and what it publishes.
func describe(service types.ServiceConfig) string {
	runs := service.Image
	if service.Build != nil {
		runs = "build " + service.Build.Context
	}
	var ports []string
	for _, port := range service.Ports {
		ports = append(ports, fmt.Sprintf("%s->%d", port.Published, port.Target))
	}
	var deps []string
	for dep := range service.DependsOn {
		deps = append(deps, dep)
	}
	sort.Strings(deps)
	return fmt.Sprintf("  %-12s %s ports=[%s] depends_on=[%s]",
		service.Name, runs, strings.Join(ports, " "), strings.Join(deps, " "))
}
