package k8s_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/ratelimit/rls"
	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/redisurl"
)

// expectation describes one kustomization directory (relative to k8s/).
type expectation struct {
	// externalSecrets are the Secrets the user creates before applying; every one must be
	// referenced by the build and named in a README. Any other Secret reference must resolve
	// inside the build.
	externalSecrets []string
	// secretsAllowed: the build may contain Secret objects (only the dev overlay, whose values
	// are throwaway literals).
	secretsAllowed bool
	// crds are the custom resource kinds ("group/version/Kind") the build may contain; they are
	// checked generically, since their Go types are not in k8s.io/api.
	crds []string
	// envoySidecar: the pod runs the Envoy sidecar in front of the app.
	envoySidecar bool
}

var expectations = map[string]expectation{
	"base": {
		externalSecrets: []string{"extauthz-redis", "extauthz-session"},
		envoySidecar:    true,
	},
	"overlays/dev": {
		secretsAllowed: true,
		envoySidecar:   true,
	},
	"overlays/shared-redis": {
		externalSecrets: []string{"extauthz-shared-redis", "extauthz-session"},
		envoySidecar:    true,
	},
	"overlays/sentinel": {
		externalSecrets: []string{"extauthz-redis-sentinel", "extauthz-session"},
		envoySidecar:    true,
	},
	"overlays/cluster": {
		externalSecrets: []string{"extauthz-redis-cluster", "extauthz-session"},
		envoySidecar:    true,
	},
	"examples/istio": {
		externalSecrets: []string{"extauthz-redis", "extauthz-session"},
		crds:            []string{"security.istio.io/v1/AuthorizationPolicy"},
	},
	"examples/envoy-gateway": {
		externalSecrets: []string{"extauthz-redis", "extauthz-session"},
		crds: []string{
			"gateway.networking.k8s.io/v1/HTTPRoute",
			"gateway.envoyproxy.io/v1alpha1/SecurityPolicy",
		},
	},
}

// The ports, paths and identity the extauthz container must have.
const (
	extauthzContainer = "extauthz"
	envoyContainer    = "envoy"
	nonrootUID        = 65532
	grpcPort          = 9001
	httpAuthzPort     = 9002
	adminPort         = 9003
)

// typedKinds maps apiVersion/kind to a new value of its k8s.io/api type. Any other kind fails
// the build unless its expectation lists it as a CRD.
var typedKinds = map[string]func() any{
	"apps/v1/Deployment":                 func() any { return &appsv1.Deployment{} },
	"v1/Service":                         func() any { return &corev1.Service{} },
	"v1/ConfigMap":                       func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                          func() any { return &corev1.Secret{} },
	"v1/ServiceAccount":                  func() any { return &corev1.ServiceAccount{} },
	"policy/v1/PodDisruptionBudget":      func() any { return &policyv1.PodDisruptionBudget{} },
	"networking.k8s.io/v1/NetworkPolicy": func() any { return &networkingv1.NetworkPolicy{} },
}

// output is one decoded `kustomize build`.
type output struct {
	dir         string
	exp         expectation
	deployments []*appsv1.Deployment
	services    map[string]*corev1.Service
	configMaps  map[string]*corev1.ConfigMap
	secrets     map[string]*corev1.Secret
	pdbs        []*policyv1.PodDisruptionBudget
	netpols     []*networkingv1.NetworkPolicy
	// crds holds the custom resources by "group/version/Kind", generically decoded.
	crds map[string][]map[string]any
}

var (
	buildMu    sync.Mutex
	buildCache = map[string]*output{}
)

// build runs kustomize in process on k8s/<dir> (cached per test binary) and decodes every
// resource strictly.
func build(t *testing.T, dir string) *output {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if o, ok := buildCache[dir]; ok {
		return o
	}
	exp, ok := expectations[dir]
	if !ok {
		t.Fatalf("%s: no expectation; add it to the expectations table", dir)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), abs)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	o := &output{
		dir:        dir,
		exp:        exp,
		services:   map[string]*corev1.Service{},
		configMaps: map[string]*corev1.ConfigMap{},
		secrets:    map[string]*corev1.Secret{},
		crds:       map[string][]map[string]any{},
	}
	if len(m.Resources()) == 0 {
		t.Fatalf("%s: the build is empty", dir)
	}
	for _, r := range m.Resources() {
		data, err := r.MarshalJSON()
		if err != nil {
			t.Fatalf("%s: %s/%s: %v", dir, r.GetKind(), r.GetName(), err)
		}
		gvk := r.GetApiVersion() + "/" + r.GetKind()
		where := fmt.Sprintf("%s: %s %s", dir, gvk, r.GetName())
		if slices.Contains(exp.crds, gvk) {
			obj, err := decodeGeneric(data)
			if err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			o.crds[gvk] = append(o.crds[gvk], obj)
			continue
		}
		obj, err := decodeObject(data)
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		switch v := obj.(type) {
		case *appsv1.Deployment:
			o.deployments = append(o.deployments, v)
		case *corev1.Service:
			o.services[v.Name] = v
		case *corev1.ConfigMap:
			o.configMaps[v.Name] = v
		case *corev1.Secret:
			o.secrets[v.Name] = v
		case *policyv1.PodDisruptionBudget:
			o.pdbs = append(o.pdbs, v)
		case *networkingv1.NetworkPolicy:
			o.netpols = append(o.netpols, v)
		}
	}
	buildCache[dir] = o
	return o
}

// decodeObject decodes one resource (JSON or YAML) into its k8s.io/api type. Unknown fields
// are errors, and so are field names that match only case-insensitively (encoding/json
// accepts "Replicas" for "replicas"; the API server does not).
func decodeObject(data []byte) (any, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, err
	}
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := json.Unmarshal(js, &meta); err != nil {
		return nil, err
	}
	newObj, ok := typedKinds[meta.APIVersion+"/"+meta.Kind]
	if !ok {
		return nil, fmt.Errorf("kind %s/%s is not allowed here (add it to typedKinds, or list it as a CRD)", meta.APIVersion, meta.Kind)
	}
	obj := newObj()
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(obj); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("trailing data after the object")
	}
	back, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	var in, out any
	if err := json.Unmarshal(js, &in); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(back, &out); err != nil {
		return nil, err
	}
	if err := sameKeys("", in, out); err != nil {
		return nil, err
	}
	return obj, nil
}

