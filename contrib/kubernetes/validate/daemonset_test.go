package validate

import (
	"net/netip"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/sockfactory/sockfactory/internal/config"
	"github.com/sockfactory/sockfactory/internal/policy"
)

// Names the manifests must agree on.
const (
	imageName       = "sockfactory"
	daemonSetName   = "sockfactoryd"
	configMapName   = "sockfactoryd-config"
	configKey       = "sockfactoryd.toml"
	examplePodName  = "sockfactory-example"
	daemonContainer = "sockfactoryd"
	socketDir       = "/run/sockfactory"
)

// checkMounts checks that every volume a container mounts is a volume of
// the pod, and that the pod has no volume nobody mounts.
func checkMounts(t *testing.T, what string, spec *corev1.PodSpec) {
	t.Helper()
	vols := map[string]bool{}
	for _, v := range spec.Volumes {
		vols[v.Name] = false
	}
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		for _, m := range c.VolumeMounts {
			if _, ok := vols[m.Name]; !ok {
				t.Errorf("%s: container %s mounts volume %q, which the pod does not have", what, c.Name, m.Name)
			}
			vols[m.Name] = true
		}
	}
	for name, used := range vols {
		if !used {
			t.Errorf("%s: volume %q is mounted by no container", what, name)
		}
	}
}

// checkImage checks that every container runs the image the kustomization
// sets.
func checkImage(t *testing.T, what string, spec *corev1.PodSpec) {
	t.Helper()
	for _, c := range spec.Containers {
		if name, _, _ := strings.Cut(c.Image, ":"); name != imageName {
			t.Errorf("%s: container %s runs image %q, want %s[:TAG] (kustomization.yaml's images set it)", what, c.Name, c.Image, imageName)
		}
	}
}

// hostPathMount returns where container c mounts the pod's hostPath volume
// of the node's path, and whether that volume is read-only there.
func hostPathMount(t *testing.T, what string, spec *corev1.PodSpec, c *corev1.Container, node string) string {
	t.Helper()
	for _, v := range spec.Volumes {
		if v.HostPath == nil || v.HostPath.Path != node {
			continue
		}
		if v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathDirectory {
			t.Errorf("%s: hostPath %s has type %v, want Directory (made by the node's set-up, owned by the daemon's uid)", what, node, v.HostPath.Type)
		}
		for _, m := range c.VolumeMounts {
			if m.Name == v.Name {
				return m.MountPath
			}
		}
	}
	t.Fatalf("%s: container %s mounts no hostPath volume of %s", what, c.Name, node)
	return ""
}

func container(t *testing.T, what string, spec *corev1.PodSpec, name string) *corev1.Container {
	t.Helper()
	for i := range spec.Containers {
		if spec.Containers[i].Name == name {
			return &spec.Containers[i]
		}
	}
	t.Fatalf("%s: no container %q", what, name)
	return nil
}

func env(c *corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// runAs returns the uid, gid and supplementary groups container c runs
// with, the container's settings overriding the pod's; it fails the test
// unless both say the container runs as non-root with a non-zero uid.
func runAs(t *testing.T, what string, spec *corev1.PodSpec, c *corev1.Container) (uid, gid int64, groups []int64) {
	t.Helper()
	psc := spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	csc := c.SecurityContext
	if csc == nil {
		csc = &corev1.SecurityContext{}
	}
	nonRoot := csc.RunAsNonRoot
	if nonRoot == nil {
		nonRoot = psc.RunAsNonRoot
	}
	if nonRoot == nil || !*nonRoot {
		t.Errorf("%s: container %s: runAsNonRoot is not true", what, c.Name)
	}
	u, g := csc.RunAsUser, csc.RunAsGroup
	if u == nil {
		u = psc.RunAsUser
	}
	if g == nil {
		g = psc.RunAsGroup
	}
	if u == nil || *u == 0 || g == nil {
		t.Fatalf("%s: container %s: runAsUser %v, runAsGroup %v; want a non-zero uid and a gid (the configuration names them)", what, c.Name, u, g)
	}
	if csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem {
		t.Errorf("%s: container %s: readOnlyRootFilesystem is not true", what, c.Name)
	}
	if psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: seccompProfile is not RuntimeDefault", what)
	}
	return *u, *g, psc.SupplementalGroups
}

