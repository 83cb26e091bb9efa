package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/extauthz/extauthz/internal/config"
)

// runValidate checks a config file, and the rate limit directory it names, with exactly the
// checks the server runs before it serves (checkConfig), without starting anything: exit 0 when both are valid, exit 1 listing every problem with its field path.
func runValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("extauthz config validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config `FILE` to check")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *path == "" {
		fmt.Fprintln(stderr, "usage: extauthz config validate --config FILE")
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		printProblems(stderr, *path, err)
		return 1
	}
	if err := checkConfig(cfg); err != nil {
		printProblems(stderr, *path, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n", *path)
	return 0
}

// printProblems prints one problem a line, whether err joins several or is a single one.
func printProblems(w io.Writer, what string, err error) {
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	fmt.Fprintf(w, "%s: %d problem(s):\n", what, len(errs))
	for _, e := range errs {
		fmt.Fprintf(w, "  %v\n", e)
	}
}