// sameKeys reports a key of in that out lacks. out is in decoded into a typed object and
// encoded again, so a missing key is one the type did not take exactly as written. Values are
// not compared (quantities and int-or-strings may be re-spelled), and a zero value may be
// dropped by omitempty.
func sameKeys(path string, in, out any) error {
	switch iv := in.(type) {
	case map[string]any:
		ov, _ := out.(map[string]any)
		keys := make([]string, 0, len(iv))
		for k := range iv {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			o, ok := ov[k]
			if !ok {
				if isZero(iv[k]) {
					continue
				}
				return fmt.Errorf("unknown field %q", strings.TrimPrefix(path+"."+k, "."))
			}
			if err := sameKeys(path+"."+k, iv[k], o); err != nil {
				return err
			}
		}
	case []any:
		ov, _ := out.([]any)
		if len(ov) != len(iv) {
			return fmt.Errorf("%s: %d items became %d", path, len(iv), len(ov))
		}
		for i := range iv {
			if err := sameKeys(fmt.Sprintf("%s[%d]", path, i), iv[i], ov[i]); err != nil {
				return err
			}
		}
	}
	return nil
}

func isZero(v any) bool {
	if v == nil {
		return true
	}
	switch x := v.(type) {
	case map[string]any:
		return len(x) == 0
	case []any:
		return len(x) == 0
	}
	return reflect.ValueOf(v).IsZero()
}

// decodeGeneric decodes a custom resource, requiring apiVersion, kind, metadata.name and spec.
func decodeGeneric(data []byte) (map[string]any, error) {
	var obj map[string]any
	if err := yaml.Unmarshal(data, &obj); err != nil {
		return nil, err
	}
	for _, f := range []string{"apiVersion", "kind", "metadata.name"} {
		if s, _ := dig(obj, f).(string); s == "" {
			return nil, fmt.Errorf("%s is missing", f)
		}
	}
	if _, ok := obj["spec"].(map[string]any); !ok {
		return nil, fmt.Errorf("spec is missing")
	}
	return obj, nil
}

// dig follows a dotted path of map keys and [i] indexes.
func dig(v any, p string) any {
	for _, part := range strings.Split(p, ".") {
		name, idx, hasIdx := strings.Cut(part, "[")
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[name]
		if hasIdx {
			i, err := strconv.Atoi(strings.TrimSuffix(idx, "]"))
			l, ok := v.([]any)
			if err != nil || !ok || i >= len(l) {
				return nil
			}
			v = l[i]
		}
	}
	return v
}

func str(v any, p string) string { s, _ := dig(v, p).(string); return s }

func num(v any, p string) int {
	switch x := dig(v, p).(type) {
	case float64:
		return int(x)
	case int64:
		return int(x)
	case int:
		return x
	}
	return -1
}

func dirs() []string {
	ds := make([]string, 0, len(expectations))
	for d := range expectations {
		ds = append(ds, d)
	}
	sort.Strings(ds)
	return ds
}

// forEachBuild runs fn as a subtest per kustomization directory.
func forEachBuild(t *testing.T, fn func(t *testing.T, o *output)) {
	for _, d := range dirs() {
		t.Run(d, func(t *testing.T) { fn(t, build(t, d)) })
	}
}

