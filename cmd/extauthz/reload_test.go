package main

import (
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/extauthz/extauthz/internal/authz"
	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/metrics"
	"github.com/extauthz/extauthz/internal/policy"
)

// TestReloadWarnsOfRestartOnlySections: SIGHUP swaps in the file's policies but keeps the
// running admin section (api, api_allow decide who may sign users out), and says so.
func TestReloadWarnsOfRestartOnlySections(t *testing.T) {
	running, err := config.Load(writeConfig(t, "policies:\n  - {name: old, auth: none}\n"))
	if err != nil {
		t.Fatal(err)
	}
	set, err := policy.Compile(running)
	if err != nil {
		t.Fatal(err)
	}
	engine := authz.New(set, authz.Options{})
	path := writeConfig(t, "admin: {api_allow: [10.0.0.0/8]}\npolicies:\n  - {name: new, auth: none}\n")

	core, logs := observer.New(zap.InfoLevel)
	reloadPolicies(path, running, engine, zap.New(core), metrics.New())

	if got := logs.FilterMessageSnippet("admin changes").Len(); got != 1 {
		t.Errorf("%d warnings about admin changes, want 1: %v", got, logs.All())
	}
	if _, ok := engine.Policies().ByName("new"); !ok {
		t.Error("the file's policies were not loaded")
	}
	if logs.FilterMessageSnippet("sessions and apikeys").Len() != 0 {
		t.Error("a warning about sessions and apikeys, which did not change")
	}
}
