// Package k8s holds the Kubernetes manifests of the extauthz sidecar: a kustomize base (the app
// pod with Envoy and extauthz as sidecars), overlays (dev, shared-redis, sentinel
// and cluster), a component for meshes and gateways, and Istio and Envoy Gateway examples. See
// README.md.
//
// The package has no Go API. Its tests run `kustomize build` in process on every overlay and
// example, decode each resource strictly into its Kubernetes API type, follow every reference
// (ConfigMaps, Secrets, ports, selectors) and parse the embedded extauthz, rate limit and Envoy
// configurations with the same code the binaries use.
package k8s