// TestEveryKustomizationIsChecked keeps the expectations table and the tree in step: every
// kustomization (not component) under k8s/ is built by these tests.
func TestEveryKustomizationIsChecked(t *testing.T) {
	found := map[string]bool{}
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "kustomization.yaml" {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		var k struct {
			Kind string `json:"kind"`
		}
		if err := yaml.Unmarshal(data, &k); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if k.Kind == "Component" {
			return nil
		}
		found[filepath.ToSlash(filepath.Dir(p))] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for d := range found {
		if _, ok := expectations[d]; !ok {
			t.Errorf("%s/kustomization.yaml is not in the expectations table", d)
		}
	}
	for d := range expectations {
		if !found[d] {
			t.Errorf("expectations name %s, which has no kustomization.yaml", d)
		}
	}
}

// TestBuildsDecodeStrictly builds every overlay and checks the overall shape of each.
func TestBuildsDecodeStrictly(t *testing.T) {
	forEachBuild(t, func(t *testing.T, o *output) {
		if len(o.deployments) == 0 {
			t.Fatal("no Deployment")
		}
		if _, ok := appDeployment(o); !ok {
			t.Fatalf("no Deployment with an %s container", extauthzContainer)
		}
		if len(o.secrets) > 0 && !o.exp.secretsAllowed {
			t.Errorf("the build contains Secrets %v: only the dev overlay may generate them", mapKeys(o.secrets))
		}
		if len(o.pdbs) == 0 {
			t.Error("no PodDisruptionBudget")
		}
		if len(o.netpols) == 0 {
			t.Error("no NetworkPolicy")
		}
		for _, gvk := range o.exp.crds {
			if len(o.crds[gvk]) == 0 {
				t.Errorf("expected a %s in the build", gvk)
			}
		}
	})
}

// appDeployment returns the Deployment that runs extauthz.
func appDeployment(o *output) (*appsv1.Deployment, bool) {
	for _, d := range o.deployments {
		if container(&d.Spec.Template.Spec, extauthzContainer) != nil {
			return d, true
		}
	}
	return nil, false
}

func container(spec *corev1.PodSpec, name string) *corev1.Container {
	for i := range spec.Containers {
		if spec.Containers[i].Name == name {
			return &spec.Containers[i]
		}
	}
	return nil
}

func mapKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// TestReferencesResolve follows every ConfigMap and Secret reference, volume mount, probe
// port and resourceFieldRef of every pod template.
func TestReferencesResolve(t *testing.T) {
	forEachBuild(t, func(t *testing.T, o *output) {
		external := map[string]bool{}
		for _, s := range o.exp.externalSecrets {
			external[s] = true
			if _, ok := o.secrets[s]; ok {
				t.Errorf("secret %s is listed as external but the build generates it", s)
			}
		}
		usedExternal := map[string]bool{}
		for _, d := range o.deployments {
			checkPodSpec(t, o, d.Name, &d.Spec.Template.Spec, external, usedExternal)
			if d.Spec.Selector == nil || !labelsMatch(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
				t.Errorf("deployment %s: selector %v does not match the pod labels %v", d.Name, d.Spec.Selector, d.Spec.Template.Labels)
			}
			if d.Spec.Selector != nil && len(d.Spec.Selector.MatchExpressions) > 0 {
				t.Errorf("deployment %s: matchExpressions are not checked by this test; use matchLabels", d.Name)
			}
		}
		for _, s := range o.exp.externalSecrets {
			if !usedExternal[s] {
				t.Errorf("external secret %s is not referenced by the build: drop it from the expectations", s)
			}
			if !documented(o.dir, s) {
				t.Errorf("external secret %s is not documented in %s/README.md or k8s/README.md", s, o.dir)
			}
		}
	})
}

// documented reports whether name appears in the directory's README.md or in k8s/README.md.
func documented(dir, name string) bool {
	for _, p := range []string{filepath.Join(dir, "README.md"), "README.md"} {
		if data, err := os.ReadFile(p); err == nil && bytes.Contains(data, []byte(name)) {
			return true
		}
	}
	return false
}

func checkPodSpec(t *testing.T, o *output, owner string, spec *corev1.PodSpec, external, usedExternal map[string]bool) {
	t.Helper()
	secretRef := func(where, name, key string, optional *bool) {
		t.Helper()
		if external[name] {
			usedExternal[name] = true
			return
		}
		s, ok := o.secrets[name]
		if !ok {
			t.Errorf("%s: secret %q is neither in the build nor a documented external secret", where, name)
			return
		}
		if key == "" {
			return
		}
		_, inData := s.Data[key]
		_, inString := s.StringData[key]
		if !inData && !inString && (optional == nil || !*optional) {
			t.Errorf("%s: secret %s has no key %q", where, name, key)
		}
	}
	configMapRef := func(where, name, key string, optional *bool) {
		t.Helper()
		cm, ok := o.configMaps[name]
		if !ok {
			if optional == nil || !*optional {
				t.Errorf("%s: configmap %q is not in the build", where, name)
			}
			return
		}
		if key == "" {
			return
		}
		_, inData := cm.Data[key]
		_, inBinary := cm.BinaryData[key]
		if !inData && !inBinary && (optional == nil || !*optional) {
			t.Errorf("%s: configmap %s has no key %q", where, name, key)
		}
	}

	volumes := map[string]*corev1.Volume{}
	for i := range spec.Volumes {
		v := &spec.Volumes[i]
		where := fmt.Sprintf("%s: volume %s", owner, v.Name)
		if volumes[v.Name] != nil {
			t.Errorf("%s: defined twice", where)
		}
		volumes[v.Name] = v
		switch {
		case v.ConfigMap != nil:
			configMapRef(where, v.ConfigMap.Name, "", v.ConfigMap.Optional)
			for _, it := range v.ConfigMap.Items {
				configMapRef(where, v.ConfigMap.Name, it.Key, v.ConfigMap.Optional)
			}
		case v.Secret != nil:
			secretRef(where, v.Secret.SecretName, "", v.Secret.Optional)
			for _, it := range v.Secret.Items {
				secretRef(where, v.Secret.SecretName, it.Key, v.Secret.Optional)
			}
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				if src.ConfigMap != nil {
					configMapRef(where, src.ConfigMap.Name, "", src.ConfigMap.Optional)
				}
				if src.Secret != nil {
					secretRef(where, src.Secret.Name, "", src.Secret.Optional)
				}
			}
		}
	}

	portNames := map[string]string{}
	for ci := range spec.Containers {
		c := &spec.Containers[ci]
		where := fmt.Sprintf("%s: container %s", owner, c.Name)
		if c.Image == "" || strings.HasSuffix(c.Image, ":latest") || !strings.Contains(path.Base(c.Image), ":") {
			t.Errorf("%s: image %q must be pinned to a tag", where, c.Image)
		}
		for _, p := range c.Ports {
			if p.Name == "" {
				continue
			}
			if len(p.Name) > 15 {
				t.Errorf("%s: port name %q is longer than 15 characters", where, p.Name)
			}
			if other, dup := portNames[p.Name]; dup {
				t.Errorf("%s: port name %q is also used by container %s", where, p.Name, other)
			}
			portNames[p.Name] = c.Name
		}
		for _, m := range c.VolumeMounts {
			if volumes[m.Name] == nil {
				t.Errorf("%s: volumeMount %s names no volume", where, m.Name)
			}
		}
		for _, e := range c.Env {
			ew := where + ": env " + e.Name
			if e.ValueFrom == nil {
				continue
			}
			switch vf := e.ValueFrom; {
			case vf.SecretKeyRef != nil:
				secretRef(ew, vf.SecretKeyRef.Name, vf.SecretKeyRef.Key, vf.SecretKeyRef.Optional)
			case vf.ConfigMapKeyRef != nil:
				configMapRef(ew, vf.ConfigMapKeyRef.Name, vf.ConfigMapKeyRef.Key, vf.ConfigMapKeyRef.Optional)
			case vf.ResourceFieldRef != nil:
				// Without a limit the kubelet hands out the node's allocatable, which is
				// never the intent for GOMAXPROCS or GOMEMLIMIT.
				ref := vf.ResourceFieldRef
				target := c
				if ref.ContainerName != "" {
					target = container(spec, ref.ContainerName)
				}
				if target == nil {
					t.Errorf("%s: resourceFieldRef names container %q, which is not in the pod", ew, ref.ContainerName)
					continue
				}
				kind, res, _ := strings.Cut(ref.Resource, ".")
				list := target.Resources.Requests
				if kind == "limits" {
					list = target.Resources.Limits
				}
				if q, ok := list[corev1.ResourceName(res)]; !ok || q.IsZero() {
					t.Errorf("%s: %s is not set on container %s", ew, ref.Resource, target.Name)
				}
			}
		}
		for _, ef := range c.EnvFrom {
			if ef.SecretRef != nil {
				secretRef(where+": envFrom", ef.SecretRef.Name, "", ef.SecretRef.Optional)
			}
			if ef.ConfigMapRef != nil {
				configMapRef(where+": envFrom", ef.ConfigMapRef.Name, "", ef.ConfigMapRef.Optional)
			}
		}
		for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
			if p == nil {
				continue
			}
			port, _, ok := probeTarget(p)
			if !ok {
				continue // exec probes
			}
			if _, ok := containerPort(c, port); !ok {
				t.Errorf("%s: %s probe port %s is not a port of the container", where, name, port.String())
			}
		}
	}
}

// probeTarget returns the port and HTTP path (empty for TCP and gRPC) a probe checks.
func probeTarget(p *corev1.Probe) (intstr.IntOrString, string, bool) {
	switch {
	case p.HTTPGet != nil:
		return p.HTTPGet.Port, p.HTTPGet.Path, true
	case p.TCPSocket != nil:
		return p.TCPSocket.Port, "", true
	case p.GRPC != nil:
		return intstr.FromInt32(p.GRPC.Port), "", true
	}
	return intstr.IntOrString{}, "", false
}

// containerPort resolves a port by name or number among the container's declared ports.
func containerPort(c *corev1.Container, p intstr.IntOrString) (corev1.ContainerPort, bool) {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp, true
		}
	}
	return corev1.ContainerPort{}, false
}

// podPort resolves a port among every container of the pod.
func podPort(spec *corev1.PodSpec, p intstr.IntOrString) (*corev1.Container, corev1.ContainerPort, bool) {
	for i := range spec.Containers {
		if cp, ok := containerPort(&spec.Containers[i], p); ok {
			return &spec.Containers[i], cp, true
		}
	}
	return nil, corev1.ContainerPort{}, false
}

