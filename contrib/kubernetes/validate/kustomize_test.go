package validate

import (
	"os"
	"os/exec"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// TestKubectlKustomize renders the kustomization with kubectl's built-in
// kustomize (Debian's kubernetes-client has it; .ci/run installs it), and checks
// that what kubectl apply -k would send decodes as strictly as the files
// and is the same objects. kubectl kustomize works offline; kubectl apply
// --dry-run=client does not (it asks the API server for its types), so it
// is not run.
func TestKubectlKustomize(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		// This module cannot import the root module's internal/testnet,
		// whose SkipOrFail this mirrors: CI has every tool the tests use.
		msg := "kubectl not installed (apt-get install kubernetes-client); the strict decoding of the files above still runs"
		if os.Getenv("SOCKFACTORY_REQUIRE_ROOT") == "1" {
			t.Fatal(msg + "; SOCKFACTORY_REQUIRE_ROOT=1 forbids skipping")
		}
		t.Skip(msg)
	}
	out, err := exec.Command(kubectl, "kustomize", manifestDir).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("kubectl kustomize %s: %v\n%s", manifestDir, err, stderr)
	}
	docs, err := documents(out)
	if err != nil {
		t.Fatal(err)
	}
	files := loadObjects(t)
	if len(docs) != len(files) {
		t.Errorf("kubectl kustomize renders %d objects, the manifests hold %d", len(docs), len(files))
	}
	for i, doc := range docs {
		obj, err := decodeStrict(doc)
		if err != nil {
			t.Fatalf("kubectl kustomize: object %d: %v", i+1, err)
		}
		var spec *corev1.PodSpec
		switch o := obj.(type) {
		case *appsv1.DaemonSet:
			spec = &o.Spec.Template.Spec
		case *corev1.Pod:
			spec = &o.Spec
		}
		if spec != nil {
			checkImage(t, "kubectl kustomize", spec)
		}
	}
}
