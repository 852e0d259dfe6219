// Package deploy holds no Go code, only the Kubernetes manifests, the
// Grafana dashboard and the Dockerfile; this test keeps them honest against
// the code. It is pure: no cluster, no servers, no network.
//
// What it catches: a manifest that is not a Kubernetes object, a config
// field or environment variable renamed in pkg/config but not in the
// ConfigMaps and workloads (the embedded replicator YAML is loaded with
// pkg/config.Parse exactly as the pod would), a secret file the pod expects
// but does not mount, a dashboard or alert querying a metric the code does
// not export, and a chaos drill whose Workflow copy drifted from its
// experiment file.
package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/pkg/config"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// Paths relative to this package's directory (deploy/), where go test runs.
const (
	deployDir    = "."
	chaosDir     = "../chaos"
	overlaysDir  = "overlays"
	dashboardRel = "grafana/tandem-dashboard.json"
	// configMapName is the ConfigMap every workload reads its
	// configuration from.
	configMapName = "tandem-replicator"
)

// metricSources are the files that define Tandem's metric names.
var metricSources = []string{"../pkg/metrics/metrics.go", "../internal/replicator/*.go"}

// chaosKinds are the Chaos Mesh kinds chaos/ may hold.
var chaosKinds = []string{"PodChaos", "NetworkChaos", "TimeChaos", "StressChaos", "Workflow", "Schedule"}

// doc is one YAML document of a manifest file.
type doc struct {
	file  string
	index int // 0-based position in the file
	obj   map[string]any
}

func (d doc) String() string { return fmt.Sprintf("%s (document %d)", d.file, d.index+1) }

func (d doc) kind() string { s, _ := d.obj["kind"].(string); return s }

func (d doc) name() string { return str(d.obj, "metadata", "name") }

// yamlFiles lists the YAML files under dir.
func yamlFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ext := filepath.Ext(p); !e.IsDir() && (ext == ".yaml" || ext == ".yml") {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("list YAML files under %s: %v", dir, err)
	}
	if len(files) == 0 {
		t.Fatalf("no YAML files under %s", dir)
	}
	return files
}

// decodeFile decodes every document of a multi-document YAML file. An empty
// document (a stray "---") is an error: kubectl skips it silently, which
// hides a manifest that was meant to be there.
func decodeFile(t *testing.T, file string) []doc {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("read %s: %v", file, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []doc
	for i := 0; ; i++ {
		var obj map[string]any
		err := dec.Decode(&obj)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", file, i+1, err)
		}
		if obj == nil {
			t.Fatalf("%s: document %d is empty; allowed: one Kubernetes object per document", file, i+1)
		}
		docs = append(docs, doc{file: file, index: i, obj: obj})
	}
	if len(docs) == 0 {
		t.Fatalf("%s holds no YAML document", file)
	}
	return docs
}

func decodeDir(t *testing.T, dir string) []doc {
	t.Helper()
	var docs []doc
	for _, f := range yamlFiles(t, dir) {
		docs = append(docs, decodeFile(t, f)...)
	}
	return docs
}

// str follows keys through nested maps and returns the string at the end,
// or "".
func str(v any, keys ...string) string {
	s, _ := get(v, keys...).(string)
	return s
}