func labelsMatch(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// selected returns the Deployments whose pods carry every label of selector.
func selected(o *output, selector map[string]string) []*appsv1.Deployment {
	var ds []*appsv1.Deployment
	for _, d := range o.deployments {
		if labelsMatch(selector, d.Spec.Template.Labels) {
			ds = append(ds, d)
		}
	}
	return ds
}

// TestSelectorsAndPorts checks that Services, PDBs and NetworkPolicies select pods of the build
// and that the ports they name exist on those pods.
func TestSelectorsAndPorts(t *testing.T) {
	forEachBuild(t, func(t *testing.T, o *output) {
		for _, name := range mapKeys(o.services) {
			s := o.services[name]
			ds := selected(o, s.Spec.Selector)
			if len(ds) == 0 {
				t.Errorf("service %s: selector %v matches no pod template", name, s.Spec.Selector)
				continue
			}
			for _, sp := range s.Spec.Ports {
				target := sp.TargetPort
				if target.Type == intstr.Int && target.IntVal == 0 {
					target = intstr.FromInt32(sp.Port)
				}
				for _, d := range ds {
					if _, _, ok := podPort(&d.Spec.Template.Spec, target); !ok {
						t.Errorf("service %s: port %s targets %s, which no container of deployment %s declares", name, sp.Name, target.String(), d.Name)
					}
				}
			}
		}
		for _, p := range o.pdbs {
			if p.Spec.Selector == nil || len(selected(o, p.Spec.Selector.MatchLabels)) == 0 {
				t.Errorf("pdb %s: selector matches no pod template", p.Name)
			}
			if (p.Spec.MinAvailable == nil) == (p.Spec.MaxUnavailable == nil) {
				t.Errorf("pdb %s: set exactly one of minAvailable and maxUnavailable", p.Name)
			}
		}
		for _, np := range o.netpols {
			ds := selected(o, np.Spec.PodSelector.MatchLabels)
			if len(ds) == 0 {
				t.Errorf("networkpolicy %s: podSelector matches no pod template", np.Name)
				continue
			}
			for _, rule := range np.Spec.Ingress {
				for _, p := range rule.Ports {
					if p.Port == nil {
						continue
					}
					for _, d := range ds {
						if _, _, ok := podPort(&d.Spec.Template.Spec, *p.Port); !ok {
							t.Errorf("networkpolicy %s: ingress port %s is not a port of deployment %s", np.Name, p.Port.String(), d.Name)
						}
					}
				}
			}
			for _, rule := range np.Spec.Egress {
				for _, p := range rule.Ports {
					// A named egress port is resolved on the destination pods, which this
					// build may not contain; numbers say exactly what is allowed.
					if p.Port != nil && p.Port.Type == intstr.String {
						t.Errorf("networkpolicy %s: egress port %q: use a number", np.Name, p.Port.StrVal)
					}
				}
			}
		}
	})
}

// TestExtauthzContainer checks the sidecar's ports, probes, resources and security context.
func TestExtauthzContainer(t *testing.T) {
	forEachBuild(t, func(t *testing.T, o *output) {
		d, _ := appDeployment(o)
		spec := &d.Spec.Template.Spec
		c := container(spec, extauthzContainer)

		for name, want := range map[string]int32{"grpc": grpcPort, "http-authz": httpAuthzPort, "admin": adminPort} {
			p, ok := containerPort(c, intstr.FromString(name))
			if !ok || p.ContainerPort != want {
				t.Errorf("port %s: got %+v, want %d", name, p, want)
			}
		}
		for _, pc := range []struct {
			name  string
			probe *corev1.Probe
			path  string
		}{
			{"liveness", c.LivenessProbe, "/healthz"},
			{"readiness", c.ReadinessProbe, "/readyz"},
			{"startup", c.StartupProbe, "/healthz"},
		} {
			if pc.probe == nil || pc.probe.HTTPGet == nil {
				t.Errorf("%s probe: want an httpGet probe", pc.name)
				continue
			}
			port, ok := containerPort(c, pc.probe.HTTPGet.Port)
			if !ok || port.ContainerPort != adminPort {
				t.Errorf("%s probe: port %s is not the admin port %d", pc.name, pc.probe.HTTPGet.Port.String(), adminPort)
			}
			if pc.probe.HTTPGet.Path != pc.path {
				t.Errorf("%s probe: path %q, want %q", pc.name, pc.probe.HTTPGet.Path, pc.path)
			}
		}

		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, okReq := c.Resources.Requests[r]
			lim, okLim := c.Resources.Limits[r]
			if !okReq || !okLim {
				t.Errorf("resources: %s needs both a request and a limit", r)
				continue
			}
			if req.Cmp(lim) > 0 {
				t.Errorf("resources: %s request %s exceeds its limit %s", r, req.String(), lim.String())
			}
		}
		for env, res := range map[string]string{"GOMAXPROCS": "limits.cpu", "GOMEMLIMIT": "limits.memory"} {
			e := envVar(c, env)
			if e == nil || e.ValueFrom == nil || e.ValueFrom.ResourceFieldRef == nil || e.ValueFrom.ResourceFieldRef.Resource != res {
				t.Errorf("env %s: want a resourceFieldRef to %s", env, res)
			}
		}

		sc := c.SecurityContext
		if sc == nil {
			t.Fatal("no securityContext")
		}
		psc := spec.SecurityContext
		if psc == nil {
			psc = &corev1.PodSecurityContext{}
		}
		runAsNonRoot := firstBool(sc.RunAsNonRoot, psc.RunAsNonRoot)
		runAsUser := firstInt(sc.RunAsUser, psc.RunAsUser)
		if !runAsNonRoot {
			t.Error("runAsNonRoot must be true")
		}
		if runAsUser != nonrootUID {
			t.Errorf("runAsUser %d, want %d (the image's nonroot user)", runAsUser, nonrootUID)
		}
		if !firstBool(sc.ReadOnlyRootFilesystem) {
			t.Error("readOnlyRootFilesystem must be true")
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Error("allowPrivilegeEscalation must be false")
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
			t.Error("capabilities must drop ALL and add none")
		}
		seccomp := sc.SeccompProfile
		if seccomp == nil {
			seccomp = psc.SeccompProfile
		}
		if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Error("seccompProfile must be RuntimeDefault")
		}
		if d.Spec.Template.Spec.TerminationGracePeriodSeconds == nil {
			t.Error("terminationGracePeriodSeconds must be set")
		}
	})
}

func envVar(c *corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

func firstBool(bs ...*bool) bool {
	for _, b := range bs {
		if b != nil {
			return *b
		}
	}
	return false
}

func firstInt(is ...*int64) int64 {
	for _, i := range is {
		if i != nil {
			return *i
		}
	}
	return -1
}

// configArg returns the value of the --config flag in args.
func configArg(args []string) string {
	for i, a := range args {
		if a == "--config" && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, "--config="); ok {
			return v
		}
	}
	return ""
}