// daemonConfig returns the daemon's configuration as the DaemonSet gives
// it: the file its -config flag names, from the ConfigMap mounted there.
func daemonConfig(t *testing.T, objs []object, ds *appsv1.DaemonSet, c *corev1.Container) *config.Config {
	t.Helper()
	args := slices.Concat(c.Command[1:], c.Args)
	i := slices.Index(args, "-config")
	if i < 0 || i+1 == len(args) {
		t.Fatalf("daemonset: sockfactoryd's arguments %q name no -config FILE", args)
	}
	file := args[i+1]
	spec := &ds.Spec.Template.Spec
	var mount *corev1.VolumeMount
	for j := range c.VolumeMounts {
		if m := &c.VolumeMounts[j]; m.MountPath == path.Dir(file) {
			mount = m
		}
	}
	if mount == nil {
		t.Fatalf("daemonset: nothing is mounted at %s, the directory of -config %s", path.Dir(file), file)
	}
	if mount.SubPath != "" || mount.SubPathExpr != "" {
		t.Errorf("daemonset: the configuration is mounted with a subPath, which Kubernetes never updates: mount the ConfigMap as a directory")
	}
	if !mount.ReadOnly {
		t.Errorf("daemonset: the configuration's mount is not readOnly")
	}
	var cmName string
	for _, v := range spec.Volumes {
		if v.Name == mount.Name && v.ConfigMap != nil {
			cmName = v.ConfigMap.Name
			if len(v.ConfigMap.Items) > 0 {
				t.Errorf("daemonset: volume %s selects items of the ConfigMap; mount it whole", v.Name)
			}
		}
	}
	if cmName != configMapName {
		t.Fatalf("daemonset: %s is mounted from ConfigMap %q, want %q", mount.MountPath, cmName, configMapName)
	}
	cm := find[*corev1.ConfigMap](t, objs, configMapName)
	data, ok := cm.Data[path.Base(file)]
	if !ok {
		t.Fatalf("configmap %s has no key %s, the file -config names", configMapName, path.Base(file))
	}
	cfg, err := config.Parse("configmap.yaml:"+configMapName+":"+path.Base(file), []byte(data))
	if err != nil {
		t.Fatalf("the ConfigMap's configuration is refused by the daemon: %v", err)
	}
	return cfg
}

