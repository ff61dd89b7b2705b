package validate

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// manifestDir is contrib/kubernetes, seen from this package.
const manifestDir = ".."

// kustomizationFile is the one YAML file there that is not a Kubernetes
// object.
const kustomizationFile = "kustomization.yaml"

// newObject returns an empty object of the API type for apiVersion and
// kind: only the kinds the manifests are expected to hold.
func newObject(apiVersion, kind string) (runtime.Object, bool) {
	switch apiVersion + "/" + kind {
	case "v1/Namespace":
		return &corev1.Namespace{}, true
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}, true
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}, true
	case "v1/Pod":
		return &corev1.Pod{}, true
	case "apps/v1/DaemonSet":
		return &appsv1.DaemonSet{}, true
	}
	return nil, false
}

// object is one document of a manifest file, decoded.
type object struct {
	file string
	obj  runtime.Object
}

func (o object) meta() metav1.Object {
	return o.obj.(metav1.Object)
}

// manifestFiles lists contrib/kubernetes/*.yaml but the kustomization.
func manifestFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(manifestDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		if filepath.Base(f) != kustomizationFile {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no manifests in %s", manifestDir)
	}
	return out
}

// documents splits a YAML stream at its "---" lines.
func documents(data []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(stripComments(doc))) > 0 {
			docs = append(docs, doc)
		}
	}
}

// stripComments drops whole-line comments, to tell an empty document from
// one with content.
func stripComments(doc []byte) []byte {
	var out []byte
	for line := range bytes.Lines(doc) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out = append(out, line...)
		}
	}
	return out
}

// decodeStrict decodes one document into its API type, refusing unknown
// and duplicate fields.
func decodeStrict(doc []byte) (runtime.Object, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, err
	}
	obj, ok := newObject(tm.APIVersion, tm.Kind)
	if !ok {
		return nil, errors.New("unexpected apiVersion " + tm.APIVersion + " kind " + tm.Kind)
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return nil, err
	}
	return obj, nil
}

// loadObjects decodes every manifest strictly; any failure fails the test.
func loadObjects(t *testing.T) []object {
	t.Helper()
	var objs []object
	for _, f := range manifestFiles(t) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs, err := documents(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if len(docs) == 0 {
			t.Fatalf("%s: no objects", f)
		}
		for i, doc := range docs {
			obj, err := decodeStrict(doc)
			if err != nil {
				t.Fatalf("%s: document %d: %v", f, i+1, err)
			}
			objs = append(objs, object{filepath.Base(f), obj})
		}
	}
	return objs
}

// find returns the one object of type T named name.
func find[T runtime.Object](t *testing.T, objs []object, name string) T {
	t.Helper()
	var found []T
	for _, o := range objs {
		if v, ok := o.obj.(T); ok && o.meta().GetName() == name {
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		var zero T
		t.Fatalf("want one %T named %q in the manifests, found %d", zero, name, len(found))
	}
	return found[0]
}

// TestManifestsDecodeStrictly checks that every manifest is made of known
// kinds that decode into the API types without unknown fields, each named
// once, all in the sockfactory namespace.
func TestManifestsDecodeStrictly(t *testing.T) {
	objs := loadObjects(t)
	seen := map[string]string{}
	for _, o := range objs {
		m := o.meta()
		kind := o.obj.GetObjectKind().GroupVersionKind().Kind
		key := kind + "/" + m.GetName()
		if prev, dup := seen[key]; dup {
			t.Errorf("%s: %s is also in %s", o.file, key, prev)
		}
		seen[key] = o.file
		if m.GetName() == "" {
			t.Errorf("%s: a %s without a name", o.file, kind)
		}
		want := "sockfactory"
		if kind == "Namespace" {
			want = ""
		}
		if m.GetNamespace() != want {
			t.Errorf("%s: %s in namespace %q, want %q", o.file, key, m.GetNamespace(), want)
		}
		if m.GetLabels()["app.kubernetes.io/part-of"] != "sockfactory" {
			t.Errorf("%s: %s has no label app.kubernetes.io/part-of=sockfactory", o.file, key)
		}
	}
	for _, kind := range []string{"Namespace", "ServiceAccount", "ConfigMap", "DaemonSet", "Pod"} {
		n := 0
		for k := range seen {
			if strings.HasPrefix(k, kind+"/") {
				n++
			}
		}
		if n == 0 {
			t.Errorf("no %s in the manifests", kind)
		}
	}
}

// TestStrictDecodingRefusesUnknownFields checks the check: a misspelt
// field must fail, or a typo in a manifest would pass unnoticed.
func TestStrictDecodingRefusesUnknownFields(t *testing.T) {
	cases := []struct{ name, doc string }{
		{"unknown field", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndatta: {}\n"},
		{"unknown nested field", "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: x\nspec:\n  template:\n    spec:\n      hostNetwrk: true\n"},
		{"duplicate field", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  name: y\n"},
		{"unknown kind", "apiVersion: v1\nkind: Secret\nmetadata:\n  name: x\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := decodeStrict([]byte(tc.doc)); err == nil {
				t.Errorf("decodeStrict(%q) = nil error, want one", tc.doc)
			}
		})
	}
}

// kustomization is the part of kustomize's Kustomization the file uses;
// decoding it strictly catches a field this test does not know about.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images"`
}

// TestKustomizationListsEveryManifest checks that kubectl apply -k applies
// every manifest, and nothing else.
func TestKustomizationListsEveryManifest(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(manifestDir, kustomizationFile))
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(data, &k); err != nil {
		t.Fatalf("%s: %v", kustomizationFile, err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("%s: apiVersion %q kind %q, want kustomize.config.k8s.io/v1beta1 Kustomization", kustomizationFile, k.APIVersion, k.Kind)
	}
	var want []string
	for _, f := range manifestFiles(t) {
		want = append(want, filepath.Base(f))
	}
	got := slices.Clone(k.Resources)
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s: resources %q, want every manifest: %q", kustomizationFile, got, want)
	}
	for _, img := range k.Images {
		if img.Name != imageName {
			t.Errorf("%s: image %q, want %q (the name the manifests use)", kustomizationFile, img.Name, imageName)
		}
	}
}