// mountedConfigMap returns the ConfigMap mounted exactly at dir in c, and the mount.
func mountedConfigMap(t *testing.T, o *output, spec *corev1.PodSpec, c *corev1.Container, dir string) (*corev1.ConfigMap, corev1.VolumeMount) {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if path.Clean(m.MountPath) != path.Clean(dir) {
			continue
		}
		for _, v := range spec.Volumes {
			if v.Name == m.Name && v.ConfigMap != nil {
				cm, ok := o.configMaps[v.ConfigMap.Name]
				if !ok {
					t.Fatalf("configmap %s mounted at %s is not in the build", v.ConfigMap.Name, dir)
				}
				return cm, m
			}
		}
	}
	t.Fatalf("container %s mounts no ConfigMap at %s", c.Name, dir)
	return nil, corev1.VolumeMount{}
}

// podEnv is what the container's environment holds for the names given: literal values,
// values of Secrets in the build, and a placeholder for documented external Secrets (a value
// the user supplies). Names left out are unset.
func podEnv(o *output, c *corev1.Container, names []string) map[string]string {
	env := map[string]string{}
	for _, e := range c.Env {
		if !slices.Contains(names, e.Name) {
			continue
		}
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			if s, ok := o.secrets[ref.Name]; ok {
				if v, ok := s.Data[ref.Key]; ok {
					env[e.Name] = string(v)
				} else if v, ok := s.StringData[ref.Key]; ok {
					env[e.Name] = v
				}
			} else if slices.Contains(o.exp.externalSecrets, ref.Name) {
				env[e.Name] = externalPlaceholder(e.Name)
			}
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			if cm, ok := o.configMaps[ref.Name]; ok {
				env[e.Name] = cm.Data[ref.Key]
			}
		}
	}
	return env
}

// externalPlaceholder stands for a value from a Secret the user creates.
func externalPlaceholder(env string) string {
	switch env {
	case config.EnvRedisURL:
		return "redis://redis.example.invalid:6379/0"
	case config.EnvSessionSecret:
		return "placeholder-new,placeholder-old"
	}
	return "placeholder"
}

// configEnv lists every variable config.Parse reads.
var configEnv = []string{
	config.EnvRedisURL, config.EnvRedisPassword, config.EnvGRPCAddr, config.EnvHTTPAddr,
	config.EnvAdminAddr, config.EnvSessionSecret,
}

// parsePodConfig parses the extauthz config the pod mounts, with the pod's environment.
func parsePodConfig(t *testing.T, o *output) (*config.Config, *corev1.PodSpec, *corev1.Container) {
	t.Helper()
	d, _ := appDeployment(o)
	spec := &d.Spec.Template.Spec
	c := container(spec, extauthzContainer)
	file := configArg(c.Args)
	if file == "" {
		t.Fatalf("args %q have no --config", c.Args)
	}
	cm, m := mountedConfigMap(t, o, spec, c, path.Dir(file))
	if m.SubPath != "" {
		t.Errorf("the config mount uses subPath, which never sees ConfigMap updates")
	}
	data, ok := cm.Data[path.Base(file)]
	if !ok {
		t.Fatalf("configmap %s has no key %s (keys: %v)", cm.Name, path.Base(file), mapKeys(cm.Data))
	}
	env := podEnv(o, c, configEnv)
	for _, name := range configEnv {
		t.Setenv(name, env[name]) // empty: no override, as when unset
	}
	cfg, err := config.Parse(file, []byte(data))
	if err != nil {
		t.Fatalf("config.Parse(%s) with the pod's environment:\n%v", file, err)
	}
	return cfg, spec, c
}

// TestExtauthzConfig parses the mounted extauthz.yaml with internal/config and checks it
// against the pod: listen ports, the rate limit directory mount and its files.
func TestExtauthzConfig(t *testing.T) {
	forEachBuild(t, func(t *testing.T, o *output) {
		cfg, spec, c := parsePodConfig(t, o)

		// Each listen address's port is the container port of that name. The kubelet probes
		// the pod IP, so admin binds every interface; so does any listener a Service exposes.
		exposed := exposedPorts(o, c)
		for _, l := range []struct{ field, addr, port string }{
			{"listen.grpc", cfg.Listen.GRPC, "grpc"},
			{"listen.http", cfg.Listen.HTTP, "http-authz"},
			{"listen.admin", cfg.Listen.Admin, "admin"},
		} {
			host, portStr, err := net.SplitHostPort(l.addr)
			if err != nil {
				t.Errorf("%s %q: %v", l.field, l.addr, err)
				continue
			}
			cp, _ := containerPort(c, intstr.FromString(l.port))
			if portStr != strconv.Itoa(int(cp.ContainerPort)) {
				t.Errorf("%s %q: port is not container port %s (%d)", l.field, l.addr, l.port, cp.ContainerPort)
			}
			wildcard := host == "" || net.ParseIP(host) != nil && net.ParseIP(host).IsUnspecified()
			if (l.port == "admin" || exposed[l.port]) && !wildcard {
				t.Errorf("%s %q must bind every interface: it is reached through the pod IP", l.field, l.addr)
			}
		}

		// The rate limit directory is the rls ConfigMap's own mount, so the kubelet's
		// ..data swap happens inside it and the watcher sees it.
		if cfg.RateLimit.ConfigDir == "" {
			t.Fatal("ratelimit.config_dir is empty")
		}
		cm, m := mountedConfigMap(t, o, spec, c, cfg.RateLimit.ConfigDir)
		if m.SubPath != "" {
			t.Errorf("the rate limit directory mount uses subPath, which never sees ConfigMap updates")
		}
		if !cfg.RateLimit.Watch {
			t.Error("ratelimit.watch is off: ConfigMap updates would need a SIGHUP or a restart")
		}
		rlsCfg := parseRLS(t, cm)
		if len(rlsCfg.Domains()) == 0 {
			t.Errorf("configmap %s defines no rate limit domain", cm.Name)
		}
		// Drain must outlast the preStop sleep of Envoy, which calls extauthz until it stops.
		if e := container(spec, envoyContainer); e != nil && e.Lifecycle != nil && e.Lifecycle.PreStop != nil && e.Lifecycle.PreStop.Sleep != nil {
			if sleep := e.Lifecycle.PreStop.Sleep.Seconds; cfg.Shutdown.Drain.D().Seconds() <= float64(sleep) {
				t.Errorf("shutdown.drain %s must exceed Envoy's preStop sleep (%ds)", cfg.Shutdown.Drain, sleep)
			}
		}
		grace := spec.TerminationGracePeriodSeconds
		if grace != nil && (cfg.Shutdown.Drain.D()+cfg.Shutdown.Grace.D()).Seconds() >= float64(*grace) {
			t.Errorf("shutdown.drain + shutdown.grace (%s + %s) must fit in terminationGracePeriodSeconds (%d)", cfg.Shutdown.Drain, cfg.Shutdown.Grace, *grace)
		}
	})
}

