package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// buildCommand is one `go build` of the release binary, reduced to what must agree between the
// Makefile and the Dockerfile.
type buildCommand struct {
	cgo, trimpath bool
	ldflags, pkg  string
}

var (
	ldflagsRe = regexp.MustCompile(`-ldflags\s+"([^"]*)"`)
	pkgRe     = regexp.MustCompile(`\s(\./cmd/extauthz)\s*$`)
)

func parseBuild(t *testing.T, where, line string) buildCommand {
	t.Helper()
	m := ldflagsRe.FindStringSubmatch(line)
	p := pkgRe.FindStringSubmatch(line)
	if m == nil || p == nil {
		t.Fatalf("%s: cannot read the build command %q", where, line)
	}
	return buildCommand{
		cgo:      strings.Contains(line, "CGO_ENABLED=0"),
		trimpath: strings.Contains(line, "-trimpath"),
		ldflags:  strings.Join(strings.Fields(m[1]), " "),
		pkg:      p[1],
	}
}

// The image must contain the same binary `make build` makes: static, trimmed, stamped the same.
func TestDockerfileBuildMatchesMakefile(t *testing.T) {
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	df, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}

	vars := map[string]string{}
	var recipe string
	lines := strings.Split(string(mk), "\n")
	for i, l := range lines {
		if k, v, ok := strings.Cut(l, ":="); ok {
			if k = strings.TrimSpace(k); k != "" && !strings.ContainsAny(k, " \t") {
				vars[k] = strings.TrimSpace(v)
			}
		}
		if strings.HasPrefix(l, "build:") && i+1 < len(lines) {
			recipe = strings.TrimSpace(lines[i+1])
		}
	}
	if recipe == "" {
		t.Fatal("Makefile has no build recipe")
	}
	expand := func(s string) string {
		for i := 0; i < 4; i++ {
			for k, v := range vars {
				s = strings.ReplaceAll(s, "$("+k+")", v)
			}
		}
		s = strings.ReplaceAll(s, "$(GO)", "go")
		s = strings.ReplaceAll(s, "$(VERSION)", "VERSION")
		return strings.ReplaceAll(s, "$(COMMIT)", "COMMIT")
	}
	mkBuild := parseBuild(t, "Makefile", expand(recipe))

	var dfLine string
	for _, l := range strings.Split(string(df), "\n") {
		if strings.HasPrefix(l, "RUN ") && strings.Contains(l, "go build") {
			dfLine = strings.NewReplacer("${VERSION}", "VERSION", "${COMMIT}", "COMMIT").Replace(l)
		}
	}
	if dfLine == "" {
		t.Fatal("Dockerfile has no RUN go build")
	}
	dfBuild := parseBuild(t, "Dockerfile", dfLine)
	if mkBuild != dfBuild {
		t.Fatalf("the image is built differently from make build:\n Makefile:   %+v\n Dockerfile: %+v", mkBuild, dfBuild)
	}
	if !mkBuild.cgo || !mkBuild.trimpath {
		t.Fatalf("the release build must be static and trimmed: %+v", mkBuild)
	}

	text := string(df)
	if strings.Contains(text, "HEALTHCHECK") {
		t.Error("the image must not declare a HEALTHCHECK: Kubernetes probes /healthz and /readyz")
	}
	if !regexp.MustCompile(`(?m)^FROM golang:\d+\.\d+\S* AS build`).MatchString(text) {
		t.Error("the builder image must be pinned to a Go version")
	}
	if !strings.Contains(text, "USER nonroot") || !strings.Contains(text, "distroless/static") {
		t.Error("the final stage must be distroless static, running as nonroot")
	}
}