// get follows keys through nested maps; nil when a key is missing.
func get(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func list(v any) []any { l, _ := v.([]any); return l }

func TestManifestsAreKubernetesObjects(t *testing.T) {
	for _, dir := range []string{deployDir, chaosDir} {
		for _, d := range decodeDir(t, dir) {
			for _, field := range [][]string{{"apiVersion"}, {"kind"}, {"metadata", "name"}} {
				if str(d.obj, field...) == "" {
					t.Errorf("%s: %s is missing or not a string; every manifest needs apiVersion, kind and metadata.name",
						d, strings.Join(field, "."))
				}
			}
		}
	}
}

// TestKustomizationsReferenceEveryManifest checks that each kustomization's
// resources exist and that no manifest beside it is left out of it (a file
// added to base/ but not listed would silently never be deployed).
func TestKustomizationsReferenceEveryManifest(t *testing.T) {
	kustomizations := 0
	for _, f := range yamlFiles(t, deployDir) {
		if filepath.Base(f) != "kustomization.yaml" {
			continue
		}
		kustomizations++
		dir := filepath.Dir(f)
		listed := map[string]bool{}
		for _, r := range list(decodeFile(t, f)[0].obj["resources"]) {
			rel, _ := r.(string)
			p := filepath.Join(dir, rel)
			if _, err := os.Stat(p); err != nil {
				t.Errorf("%s: resource %q: %v", f, rel, err)
			}
			listed[filepath.Clean(p)] = true
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			p := filepath.Join(dir, e.Name())
			if !e.IsDir() && filepath.Ext(p) == ".yaml" && e.Name() != "kustomization.yaml" && !listed[p] {
				t.Errorf("%s is not listed in %s's resources", p, f)
			}
		}
	}
	if kustomizations < 3 {
		t.Errorf("found %d kustomization.yaml files; want base and the overlays region-a and region-b", kustomizations)
	}
}

// overlay is one site's overlay: its namespace and ConfigMap.
type overlay struct {
	dir       string
	namespace string
	configMap doc
}

func overlays(t *testing.T) []overlay {
	t.Helper()
	dirs, err := os.ReadDir(overlaysDir)
	if err != nil {
		t.Fatal(err)
	}
	var out []overlay
	for _, e := range dirs {
		if !e.IsDir() {
			continue
		}
		o := overlay{dir: filepath.Join(overlaysDir, e.Name())}
		for _, d := range decodeDir(t, o.dir) {
			switch {
			case d.kind() == "Kustomization":
				o.namespace, _ = d.obj["namespace"].(string)
			case d.kind() == "ConfigMap" && d.name() == configMapName:
				o.configMap = d
			}
		}
		if o.namespace == "" || o.configMap.obj == nil {
			t.Fatalf("overlay %s: want a kustomization.yaml with a namespace and a ConfigMap %q", o.dir, configMapName)
		}
		out = append(out, o)
	}
	if len(out) < 2 {
		t.Fatalf("found %d overlays under %s; want one per site (region-a, region-b)", len(out), overlaysDir)
	}
	return out
}

// workload is a pod template that runs the replicator binary with a
// configuration from the ConfigMap.
type workload struct {
	doc
	pod       map[string]any // the pod spec
	container map[string]any
	args      []string
	configKey string // the ConfigMap key --config points at
}

func workloads(t *testing.T) []workload {
	t.Helper()
	var out []workload
	for _, d := range decodeDir(t, deployDir) {
		if d.kind() != "StatefulSet" && d.kind() != "Job" {
			continue
		}
		w := workload{doc: d}
		w.pod, _ = get(d.obj, "spec", "template", "spec").(map[string]any)
		containers := list(get(w.pod, "containers"))
		if len(containers) != 1 {
			t.Fatalf("%s: want exactly one container, got %d", d, len(containers))
		}
		w.container, _ = containers[0].(map[string]any)
		for _, a := range list(w.container["args"]) {
			s, _ := a.(string)
			w.args = append(w.args, s)
		}
		i := slices.Index(w.args, "--config")
		if i < 0 || i+1 >= len(w.args) {
			t.Fatalf("%s: args %q have no --config FILE", d, w.args)
		}
		w.configKey = w.mountedKey(t, w.args[i+1], "configMap", configMapName)
		out = append(out, w)
	}
	if len(out) == 0 {
		t.Fatal("no StatefulSet or Job under deploy/")
	}
	return out
}

// mountedKey returns the key of the volume source (kind "configMap" or
// "secret", named name) that the container sees at file, failing when file
// is not mounted from such a volume.
func (w workload) mountedKey(t *testing.T, file, kind, name string) string {
	t.Helper()
	dir, base := path.Dir(file), path.Base(file)
	for _, vm := range list(w.container["volumeMounts"]) {
		if str(vm, "mountPath") != dir {
			continue
		}
		for _, v := range list(w.pod["volumes"]) {
			if str(v, "name") != str(vm, "name") {
				continue
			}
			src, _ := get(v, kind).(map[string]any)
			nameKey := "name"
			if kind == "secret" {
				nameKey = "secretName"
			}
			if src == nil || str(src, nameKey) != name {
				t.Fatalf("%s: %s is mounted from volume %q, not from %s %q", w.doc, file, str(v, "name"), kind, name)
			}
			items := list(src["items"])
			if len(items) == 0 {
				return base
			}
			for _, it := range items {
				if str(it, "path") == base {
					return str(it, "key")
				}
			}
			t.Fatalf("%s: %s %q mounted at %s has no item with path %q", w.doc, kind, name, dir, base)
		}
	}
	t.Fatalf("%s: nothing is mounted at %s, so %s does not exist in the pod", w.doc, dir, file)
	return ""
}

// knownEnv are the environment variables pkg/config reads.
var knownEnv = []string{
	config.EnvDatabaseHost, config.EnvDatabasePort, config.EnvDatabasePassword, config.EnvDatabasePasswordFile,
	config.EnvKafkaBrokers, config.EnvAdminToken, config.EnvAdminTokenFile, config.EnvStateDir,
	config.EnvRedisPassword, config.EnvRedisPasswordFile, config.EnvLogLevel,
}

// fakeSecret is what the test writes for the secret behind name: long
// enough and printable, so that it passes validation like a real one.
func fakeSecret(name string) string {
	return "fake-" + strings.ToLower(strings.ReplaceAll(name, "_", "-")) + "-0123456789abcdef"
}

// env returns the environment the workload's container gets, with every
// *_FILE path checked to be mounted from a Secret and replaced by a
// temporary file holding a fake secret.
func (w workload) env(t *testing.T) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range list(w.container["env"]) {
		name := str(e, "name")
		if get(e, "valueFrom") != nil {
			continue // e.g. GOMEMLIMIT from the resource limits
		}
		value := str(e, "value")
		if strings.HasPrefix(name, "TANDEM_") && !slices.Contains(knownEnv, name) {
			t.Errorf("%s: environment variable %s is not one pkg/config reads; allowed: %s", w.doc, name, strings.Join(knownEnv, ", "))
		}
		if strings.HasSuffix(name, "_FILE") {
			var secretName string
			for _, v := range list(w.pod["volumes"]) {
				for _, vm := range list(w.container["volumeMounts"]) {
					if str(vm, "name") == str(v, "name") && str(vm, "mountPath") == path.Dir(value) {
						secretName = str(v, "secret", "secretName")
					}
				}
			}
			if secretName == "" {
				t.Fatalf("%s: %s=%s is not in a mounted Secret", w.doc, name, value)
			}
			w.mountedKey(t, value, "secret", secretName)
			f := filepath.Join(t.TempDir(), path.Base(value))
			if err := os.WriteFile(f, []byte(fakeSecret(name)+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			value = f
		}
		env[name] = value
	}
	return env
}

func lookup(env map[string]string) func(string) string {
	return func(k string) string { return env[k] }
}

// loadAll loads, for every overlay, the configuration key each workload
// uses with that workload's environment, exactly as the pod would.
func loadAll(t *testing.T) map[string]map[string]*config.Config {
	t.Helper()
	cfgs := map[string]map[string]*config.Config{} // overlay dir → key → config
	for _, o := range overlays(t) {
		cfgs[o.dir] = map[string]*config.Config{}
		for _, w := range workloads(t) {
			data, ok := get(o.configMap.obj, "data", w.configKey).(string)
			if !ok {
				t.Errorf("%s: ConfigMap %s has no key %q that %s reads", o.configMap, configMapName, w.configKey, w.doc)
				continue
			}
			cfg, err := config.Parse([]byte(data), lookup(w.env(t)))
			if err != nil {
				t.Errorf("%s key %s as %s %s loads it: %v", o.configMap, w.configKey, w.kind(), w.name(), err)
				continue
			}
			cfgs[o.dir][w.configKey] = cfg
		}
	}
	return cfgs
}

func TestConfigMapsLoad(t *testing.T) {
	cfgs := loadAll(t)
	sts := statefulSet(t)
	stsEnv := sts.env(t)
	for _, o := range overlays(t) {
		cfg := cfgs[o.dir][sts.configKey]
		if cfg == nil {
			continue // reported by loadAll
		}
		// The pod's admin server must be reachable by the kubelet and by
		// Prometheus, on the port the manifests name.
		if cfg.Admin.Listen != "0.0.0.0:9180" {
			t.Errorf("%s: admin.listen = %q; want 0.0.0.0:9180, the containerPort and probe port", o.configMap, cfg.Admin.Listen)
		}
		if cfg.Admin.Token.Reveal() != fakeSecret(config.EnvAdminTokenFile) {
			t.Errorf("%s: the admin token does not come from %s", o.configMap, config.EnvAdminTokenFile)
		}
		if cfg.Database.Password.Reveal() != fakeSecret(config.EnvDatabasePasswordFile) {
			t.Errorf("%s: the database password does not come from %s", o.configMap, config.EnvDatabasePasswordFile)
		}
		if cfg.Kafka.ReplicationFactor != 3 || len(cfg.Kafka.Brokers) < 3 || cfg.Kafka.Acks != config.AcksAll {
			t.Errorf("%s: kafka replication_factor %d, %d brokers, acks %s; want 3, at least 3, all (a real cluster)",
				o.configMap, cfg.Kafka.ReplicationFactor, len(cfg.Kafka.Brokers), cfg.Kafka.Acks)
		}
		if !slices.ContainsFunc(list(sts.container["volumeMounts"]), func(vm any) bool {
			return str(vm, "name") == "state" && str(vm, "mountPath") == cfg.StateDir
		}) {
			t.Errorf("%s: state_dir %s is not the StatefulSet's state volume mount", o.configMap, cfg.StateDir)
		}

		// Off loopback, validation must refuse to start without the
		// token: the pod must never serve an open admin endpoint.
		noToken := maps.Clone(stsEnv)
		delete(noToken, config.EnvAdminTokenFile)
		data := str(o.configMap.obj, "data", sts.configKey)
		if _, err := config.Parse([]byte(data), lookup(noToken)); err == nil || !strings.Contains(err.Error(), "admin.") {
			t.Errorf("%s without %s: err = %v; want the admin section refused without a token", o.configMap, config.EnvAdminTokenFile, err)
		}
	}
}

// TestPrepareMatchesReplicator: schema prepare must install triggers for
// the same site id, database, meta schema and tables the replicator runs
// with; only the account differs.
func TestPrepareMatchesReplicator(t *testing.T) {
	cfgs := loadAll(t)
	for dir, byKey := range cfgs {
		run, prep := byKey["replicator.yaml"], byKey["prepare.yaml"]
		if run == nil || prep == nil {
			t.Errorf("%s: want both replicator.yaml and prepare.yaml loaded", dir)
			continue
		}
		same := func(what string, a, b any) {
			if !reflect.DeepEqual(a, b) {
				t.Errorf("%s: %s differs between replicator.yaml (%v) and prepare.yaml (%v)", dir, what, a, b)
			}
		}
		same("site", run.Site, prep.Site)
		same("database address", run.Database.Addr(), prep.Database.Addr())
		same("database.flavor", run.Database.Flavor, prep.Database.Flavor)
		same("database.params", run.Database.Params, prep.Database.Params)
		same("schema", run.Schema, prep.Schema)
		same("reader.include", run.Reader.Include, prep.Reader.Include)
		same("reader.exclude", run.Reader.Exclude, prep.Reader.Exclude)
		if run.Database.User == prep.Database.User {
			t.Errorf("%s: replicator.yaml and prepare.yaml both use account %q; prepare needs its own (docs/privileges.md)", dir, run.Database.User)
		}
	}
}

// TestSitesFormAMesh: every overlay is a distinct site, and each lists
// every other one as a peer with the same id and name.
func TestSitesFormAMesh(t *testing.T) {
	cfgs := loadAll(t)
	sites := map[config.Peer]string{}
	serverIDs := map[uint32]string{}
	for dir, byKey := range cfgs {
		c := byKey["replicator.yaml"]
		if c == nil {
			t.Fatalf("%s: replicator.yaml did not load", dir)
		}
		s := config.Peer{ID: c.Site.ID, Name: c.Site.Name}
		if other, dup := sites[s]; dup {
			t.Errorf("%s and %s are the same site %v", dir, other, s)
		}
		sites[s] = dir
		if other, dup := serverIDs[c.Reader.ServerID]; dup {
			t.Errorf("%s and %s announce the same reader.server_id %d; the source would disconnect one", dir, other, c.Reader.ServerID)
		}
		serverIDs[c.Reader.ServerID] = dir
	}
	for dir, byKey := range cfgs {
		c := byKey["replicator.yaml"]
		var want []config.Peer
		for s := range sites {
			if s.ID != c.Site.ID {
				want = append(want, s)
			}
		}
		got := slices.Clone(c.Peers)
		byID := func(a, b config.Peer) int { return int(a.ID) - int(b.ID) }
		slices.SortFunc(got, byID)
		slices.SortFunc(want, byID)
		if !slices.Equal(got, want) {
			t.Errorf("%s: peers %v; want every other site %v", dir, got, want)
		}
	}
}

func statefulSet(t *testing.T) workload {
	t.Helper()
	for _, w := range workloads(t) {
		if w.kind() == "StatefulSet" {
			return w
		}
	}
	t.Fatal("no StatefulSet under deploy/")
	return workload{}
}

// TestStatefulSet pins the properties docs/operations.md promises.
func TestStatefulSet(t *testing.T) {
	w := statefulSet(t)
	// Two replicas would double-publish: site-level HA (DESIGN.md §5) is
	// not implemented.
	if r, _ := get(w.obj, "spec", "replicas").(int); r != 1 {
		t.Errorf("%s: replicas = %v; want 1 until the Redis lease and fencing of DESIGN.md §5 exist", w.doc, get(w.obj, "spec", "replicas"))
	}
	if !slices.Equal(w.args[:1], []string{"run"}) {
		t.Errorf("%s: args %q; want run --config FILE", w.doc, w.args)
	}
	if b, _ := get(w.pod, "automountServiceAccountToken").(bool); b || get(w.pod, "automountServiceAccountToken") == nil {
		t.Errorf("%s: automountServiceAccountToken must be false", w.doc)
	}
	sc := w.container["securityContext"]
	if get(sc, "runAsNonRoot") != true || get(sc, "readOnlyRootFilesystem") != true || get(sc, "allowPrivilegeEscalation") != false {
		t.Errorf("%s: container securityContext %v; want runAsNonRoot, readOnlyRootFilesystem, no privilege escalation", w.doc, sc)
	}
	if drop := list(get(sc, "capabilities", "drop")); !slices.Contains(drop, any("ALL")) {
		t.Errorf("%s: capabilities.drop = %v; want ALL", w.doc, drop)
	}
	for probe, want := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/healthz"} {
		if got := str(w.container, probe, "httpGet", "path"); got != want || str(w.container, probe, "httpGet", "port") != "admin" {
			t.Errorf("%s: %s is %q on port %v; want %s on the admin port", w.doc, probe, got, get(w.container, probe, "httpGet", "port"), want)
		}
	}
	if !slices.ContainsFunc(list(w.container["ports"]), func(p any) bool {
		return str(p, "name") == "admin" && get(p, "containerPort") == 9180
	}) {
		t.Errorf("%s: want containerPort 9180 named admin", w.doc)
	}
}

// metricName matches a Tandem metric name; the word boundary keeps
// "tandem._tandem_parked" (a table) from matching.
var metricName = regexp.MustCompile(`\btandem_[a-z_]+`)

// definedMetrics returns the source text that defines metric names.
func definedMetrics(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, pattern := range metricSources {
		files, err := filepath.Glob(pattern)
		if err != nil || len(files) == 0 {
			t.Fatalf("metric sources %s: %v (no files)", pattern, err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			b.Write(data)
		}
	}
	return b.String()
}

// checkMetricNames reports every tandem_* name in text that the code does
// not define. A histogram's _bucket, _sum and _count series count as the
// histogram.
func checkMetricNames(t *testing.T, where, text, source string) int {
	t.Helper()
	names := metricName.FindAllString(text, -1)
	slices.Sort(names)
	names = slices.Compact(names)
	for _, n := range names {
		if strings.Contains(source, `"`+n+`"`) {
			continue
		}
		found := false
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(n, suffix); ok && strings.Contains(source, `"`+base+`"`) {
				found = true
			}
		}
		if !found {
			t.Errorf("%s uses metric %s, which neither pkg/metrics/metrics.go nor internal/replicator defines", where, n)
		}
	}
	return len(names)
}

func TestDashboard(t *testing.T) {
	data, err := os.ReadFile(dashboardRel)
	if err != nil {
		t.Fatal(err)
	}
	type variable struct {
		Name  string `json:"name"`
		Type  string `json:"type"`
		Query any    `json:"query"`
	}
	var dash struct {
		SchemaVersion int `json:"schemaVersion"`
		Templating    struct {
			List []variable `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s is not valid JSON: %v", dashboardRel, err)
	}
	if dash.SchemaVersion < 36 {
		t.Errorf("%s: schemaVersion %d; want ≥ 36", dashboardRel, dash.SchemaVersion)
	}
	if !slices.ContainsFunc(dash.Templating.List, func(v variable) bool {
		return v.Type == "datasource" && v.Query == "prometheus"
	}) {
		t.Errorf("%s: want a datasource variable of type prometheus", dashboardRel)
	}
	for _, p := range dash.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("%s: panel %q has no query", dashboardRel, p.Title)
		}
		for _, tg := range p.Targets {
			if !metricName.MatchString(tg.Expr) {
				t.Errorf("%s: panel %q queries no Tandem metric: %s", dashboardRel, p.Title, tg.Expr)
			}
		}
	}
	if n := checkMetricNames(t, dashboardRel, string(data), definedMetrics(t)); n < 10 {
		t.Errorf("%s uses %d Tandem metrics; the dashboard is meant to cover lag, throughput, conflicts, errors and clocks", dashboardRel, n)
	}
}

// headingAnchors returns the anchors GitHub derives from the Markdown
// headings of file: lower case, punctuation dropped, spaces to hyphens.
func headingAnchors(t *testing.T, file string) map[string]bool {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for line := range strings.Lines(string(data)) {
		title, ok := strings.CutPrefix(strings.TrimLeft(line, "#"), " ")
		if !ok || !strings.HasPrefix(line, "#") {
			continue
		}
		anchors[strings.Map(func(r rune) rune {
			switch {
			case r == ' ':
				return '-'
			case r == '-' || r == '_' || 'a' <= r && r <= 'z' || '0' <= r && r <= '9':
				return r
			}
			return -1
		}, strings.ToLower(strings.TrimSpace(title)))] = true
	}
	return anchors
}

// TestAlertRules: every alert queries metrics the code defines and links a
// runbook section that exists in docs/operations.md.
func TestAlertRules(t *testing.T) {
	const runbooks = "docs/operations.md"
	source := definedMetrics(t)
	anchors := headingAnchors(t, filepath.Join("..", runbooks))
	rules := 0
	for _, d := range decodeDir(t, deployDir) {
		if d.kind() != "PrometheusRule" {
			continue
		}
		for _, g := range list(get(d.obj, "spec", "groups")) {
			for _, r := range list(get(g, "rules")) {
				rules++
				name, expr := str(r, "alert"), str(r, "expr")
				if name == "" || expr == "" {
					t.Errorf("%s: a rule without alert name or expr: %v", d, r)
					continue
				}
				checkMetricNames(t, d.String()+" alert "+name, expr, source)
				file, anchor, _ := strings.Cut(str(r, "annotations", "runbook"), "#")
				if file != runbooks || !anchors[anchor] {
					t.Errorf("%s: alert %s: runbook %q is not a section of %s", d, name, str(r, "annotations", "runbook"), runbooks)
				}
			}
		}
	}
	if rules == 0 {
		t.Error("no PrometheusRule with rules under deploy/")
	}
}

// embedField is the Workflow template field that embeds a chaos kind:
// PodChaos → podChaos.
func embedField(kind string) string { return strings.ToLower(kind[:1]) + kind[1:] }

func TestChaosExperiments(t *testing.T) {
	docs := decodeDir(t, chaosDir)
	var workflows []doc
	experiments := map[string]doc{}
	for _, d := range docs {
		if !slices.Contains(chaosKinds, d.kind()) {
			t.Errorf("%s: kind %q; allowed in chaos/: %s", d, d.kind(), strings.Join(chaosKinds, ", "))
		}
		if !strings.HasPrefix(str(d.obj, "apiVersion"), "chaos-mesh.org/") {
			t.Errorf("%s: apiVersion %q; want chaos-mesh.org/v1alpha1", d, str(d.obj, "apiVersion"))
		}
		switch d.kind() {
		case "Workflow":
			workflows = append(workflows, d)
		case "Schedule":
		default:
			if _, dup := experiments[d.name()]; dup {
				t.Errorf("%s: experiment name %q used twice", d, d.name())
			}
			experiments[d.name()] = d
		}
	}
	if len(workflows) == 0 {
		t.Fatal("no Workflow in chaos/: the drill runs the experiments in sequence")
	}
	for _, wf := range workflows {
		templates := map[string]map[string]any{}
		for _, tpl := range list(get(wf.obj, "spec", "templates")) {
			m, _ := tpl.(map[string]any)
			templates[str(m, "name")] = m
		}
		// Every child and the entry name a template.
		if _, ok := templates[str(wf.obj, "spec", "entry")]; !ok {
			t.Errorf("%s: entry %q is not a template", wf, str(wf.obj, "spec", "entry"))
		}
		for name, tpl := range templates {
			typ := str(tpl, "templateType")
			if !slices.Contains([]string{"Serial", "Parallel", "Suspend"}, typ) && !slices.Contains(chaosKinds, typ) {
				t.Errorf("%s: template %s has templateType %q", wf, name, typ)
			}
			if str(tpl, "deadline") == "" && typ != "Serial" {
				t.Errorf("%s: template %s has no deadline; a fault without one never ends", wf, name)
			}
			for _, c := range list(tpl["children"]) {
				if child, _ := c.(string); templates[child] == nil {
					t.Errorf("%s: template %s has child %v, which is not a template", wf, name, c)
				}
			}
		}
		// Every experiment file runs in the drill, as an exact copy.
		for name, e := range experiments {
			tpl, ok := templates[name]
			if !ok {
				t.Errorf("%s: experiment %s (%s) is not a template of the drill", wf, name, e)
				continue
			}
			if str(tpl, "templateType") != e.kind() {
				t.Errorf("%s: template %s is a %s, the experiment a %s", wf, name, str(tpl, "templateType"), e.kind())
			}
			spec, _ := e.obj["spec"].(map[string]any)
			spec = maps.Clone(spec)
			if d, ok := spec["duration"]; ok {
				if tpl["deadline"] != d {
					t.Errorf("%s: template %s deadline %v; want the experiment's duration %v", wf, name, tpl["deadline"], d)
				}
				delete(spec, "duration")
			}
			if !reflect.DeepEqual(tpl[embedField(e.kind())], spec) {
				t.Errorf("%s: template %s's %s differs from %s's spec; keep the copy identical", wf, name, embedField(e.kind()), e)
			}
		}
	}
}

// TestChaosTargetsTheReplicator: selectors that name a site's namespace
// must select the pods the StatefulSet actually labels, or the experiment
// silently hits nothing.
func TestChaosTargetsTheReplicator(t *testing.T) {
	var namespaces []string
	for _, o := range overlays(t) {
		namespaces = append(namespaces, o.namespace)
	}
	podLabels, _ := get(statefulSet(t).obj, "spec", "template", "metadata", "labels").(map[string]any)
	checked := 0
	var walk func(where string, v any)
	walk = func(where string, v any) {
		switch v := v.(type) {
		case map[string]any:
			if sel, ok := v["selector"].(map[string]any); ok && sel["namespaces"] != nil {
				var tandem []string
				for _, ns := range list(sel["namespaces"]) {
					if s, _ := ns.(string); strings.HasPrefix(s, "tandem") {
						tandem = append(tandem, s)
					}
				}
				for _, ns := range tandem {
					if !slices.Contains(namespaces, ns) {
						t.Errorf("%s: selector namespace %s is no overlay's namespace (%v)", where, ns, namespaces)
					}
				}
				if len(tandem) == len(list(sel["namespaces"])) && len(tandem) > 0 {
					checked++
					labels, _ := sel["labelSelectors"].(map[string]any)
					if len(labels) == 0 {
						t.Errorf("%s: selector on %v has no labelSelectors", where, tandem)
					}
					for k, want := range labels {
						if podLabels[k] != want {
							t.Errorf("%s: selector label %s=%v does not match the replicator pods' %s=%v", where, k, want, k, podLabels[k])
						}
					}
				}
			}
			for _, c := range v {
				walk(where, c)
			}
		case []any:
			for _, c := range v {
				walk(where, c)
			}
		}
	}
	for _, d := range decodeDir(t, chaosDir) {
		walk(d.String(), d.obj)
	}
	if checked == 0 {
		t.Error("no chaos selector targets the replicator pods")
	}
}