// exposedPorts returns the names of c's ports that a Service of the build targets.
func exposedPorts(o *output, c *corev1.Container) map[string]bool {
	exposed := map[string]bool{}
	for _, s := range o.services {
		for _, sp := range s.Spec.Ports {
			if cp, ok := containerPort(c, sp.TargetPort); ok {
				exposed[cp.Name] = true
			}
		}
	}
	return exposed
}

// parseRLS parses the .yaml and .yml keys of cm as extauthz's LoadDir reads a directory.
func parseRLS(t *testing.T, cm *corev1.ConfigMap) *rls.Config {
	t.Helper()
	var files []rls.File
	for _, k := range mapKeys(cm.Data) {
		if strings.HasSuffix(k, ".yaml") || strings.HasSuffix(k, ".yml") {
			files = append(files, rls.File{Name: k, Data: []byte(cm.Data[k])})
		}
	}
	if len(files) == 0 {
		t.Fatalf("configmap %s has no .yaml file", cm.Name)
	}
	cfg, err := rls.Parse(files)
	if err != nil {
		t.Fatalf("rls.Parse(configmap %s):\n%v", cm.Name, err)
	}
	return cfg
}

// TestEnvoySidecar parses the Envoy bootstrap the pod mounts with go-control-plane, validates
// it, and checks it against the pod: listener ports, the extauthz cluster (HTTP/2, the
// config's gRPC port), the app cluster, the ratelimit domain and the readiness probe.
func TestEnvoySidecar(t *testing.T) {
	forEachBuild(t, func(t *testing.T, o *output) {
		d, _ := appDeployment(o)
		spec := &d.Spec.Template.Spec
		e := container(spec, envoyContainer)
		if !o.exp.envoySidecar {
			if e != nil {
				t.Fatal("this build must not run the Envoy sidecar: the mesh or gateway proxy calls extauthz")
			}
			return
		}
		if e == nil {
			t.Fatal("no envoy container")
		}
		cfg, _, xc := parsePodConfig(t, o)

		var file string
		for i, a := range e.Args {
			if a == "-c" && i+1 < len(e.Args) {
				file = e.Args[i+1]
			}
		}
		if file == "" {
			t.Fatalf("envoy args %q have no -c", e.Args)
		}
		cm, _ := mountedConfigMap(t, o, spec, e, path.Dir(file))
		src, ok := cm.Data[path.Base(file)]
		if !ok {
			t.Fatalf("configmap %s has no key %s", cm.Name, path.Base(file))
		}
		js, err := yaml.YAMLToJSON([]byte(src))
		if err != nil {
			t.Fatal(err)
		}
		var b bootstrapv3.Bootstrap
		if err := protojson.Unmarshal(js, &b); err != nil {
			t.Fatalf("envoy bootstrap: %v", err)
		}
		if err := b.ValidateAll(); err != nil {
			t.Fatalf("envoy bootstrap: %v", err)
		}

		// Every listener is a declared port of the container, and the readiness probe hits one.
		listenerPorts := map[int32]bool{}
		for _, l := range b.GetStaticResources().GetListeners() {
			p := int32(l.GetAddress().GetSocketAddress().GetPortValue())
			listenerPorts[p] = true
			if _, ok := containerPort(e, intstr.FromInt32(p)); !ok {
				t.Errorf("listener %s: port %d is not a port of the envoy container", l.GetName(), p)
			}
		}
		if rp := e.ReadinessProbe; rp == nil || rp.HTTPGet == nil {
			t.Error("envoy needs an httpGet readiness probe")
		} else if cp, ok := containerPort(e, rp.HTTPGet.Port); !ok || !listenerPorts[cp.ContainerPort] {
			t.Errorf("envoy readiness probe port %s is not a listener", rp.HTTPGet.Port.String())
		}
		if a := b.GetAdmin().GetAddress().GetSocketAddress(); a != nil && !isLoopback(a.GetAddress()) {
			t.Errorf("envoy admin binds %s: keep it on loopback", a.GetAddress())
		}

		// Clusters on loopback must reach a port of the pod (or the admin).
		clusters := map[string]*clusterv3.Cluster{}
		grpcAddr := cfg.Listen.GRPC
		for _, cl := range b.GetStaticResources().GetClusters() {
			clusters[cl.GetName()] = cl
			for _, le := range cl.GetLoadAssignment().GetEndpoints() {
				for _, lb := range le.GetLbEndpoints() {
					sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
					if !isLoopback(sa.GetAddress()) {
						continue
					}
					p := int32(sa.GetPortValue())
					_, _, inPod := podPort(spec, intstr.FromInt32(p))
					isAdmin := b.GetAdmin().GetAddress().GetSocketAddress().GetPortValue() == uint32(p)
					if !inPod && !isAdmin {
						t.Errorf("cluster %s: 127.0.0.1:%d is no port of the pod", cl.GetName(), p)
					}
				}
			}
		}

		// ext_authz and ratelimit call extauthz's gRPC listener over HTTP/2, and the
		// ratelimit domain exists in the rate limit ConfigMap.
		rlsCM, _ := mountedConfigMap(t, o, spec, xc, cfg.RateLimit.ConfigDir)
		rlsCfg := parseRLS(t, rlsCM)
		var sawAuthz, sawRateLimit bool
		for _, f := range httpFilters(t, &b) {
			var cluster string
			switch fc := f.(type) {
			case *extauthzv3.ExtAuthz:
				sawAuthz = true
				cluster = fc.GetGrpcService().GetEnvoyGrpc().GetClusterName()
				if fc.GetFailureModeAllow() {
					t.Error("ext_authz failure_mode_allow lets every request through when extauthz is down")
				}
			case *ratelimitv3.RateLimit:
				sawRateLimit = true
				cluster = fc.GetRateLimitService().GetGrpcService().GetEnvoyGrpc().GetClusterName()
				if !rlsCfg.HasDomain(fc.GetDomain()) {
					t.Errorf("ratelimit domain %q is not in configmap %s (domains: %v)", fc.GetDomain(), rlsCM.Name, rlsCfg.Domains())
				}
				if to := fc.GetTimeout().AsDuration(); to != 0 && to <= cfg.Redis.Timeout.D() {
					t.Errorf("ratelimit timeout %s must exceed redis.timeout %s, or Envoy gives up first", to, cfg.Redis.Timeout)
				}
			default:
				continue
			}
			cl := clusters[cluster]
			if cl == nil {
				t.Errorf("filter cluster %q is not defined", cluster)
				continue
			}
			if !http2Cluster(t, cl) {
				t.Errorf("cluster %s must speak HTTP/2 (gRPC)", cluster)
			}
			sa := cl.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
			want := grpcAddr
			if h, p, _ := net.SplitHostPort(grpcAddr); h == "" || net.ParseIP(h).IsUnspecified() {
				want = net.JoinHostPort("127.0.0.1", p)
			}
			if got := net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))); got != want {
				t.Errorf("cluster %s points at %s, but extauthz listens on %s", cluster, got, grpcAddr)
			}
		}
		if !sawAuthz || !sawRateLimit {
			t.Errorf("envoy config: ext_authz filter %v, ratelimit filter %v; want both", sawAuthz, sawRateLimit)
		}
	})
}