func TestDaemonSet(t *testing.T) {
	objs := loadObjects(t)
	ds := find[*appsv1.DaemonSet](t, objs, daemonSetName)
	spec := &ds.Spec.Template.Spec
	const what = "daemonset"

	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil {
		t.Fatalf("daemonset: selector: %v", err)
	}
	if sel.Empty() || !sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("daemonset: selector %q does not match the template's labels %v", sel, ds.Spec.Template.Labels)
	}
	if !spec.HostNetwork {
		t.Errorf("daemonset: hostNetwork is not true: the daemon would connect from and bind in the pod's own namespace")
	}
	if spec.ServiceAccountName == "" {
		t.Errorf("daemonset: no serviceAccountName")
	} else {
		sa := find[*corev1.ServiceAccount](t, objs, spec.ServiceAccountName)
		if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
			t.Errorf("serviceaccount %s mounts a token; the daemon never talks to the API", sa.Name)
		}
	}
	checkMounts(t, what, spec)
	checkImage(t, what, spec)

	c := container(t, what, spec, daemonContainer)
	if len(c.Command) == 0 || path.Base(c.Command[0]) != "sockfactoryd" {
		t.Errorf("daemonset: command %q does not run sockfactoryd", c.Command)
	}
	uid, gid, groups := runAs(t, what, spec, c)

	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatalf("daemonset: container %s has no capabilities in its securityContext", c.Name)
	}
	if got := sc.Capabilities.Drop; !slices.Equal(got, []corev1.Capability{"ALL"}) {
		t.Errorf("daemonset: capabilities drop %q, want [ALL]", got)
	}
	if got := sc.Capabilities.Add; !slices.Equal(got, []corev1.Capability{"NET_BIND_SERVICE"}) {
		t.Errorf("daemonset: capabilities add %q, want exactly [NET_BIND_SERVICE]", got)
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Errorf("daemonset: container %s is privileged", c.Name)
	}

	for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		switch {
		case p == nil:
			t.Errorf("daemonset: no %s probe", name)
		case p.Exec != nil:
			cmd := p.Exec.Command
			if len(cmd) < 2 || path.Base(cmd[0]) != "sockfactory" || cmd[len(cmd)-1] != "status" {
				t.Errorf("daemonset: %s probe runs %q, want the CLI's status (sockfactory [--socket PATH] status)", name, cmd)
			}
		case p.HTTPGet != nil:
			if p.HTTPGet.Path != "/healthz" {
				t.Errorf("daemonset: %s probe gets %q, want the metrics listener's /healthz", name, p.HTTPGet.Path)
			}
		default:
			t.Errorf("daemonset: %s probe is neither exec nor httpGet", name)
		}
		if p != nil && p.TimeoutSeconds < 2 {
			t.Errorf("daemonset: %s probe timeoutSeconds %d, want at least 2", name, p.TimeoutSeconds)
		}
	}
	if r := c.Resources; r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() || r.Limits.Memory().IsZero() {
		t.Errorf("daemonset: want cpu and memory requests and a memory limit, got %v", r)
	}

	cfg := daemonConfig(t, objs, ds, c)
	checkUnprivilegedConfig(t, "the ConfigMap's configuration", cfg)
	dir := hostPathMount(t, what, spec, c, socketDir)
	if path.Dir(cfg.Socket) != dir {
		t.Errorf("the daemon's socket %s is not in the hostPath mount %s", cfg.Socket, dir)
	}
	if s := env(c, "SOCKFACTORY_SOCKET"); s != cfg.Socket {
		t.Errorf("daemonset: SOCKFACTORY_SOCKET is %q, want the configuration's socket %s (the probes' CLI uses it)", s, cfg.Socket)
	}
	if cfg.SocketGID >= 0 && int64(cfg.SocketGID) != gid && !slices.Contains(groups, int64(cfg.SocketGID)) {
		t.Errorf("socket_group %d is not a group of the daemon (gid %d, groups %v): it could not give the socket that group", cfg.SocketGID, gid, groups)
	}
	checkMetrics(t, ds, c, cfg.MetricsListen)
	if !cfg.Policy.Admin(&policy.Caller{UID: uint32(uid), GID: uint32(gid)}) {
		t.Errorf("the daemon's own uid %d is not an admin: `kubectl exec ... sockfactory reload` (README.md) would be denied", uid)
	}
}