func isLoopback(host string) bool {
	ip := net.ParseIP(host)
	return host == "localhost" || ip != nil && ip.IsLoopback()
}

// httpFilters unpacks the HTTP filter configs of every listener's connection manager.
func httpFilters(t *testing.T, b *bootstrapv3.Bootstrap) []any {
	t.Helper()
	var out []any
	for _, l := range b.GetStaticResources().GetListeners() {
		for _, fch := range l.GetFilterChains() {
			for _, f := range fch.GetFilters() {
				var hcm hcmv3.HttpConnectionManager
				if f.GetTypedConfig().MessageIs(&hcm) {
					if err := f.GetTypedConfig().UnmarshalTo(&hcm); err != nil {
						t.Fatal(err)
					}
					for _, hf := range hcm.GetHttpFilters() {
						m, err := hf.GetTypedConfig().UnmarshalNew()
						if err != nil {
							t.Fatalf("filter %s: %v", hf.GetName(), err)
						}
						out = append(out, m)
					}
				}
			}
		}
	}
	return out
}

func http2Cluster(t *testing.T, cl *clusterv3.Cluster) bool {
	t.Helper()
	opts, ok := cl.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
	if !ok {
		return false
	}
	var po httpv3.HttpProtocolOptions
	if err := opts.UnmarshalTo(&po); err != nil {
		t.Fatal(err)
	}
	return po.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil
}

// TestDevOverlay checks that the dev overlay is self-contained: its Secrets point at its own
// Redis Service.
func TestDevOverlay(t *testing.T) {
	o := build(t, "overlays/dev")
	d, _ := appDeployment(o)
	env := podEnv(o, container(&d.Spec.Template.Spec, extauthzContainer), configEnv)
	u, err := url.Parse(env[config.EnvRedisURL])
	if err != nil || u.Scheme != "redis" {
		t.Fatalf("dev redis url %q: want redis://", env[config.EnvRedisURL])
	}
	svc, ok := o.services[u.Hostname()]
	if !ok {
		t.Fatalf("dev redis url host %q is not a Service of the overlay", u.Hostname())
	}
	port, _ := strconv.Atoi(u.Port())
	if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return int(p.Port) == port }) {
		t.Errorf("service %s has no port %d", svc.Name, port)
	}
	if env[config.EnvRedisPassword] == "" || env[config.EnvSessionSecret] == "" {
		t.Error("dev overlay: the Redis password and session secrets should be generated")
	}
	if len(d.Spec.Template.Spec.Containers) != 3 {
		t.Errorf("dev overlay app pod: %d containers, want app, envoy and extauthz", len(d.Spec.Template.Spec.Containers))
	}
}

// TestRedisTopologyOverlays pins what overlays/sentinel and overlays/cluster document: the URL
// each README shows parses with the server's own parser into its topology, config validation
// accepts it, and the client builder the server uses takes it (New does no network I/O; the
// topologies themselves are exercised in test/e2e and internal/redisconn).
func TestRedisTopologyOverlays(t *testing.T) {
	for dir, topo := range map[string]redisurl.Topology{"overlays/sentinel": redisurl.Sentinel, "overlays/cluster": redisurl.Cluster} {
		t.Run(dir, func(t *testing.T) {
			readme, err := os.ReadFile(filepath.Join(dir, "README.md"))
			if err != nil {
				t.Fatal(err)
			}
			scheme := "redis-" + topo.String()
			if bytes.Contains(bytes.ToLower(readme), []byte("planned")) || !bytes.Contains(readme, []byte(scheme+"://")) {
				t.Errorf("%s/README.md should document %s:// as supported, not planned", dir, scheme)
			}
			m := regexp.MustCompile(`--from-literal=url='([^']*)'`).FindSubmatch(readme)
			if m == nil {
				t.Fatalf("%s/README.md shows no --from-literal=url='...'", dir)
			}
			u, err := redisurl.Parse(string(m[1]))
			if err != nil || u.Topology != topo {
				t.Fatalf("the README's url %s: topology %v, error %v; want %v", m[1], u.Topology, err, topo)
			}

			for _, name := range configEnv {
				t.Setenv(name, "")
			}
			t.Setenv(config.EnvRedisURL, string(m[1]))
			c, err := config.Parse("extauthz.yaml", []byte("listen: {admin: 0.0.0.0:9003}\n"))
			if err != nil {
				t.Fatalf("config.Parse with the README's url: %v", err)
			}
			rc, err := redisconn.New(redisconn.Options{URL: c.Redis.URL}, nil)
			if err != nil {
				t.Fatalf("redisconn.New(%s://...): %v", scheme, err)
			}
			if got := rc.Cluster(); got != (topo == redisurl.Cluster) {
				t.Errorf("Cluster() = %v for %s://", got, scheme)
			}
			_ = rc.Close()
		})
	}
}

// TestIstioExample checks the AuthorizationPolicy against the pods and the mesh config's
// extension provider against the extauthz Service.
func TestIstioExample(t *testing.T) {
	o := build(t, "examples/istio")
	aps := o.crds["security.istio.io/v1/AuthorizationPolicy"]
	if len(aps) != 1 {
		t.Fatalf("want one AuthorizationPolicy, got %d", len(aps))
	}
	ap := aps[0]
	if got := str(ap, "spec.action"); got != "CUSTOM" {
		t.Errorf("action %q, want CUSTOM", got)
	}
	provider := str(ap, "spec.provider.name")
	if provider == "" {
		t.Fatal("spec.provider.name is empty")
	}
	sel := map[string]string{}
	if m, ok := dig(ap, "spec.selector.matchLabels").(map[string]any); ok {
		for k, v := range m {
			sel[k], _ = v.(string)
		}
	}
	if len(selected(o, sel)) == 0 {
		t.Errorf("selector %v matches no pod", sel)
	}
	// The policy must not cover the ext_authz port itself, or every Check would be checked.
	d, _ := appDeployment(o)
	for i := 0; dig(ap, fmt.Sprintf("spec.rules[%d]", i)) != nil; i++ {
		ports, _ := dig(ap, fmt.Sprintf("spec.rules[%d].to[0].operation.ports", i)).([]any)
		if len(ports) == 0 {
			t.Errorf("rule %d applies to every port, including extauthz's own gRPC port", i)
		}
		for _, p := range ports {
			n, _ := strconv.Atoi(fmt.Sprint(p))
			c, _, ok := podPort(&d.Spec.Template.Spec, intstr.FromInt(n))
			if !ok || c.Name == extauthzContainer {
				t.Errorf("rule %d: port %v must be an app port", i, p)
			}
		}
	}

	data, err := os.ReadFile("examples/istio/mesh-config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	mesh, err := decodeGeneric(data)
	if err != nil {
		t.Fatalf("mesh-config.yaml: %v", err)
	}
	var found bool
	for i := 0; dig(mesh, fmt.Sprintf("spec.meshConfig.extensionProviders[%d]", i)) != nil; i++ {
		p := fmt.Sprintf("spec.meshConfig.extensionProviders[%d]", i)
		if str(mesh, p+".name") != provider {
			continue
		}
		found = true
		host := str(mesh, p+".envoyExtAuthzGrpc.service")
		name, rest, _ := strings.Cut(host, ".")
		if _, suffix, _ := strings.Cut(rest, "."); suffix != "svc.cluster.local" {
			t.Errorf("provider service %q: want <service>.<namespace>.svc.cluster.local", host)
		}
		svc, ok := o.services[name]
		if !ok {
			t.Fatalf("provider service %q: no Service %s in the build", host, name)
		}
		checkServicePort(t, o, svc, num(mesh, p+".envoyExtAuthzGrpc.port"), "grpc")
	}
	if !found {
		t.Errorf("mesh-config.yaml has no extension provider %q", provider)
	}
}

// checkServicePort checks that svc has port and that it reaches the extauthz container port
// named want.
func checkServicePort(t *testing.T, o *output, svc *corev1.Service, port int, want string) {
	t.Helper()
	for _, sp := range svc.Spec.Ports {
		if int(sp.Port) != port {
			continue
		}
		for _, d := range selected(o, svc.Spec.Selector) {
			c, cp, ok := podPort(&d.Spec.Template.Spec, sp.TargetPort)
			if !ok || c.Name != extauthzContainer || cp.Name != want {
				t.Errorf("service %s port %d reaches %v, want extauthz's %s port", svc.Name, port, sp.TargetPort.String(), want)
			}
		}
		return
	}
	t.Errorf("service %s has no port %d", svc.Name, port)
}

// TestEnvoyGatewayExample checks the SecurityPolicy's target and ext_authz backend and the
// HTTPRoute's backend against the build.
func TestEnvoyGatewayExample(t *testing.T) {
	o := build(t, "examples/envoy-gateway")
	routes := map[string]map[string]any{}
	for _, r := range o.crds["gateway.networking.k8s.io/v1/HTTPRoute"] {
		routes[str(r, "metadata.name")] = r
		for i := 0; dig(r, fmt.Sprintf("spec.rules[%d]", i)) != nil; i++ {
			for j := 0; dig(r, fmt.Sprintf("spec.rules[%d].backendRefs[%d]", i, j)) != nil; j++ {
				p := fmt.Sprintf("spec.rules[%d].backendRefs[%d]", i, j)
				svc, ok := o.services[str(r, p+".name")]
				if !ok {
					t.Errorf("httproute %s: backend %q is not a Service of the build", str(r, "metadata.name"), str(r, p+".name"))
					continue
				}
				if !slices.ContainsFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool { return int(sp.Port) == num(r, p+".port") }) {
					t.Errorf("httproute: service %s has no port %d", svc.Name, num(r, p+".port"))
				}
			}
		}
	}
	sps := o.crds["gateway.envoyproxy.io/v1alpha1/SecurityPolicy"]
	if len(sps) != 1 {
		t.Fatalf("want one SecurityPolicy, got %d", len(sps))
	}
	sp := sps[0]
	if str(sp, "spec.targetRefs[0].kind") != "HTTPRoute" || routes[str(sp, "spec.targetRefs[0].name")] == nil {
		t.Errorf("securitypolicy targets %s %q, which is not an HTTPRoute of the build", str(sp, "spec.targetRefs[0].kind"), str(sp, "spec.targetRefs[0].name"))
	}
	if dig(sp, "spec.extAuth.grpc.backendRefs[0]") == nil {
		t.Fatal("spec.extAuth.grpc.backendRefs is empty")
	}
	for i := 0; dig(sp, fmt.Sprintf("spec.extAuth.grpc.backendRefs[%d]", i)) != nil; i++ {
		p := fmt.Sprintf("spec.extAuth.grpc.backendRefs[%d]", i)
		svc, ok := o.services[str(sp, p+".name")]
		if !ok {
			t.Errorf("extAuth backend %q is not a Service of the build", str(sp, p+".name"))
			continue
		}
		checkServicePort(t, o, svc, num(sp, p+".port"), "grpc")
	}
	if v, ok := dig(sp, "spec.extAuth.failOpen").(bool); ok && v {
		t.Error("extAuth.failOpen lets every request through when extauthz is down")
	}
}

// TestStrictDecodeRejects proves the decoder used above fails on what the API server would
// refuse or silently drop.
func TestStrictDecodeRejects(t *testing.T) {
	const deployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  selector:
    matchLabels: {app: a}
  template:
    metadata:
      labels: {app: a}
    spec:
      containers:
        - name: a
          image: example/a:1
`
	if _, err := decodeObject([]byte(deployment)); err != nil {
		t.Fatalf("the valid snippet fails: %v", err)
	}
	for name, tc := range map[string]struct{ doc, want string }{
		"unknown spec field": {
			doc:  strings.Replace(deployment, "spec:\n  selector:", "spec:\n  replicass: 2\n  selector:", 1),
			want: `unknown field "replicass"`,
		},
		"unknown container field": {
			doc:  strings.Replace(deployment, "image: example/a:1", "image: example/a:1\n          imagePullPolicyy: Always", 1),
			want: `unknown field "imagePullPolicyy"`,
		},
		"field in the wrong case": {
			doc:  strings.Replace(deployment, "spec:\n  selector:", "spec:\n  Replicas: 2\n  selector:", 1),
			want: `unknown field "spec.Replicas"`,
		},
		"probe on a misspelt key": {
			doc:  strings.Replace(deployment, "image: example/a:1", "image: example/a:1\n          readinessProbe: {httpGet: {path: /readyz, prot: 9003}}", 1),
			want: `unknown field "prot"`,
		},
		"kind not allowed": {
			doc:  strings.Replace(deployment, "kind: Deployment", "kind: DaemonSet", 1),
			want: "is not allowed here",
		},
		"wrong type": {
			doc:  strings.Replace(deployment, "spec:\n  selector:", "spec:\n  replicas: two\n  selector:", 1),
			want: "cannot unmarshal",
		},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := decodeObject([]byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("decodeObject = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if _, err := decodeGeneric([]byte("apiVersion: v1\nkind: Foo\nspec: {}\n")); err == nil {
		t.Error("decodeGeneric accepted a resource without metadata.name")
	}
}