// TestExamplePod checks that the example client can reach the daemon's
// socket and that the daemon grants it the connection it asks for.
func TestExamplePod(t *testing.T) {
	objs := loadObjects(t)
	ds := find[*appsv1.DaemonSet](t, objs, daemonSetName)
	cfg := daemonConfig(t, objs, ds, container(t, "daemonset", &ds.Spec.Template.Spec, daemonContainer))
	pod := find[*corev1.Pod](t, objs, examplePodName)
	spec := &pod.Spec
	const what = "example pod"
	checkMounts(t, what, spec)
	checkImage(t, what, spec)
	if spec.HostNetwork {
		t.Errorf("example pod: hostNetwork is true; the example is a pod that cannot reach the node's loopback itself")
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("example pod: %d containers, want 1", len(spec.Containers))
	}
	c := &spec.Containers[0]
	uid, gid, groups := runAs(t, what, spec, c)
	if sc := c.SecurityContext; sc == nil || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
		t.Errorf("example pod: want capabilities drop [ALL] and none added")
	}
	if sc := c.SecurityContext; sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("example pod: allowPrivilegeEscalation is not false")
	}
	dir := hostPathMount(t, what, spec, c, socketDir)
	socket := path.Join(dir, path.Base(cfg.Socket))
	if s := env(c, "SOCKFACTORY_SOCKET"); s != socket {
		t.Errorf("example pod: SOCKFACTORY_SOCKET is %q, want %s", s, socket)
	}
	if cfg.SocketGID >= 0 && cfg.SocketMode&0o002 == 0 && int64(cfg.SocketGID) != gid && !slices.Contains(groups, int64(cfg.SocketGID)) {
		t.Errorf("example pod: not in the socket's group %d (mode %o): it could not open the socket; add it to supplementalGroups", cfg.SocketGID, cfg.SocketMode)
	}
	cmd := slices.Concat(c.Command, c.Args)
	if len(cmd) < 3 || path.Base(cmd[0]) != "sockfactory" || cmd[1] != "connect" {
		t.Fatalf("example pod: runs %q, want sockfactory connect ... HOST:PORT", cmd)
	}
	dest, err := netip.ParseAddrPort(cmd[len(cmd)-1])
	if err != nil {
		t.Fatalf("example pod: destination %q: %v", cmd[len(cmd)-1], err)
	}
	caller := &policy.Caller{UID: uint32(uid), GID: uint32(gid)}
	for _, g := range groups {
		caller.Groups = append(caller.Groups, uint32(g))
	}
	if d := cfg.Policy.ConnectIP(caller, dest.Addr(), dest.Port()); !d.Allowed {
		t.Errorf("example pod: the ConfigMap's configuration denies uid %d a connection to %s", uid, dest)
	}
}

// checkMetrics checks that the scrape annotations, the container's metrics
// port and the configuration's [metrics] listen agree, and that the
// listener is reachable from another pod (not the node's loopback).
func checkMetrics(t *testing.T, ds *appsv1.DaemonSet, c *corev1.Container, listen string) {
	t.Helper()
	ann := ds.Spec.Template.Annotations
	if ann["prometheus.io/scrape"] != "true" {
		t.Errorf("daemonset: template annotation prometheus.io/scrape is %q, want \"true\"", ann["prometheus.io/scrape"])
		return
	}
	if listen == "" {
		t.Fatalf("the pods are annotated for scraping but the configuration has no [metrics] listen")
	}
	ap, err := netip.ParseAddrPort(listen)
	if err != nil {
		t.Fatalf("[metrics] listen %q: want a numeric ip:port a scrape can reach: %v", listen, err)
	}
	if ap.Addr().IsLoopback() {
		t.Errorf("[metrics] listen %s is the node's loopback (hostNetwork): Prometheus in another pod cannot reach it", listen)
	}
	if got := ann["prometheus.io/port"]; got != strconv.Itoa(int(ap.Port())) {
		t.Errorf("daemonset: prometheus.io/port %q, want the listener's port %d", got, ap.Port())
	}
	if p := ann["prometheus.io/path"]; p != "" && p != "/metrics" {
		t.Errorf("daemonset: prometheus.io/path %q, want /metrics", p)
	}
	found := false
	for _, p := range c.Ports {
		if p.Name == "metrics" {
			found = true
			if p.ContainerPort != int32(ap.Port()) || (p.Protocol != "" && p.Protocol != corev1.ProtocolTCP) {
				t.Errorf("daemonset: port metrics is %d/%s, want %d/TCP", p.ContainerPort, p.Protocol, ap.Port())
			}
		}
	}
	if !found {
		t.Errorf("daemonset: container %s has no port named metrics", c.Name)
	}
}
